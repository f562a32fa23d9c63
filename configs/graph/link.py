"""Link prediction on Planetoid: NCN (Wang et al., ICLR 2024, without completion) or the Hadamard
MLP predictor on the same GCN (model=hadamard: NCN with common_neighbours=False).

    python -m netlab.main --config configs/graph/link.py:model=ncn,data=cora --workdir runs/ncn_cora

Argument: model=ncn|hadamard, data=cora|citeseer, arch=netlab|authors, and a preset (cpu | gpu |
pod: edge arrays split over all devices). arch=netlab: a 2-layer GCN 128 wide and the paper's
concatenation MLP; arch=authors: the authors' Cora settings (``netlab/graph/ncn.py``: puregcn, 1
propagation 256 wide, JK, input dropout 0.7, tail dropout 0.3, the branch predictor with LayerNorm,
tailact and xlin, predictor dropout 0.05, common-neighbour edge dropout 0.4; one Adam lr 0.0043,
the authors' GNN lr, since the trainer has one optimiser; their predictor lr is 0.0024).
The authors' protocol with target-link removal and two learning rates is
``bench/graph_wave2_reproduce.py --authors``. The trainer's task is ``graph.link_prediction``
(85/5/10 split, fresh negatives each step, val/test ROC-AUC). Hits@20/50/100 and MRR on a split
with non-edge negatives (``netlab.graph.link_eval``): ``python bench/graph_wave2.py``.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = tuple(
    f"model={m},data={d},arch={a}"
    for m in ("ncn", "hadamard")
    for d in ("cora", "citeseer")
    for a in ("netlab", "authors")
)
AUTHORS = dict(
    hidden=256,
    out=256,
    predictor_hidden=256,
    num_layers=1,
    encoder="puregcn",
    jk=True,
    input_dropout=0.7,
    tail_dropout=0.3,
    dropout=0.05,
    predictor="branch",
    predictor_dropout=0.05,
    predictor_ln=True,
    tailact=True,
    use_xlin=True,
    cn_edge_dropout=0.4,
)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="ncn", data="cora", arch="netlab")
    if a.model not in ("ncn", "hadamard"):
        raise ValueError(f"model={a.model!r}; choose one of ncn, hadamard")
    if a.arch not in ("netlab", "authors"):
        raise ValueError(f"arch={a.arch!r}; choose one of netlab, authors")
    c = common.base_config()
    c.task = "graph.link_prediction"
    c.model = ml_collections.ConfigDict(
        dict(
            name="ncn",
            hidden=128,
            out=128,
            num_layers=2,
            dropout=0.0,
            predictor_hidden=128,
            common_neighbours=a.model == "ncn",
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(name=a.data, data_dir="", val_fraction=0.05, test_fraction=0.1, edge_sharded=False)
    )
    c.train.steps = 300
    c.train.batch_size = 0
    c.train.log_every = 20
    c.train.eval_every = 100
    c.checkpoint.every = 300
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.005
    c.optimizer.schedule = "constant"
    if a.arch == "authors":
        c.model.update(AUTHORS)
        c.optimizer.lr = 0.0043
    c.mesh.data = -1
    c.data.edge_sharded = a.preset == "pod"
    return c
