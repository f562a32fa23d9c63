"""PathNN (Michel et al., ICML 2023) node classification on Planetoid (public split).

    python -m netlab.main --config configs/graph/pathnn.py:variant=ap,data=cora \
        --workdir runs/pathnn_cora

Argument: variant=sp|sp+|ap (the path set), cutoff (paths of up to cutoff-1 edges, default 3),
data=cora|citeseer, and a preset (cpu | gpu | pod: edge arrays split over all devices). Paths are
enumerated once on the host when the task is built; raise model.max_paths if a length bucket
overflows a fixed budget. Hyperparameters are netlab's choice (GCN's Planetoid schedule, 64
hidden, dropout 0.5 on inputs and before the head, L2 5e-4), not the paper's (which evaluates
graph classification).
"""

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = tuple(f"variant={v},data={d}" for v in ("sp", "sp+", "ap") for d in ("cora", "citeseer"))


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, variant="ap", cutoff=3, data="cora")
    model = dict(
        name="pathnn",
        hidden=64,
        cutoff=a.cutoff,
        variant=a.variant,
        max_paths=0,
        dropout=0.5,
        input_dropout=0.5,
    )
    return common.planetoid_node_config(a.preset, a.data, model)
