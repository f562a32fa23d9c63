"""GIN (Xu et al., ICLR 2019) graph classification on a synthetic Erdős–Rényi vs
Barabási–Albert set, packed into padded sub-batches on a 4-bucket ladder (one compilation per
bucket).

    python -m netlab.main --config configs/graph/gin_synthetic.py:cpu --workdir runs/gin_synthetic
    # train.batch_size = sub-batches per step (split over data-parallel devices);
    # data.graphs_per_batch graphs in each; raise data.max_nodes / max_edges if a batch does not
    # fit. model.conv picks the layer from registries.LAYERS (gin, gcn, gat, genconv, ...).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "graph.graph_classification"
    c.model = ml_collections.ConfigDict(
        dict(
            name="graph_classifier", hidden=32, num_layers=3, conv="gin", readout="sum", dropout=0.0
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            num_graphs=600,
            graphs_per_batch=16,
            max_nodes=640,
            max_edges=2560,
            num_buckets=4,
            test_fraction=0.2,
        )
    )
    c.train.steps = 300
    c.train.batch_size = 2
    c.train.log_every = 50
    c.train.eval_every = 150
    c.checkpoint.every = 150
    c.optimizer.name = "adam"
    c.optimizer.lr = 3e-3
    c.optimizer.schedule = "constant"
    if preset in ("gpu", "pod"):
        c.train.batch_size = 8
    return c
