"""LASER (Barbero et al., ICLR 2024): locality-aware sparse rewiring + GCN, node classification on
Planetoid (public split).

    python -m netlab.main --config configs/graph/laser.py:data=cora --workdir runs/laser_cora

Argument: data=cora|citeseer, rho (share of each r-hop orbit connected, default 0.5), max_hop
(R, default 3), and a preset (cpu | gpu | pod: edge arrays split over all devices). The rewiring
is computed once on the host when the task is built (dense (A + I)^8: Planetoid-sized graphs);
raise model.max_added_edges if a fixed snapshot budget overflows. Hyperparameters are netlab's
choice (GCN's Planetoid schedule, 64 hidden, 2 layers, dropout 0.5, L2 5e-4), not the paper's
(which evaluates LRGB / TUDataset graph tasks).
"""

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = tuple(f"data={d}" for d in ("cora", "citeseer"))


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="cora", rho=0.5, max_hop=3)
    model = dict(
        name="laser",
        hidden=64,
        num_layers=2,
        max_hop=a.max_hop,
        rho=a.rho,
        min_add=1,
        seed=0,
        max_added_edges=0,
        dropout=0.5,
        input_dropout=0.5,
    )
    return common.planetoid_node_config(a.preset, a.data, model)
