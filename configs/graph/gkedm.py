"""GKEDM (graph knowledge enhancement with attention, netlab/graph/gkedm.py): a GNN whose every
layer is wrapped by the gated multi-head attention plug-in, node classification on a Planetoid
public split with GCN's schedule (Adam 0.01, L2 5e-4, 200 epochs; 64 hidden, dropout 0.5).

    python -m netlab.main --config configs/graph/gkedm.py:conv=gcn,data=cora --workdir runs/gkedm

Argument: conv=gcn|gat|gin|sgc (the wrapped layer; any ``model.conv`` name works through
--config.model.conv), data=cora|citeseer|pubmed, mode=plain|distill, and a preset (cpu | gpu |
pod). mode=plain trains the enhanced model alone. mode=distill
(task ``graph.gkedm_distillation``) first trains a 256-wide GKEDM teacher for 200
steps while the task is built, then trains a 16-wide GKEDM student (same layers and heads) with
CE + L2 + distill.kd_weight × the attention-distillation KL to the teacher's maps
(``gkedm.attention_distillation_loss``, mean over layers); distill.kd_weight=0 is the student
without KD:

    python -m netlab.main --config configs/graph/gkedm.py:mode=distill,data=cora \
        --config.distill.kd_weight=1.0 --workdir runs/gkedm_distill
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
CONVS = ("gcn", "gat", "gin", "sgc")
DATASETS = ("cora", "citeseer", "pubmed")
MODES = ("plain", "distill")
VARIANTS = tuple(f"conv={m},data={d}" for m in CONVS for d in DATASETS) + ("mode=distill",)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, conv="gcn", data="cora", mode="plain")
    if a.conv not in CONVS:
        raise ValueError(f"conv={a.conv!r}; choose one of {', '.join(CONVS)}")
    if a.data not in DATASETS:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(DATASETS)}")
    if a.mode not in MODES:
        raise ValueError(f"mode={a.mode!r}; choose one of {', '.join(MODES)}")
    hidden = 16 if a.mode == "distill" else 64
    model = dict(name="gkedm", hidden=hidden, num_layers=2, conv=a.conv, heads=2, dropout=0.5)
    c = common.planetoid_node_config(a.preset, a.data, model)
    if a.mode == "distill":
        c.task = "graph.gkedm_distillation"
        c.distill = ml_collections.ConfigDict(
            dict(teacher_hidden=256, teacher_steps=200, teacher_lr=0.01, kd_weight=1.0)
        )
    return c
