"""ωGCN, ωGAT, TIDE, LFGCN and CatGCN (issue 16's long-range and aggregation group): node
classification on Planetoid (public split) or geom-gcn (split ``data.split``, 0-9).

    python -m netlab.main --config configs/graph/long_range.py:model=omega,data=cora \
        --workdir runs/omega_cora
    python -m netlab.main --config configs/graph/long_range.py:model=tide,data=texas \
        --workdir runs/tide_texas --config.data.split=3

Argument: model=omega|omega_gat|tide|lfgcn|catgcn,
data=cora|citeseer|pubmed|cornell|texas|wisconsin|film (lfgcn not on pubmed: its dense n×n
Lévy-flight walk), and a preset (cpu | gpu | pod: edge arrays split over all devices). Host
preprocessing, once when the task is built: TIDE's k = 64 Laplacian eigenpairs, LFGCN's fractional
walk (dense eigendecomposition) and edge betweenness.
Hyperparameters are netlab's choice (GCN's schedule: Adam 0.01, L2 5e-4 on all parameters, 200
epochs; 64 hidden, dropout 0.5), not the papers' tuned values:
- omega (Eliasof et al., ICML 2023): 2 ωGCN layers, ω initialised at 1 (GCN);
- omega_gat (same paper): 2 ωGAT layers (heads averaged), ω initialised at 1 (GAT);
- tide (Behmanesh et al., ICML 2023): 1 block, k = 64 eigenpairs, t = α = β = 0 initially; on
  the largest connected component with a random split (data.split_protocol=lcc_random, the
  paper's protocol: on a disconnected graph the smallest eigenpairs are component indicators);
- lfgcn (Chen, Gel & Avrachenkov, ICDM 2020): γ = 0.5, P-DropEdge rate 0.1, τ = 1;
- catgcn (Chen et al., TKDE 2023): 32 fields per node (its largest features: bag-of-words words),
  16-dim embeddings, p = 1, β = 0.9, K = 2 hops.
"""

from configs import common

PRESETS = ("cpu", "gpu", "pod")
DATASETS = ("cora", "citeseer", "pubmed", "cornell", "texas", "wisconsin", "film")
MODELS = {
    "omega": dict(hidden=64, num_layers=2, omega_init=1.0, dropout=0.5),
    "omega_gat": dict(hidden=64, num_layers=2, heads=1, omega_init=1.0, dropout=0.5),
    "tide": dict(hidden=64, num_blocks=1, k=64, dropout=0.5, input_dropout=0.5),
    "lfgcn": dict(
        hidden=64, num_layers=2, gamma=0.5, drop_rate=0.1, drop_temperature=1.0, dropout=0.5
    ),
    "catgcn": dict(
        hidden=64, embed_dim=16, max_fields=32, diag_probe=1.0, balance=0.9, hops=2, dropout=0.5
    ),
}
VARIANTS = tuple(
    f"model={m},data={d}" for m in MODELS for d in DATASETS if (m, d) != ("lfgcn", "pubmed")
)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="omega", data="cora")
    if a.model not in MODELS:
        raise ValueError(f"model={a.model!r}; choose one of {', '.join(MODELS)}")
    if a.data not in DATASETS:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(DATASETS)}")
    if (a.model, a.data) == ("lfgcn", "pubmed"):
        raise ValueError("model=lfgcn,data=pubmed: the dense walk needs 19717²; choose cora")
    c = common.planetoid_node_config(a.preset, a.data, dict(name=a.model, **MODELS[a.model]))
    if a.data not in ("cora", "citeseer", "pubmed"):
        c.data.row_normalize = False
    if a.model == "tide":  # the paper's protocol: largest component, GRAND-style random split
        c.data.split_protocol = "lcc_random"
    return c
