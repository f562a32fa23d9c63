"""Beyond-1-WL graph classifiers on the WL-indistinguishable sets: Graph ViT / Graph MLP-Mixer
(He et al. 2023), k,l-GNN (Zhou et al. 2023), SPEN (Mitton & Murray-Smith 2023) and Natural Graph
Networks (de Haan et al. 2020) on CSL (10 classes, 150 graphs of 41 nodes; 1-WL bound 10 %) or
100 EXP-style pairs (1-WL bound 50 %).

    python -m netlab.main --config configs/graph/expressivity.py:model=graph_vit,data=csl \
        --workdir runs/graph_vit_csl

Argument: model=graph_vit|graph_mixer|klgnn|spen|ngn, data=csl|exp, and a preset (cpu | gpu |
pod). Host-side structure (patches, marked copies, ego-nets, neighbourhood classes) is built once
per graph when a batch is packed; a batch that overflows a model's copy budget names the knob to
raise (model.copy_factor, model.num_tuples). Hyperparameters are netlab's choice (hidden 64, Adam
1e-3, 400 steps of 32 graphs), not the papers' (Graph MLP-Mixer trains 200 epochs with a plateau
schedule and reports the best test accuracy over epochs).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
MODELS = ("graph_vit", "graph_mixer", "klgnn", "spen", "ngn")
VARIANTS = tuple(f"model={m},data={d}" for m in MODELS for d in ("csl", "exp"))
MODEL_KW = {
    "graph_vit": dict(num_patches=8, overlap=1, gnn_layers=2, mixer_layers=2, rw_steps=8, heads=4),
    "graph_mixer": dict(num_patches=8, overlap=1, gnn_layers=2, mixer_layers=2, rw_steps=8),
    "klgnn": dict(k=1, num_layers=6, num_tuples=41),  # 3 layers reach 3 hops: ~0.6-0.8 of CSL pairs
    "spen": dict(hops=2, num_layers=3, copy_factor=16),
    "ngn": dict(num_layers=3, num_kernels=32),
}
# (graphs, max nodes per graph, max directed edges per graph)
DATA = {"csl": (150, 41, 164), "exp": (200, 16, 48)}


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="graph_vit", data="csl")
    if a.model not in MODELS or a.data not in DATA:
        raise ValueError(f"choose model from {', '.join(MODELS)} and data from csl, exp")
    c = common.base_config()
    c.task = "graph.graph_classification"
    c.model = ml_collections.ConfigDict(
        dict(name=a.model, hidden=64, dropout=0.0, **MODEL_KW[a.model])
    )
    num_graphs, nodes, edges = DATA[a.data]
    per_batch = 16
    c.data = ml_collections.ConfigDict(
        dict(
            name=a.data,
            num_graphs=num_graphs,
            graphs_per_batch=per_batch,
            max_nodes=per_batch * nodes + 8,
            max_edges=per_batch * edges,
            num_buckets=1,
            test_fraction=0.2,
        )
    )
    c.train.steps = 400
    c.train.batch_size = 2
    c.train.log_every = 50
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    if a.preset in ("gpu", "pod"):
        c.train.batch_size = 8
    return c
