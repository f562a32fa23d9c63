"""GKEDM (graph knowledge enhancement with attention, netlab/graph/gkedm.py): a GNN whose every
layer is wrapped by the gated multi-head attention plug-in, node classification on a Planetoid
public split with GCN's schedule (Adam 0.01, L2 5e-4, 200 epochs; 64 hidden, dropout 0.5).

    python -m netlab.main --config configs/graph/gkedm.py:conv=gcn,data=cora --workdir runs/gkedm

Argument: conv=gcn|gat|gin|sgc (the wrapped layer; any ``model.conv`` name works through
--config.model.conv), data=cora|citeseer|pubmed, and a preset (cpu | gpu | pod). The attention
distillation loss (``gkedm.attention_distillation_loss``) is a library function; this config
trains the enhanced model alone (no teacher).
"""

from configs import common

PRESETS = ("cpu", "gpu", "pod")
CONVS = ("gcn", "gat", "gin", "sgc")
DATASETS = ("cora", "citeseer", "pubmed")
VARIANTS = tuple(f"conv={m},data={d}" for m in CONVS for d in DATASETS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, conv="gcn", data="cora")
    if a.conv not in CONVS:
        raise ValueError(f"conv={a.conv!r}; choose one of {', '.join(CONVS)}")
    if a.data not in DATASETS:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(DATASETS)}")
    model = dict(name="gkedm", hidden=64, num_layers=2, conv=a.conv, heads=2, dropout=0.5)
    return common.planetoid_node_config(a.preset, a.data, model)
