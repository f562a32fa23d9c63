"""GCN, SGC, GAT, GATv2, APPNP, Co-GNN and DRew on Planetoid (Cora, CiteSeer; public split).

    python -m netlab.main --config configs/graph/planetoid.py:model=gcn,data=cora \
        --workdir runs/gcn_cora
    python -m netlab.main --config configs/graph/planetoid.py:model=gat,data=citeseer,gpu \
        --workdir runs/gat_citeseer
    # data: config.data.data_dir, else $NETLAB_DATA_DIR, else the cache/a download (docs/data.md).
    # Reproduction over 10 seeds with the papers' early stopping: python bench/graph_reproduce.py

Argument: model=gcn|sgc|gat|gatv2|appnp|cognn|drew, data=cora|citeseer, and a preset (cpu | gpu |
pod: pod splits the edge arrays over all devices, data.edge_sharded). Hyperparameters (the papers'):
- gcn (Kipf & Welling, ICLR 2017): 2 layers, 16 hidden, dropout 0.5, Adam 0.01, L2 5e-4 on the
  first layer only (Kipf's weight_decay * l2_loss), 200 epochs.
- sgc (Wu et al., ICML 2019): K = 2, Adam 0.2, 100 epochs, no dropout; weight decay tuned on the
  validation set (bench/graph_reproduce.py --tune-sgc): 3e-5 on Cora, 1e-4 on CiteSeer.
- gat (Velickovic et al., ICLR 2018): 8 heads x 8, dropout 0.6 (input + attention), ELU, Adam
  0.005, L2 5e-4 on all parameters; gatv2 (Brody et al., ICLR 2022): the same with GATv2 layers.
- appnp (Klicpera et al., ICLR 2019): MLP 64 hidden, dropout 0.5, K = 10, alpha = 0.1, Adam 0.01,
  L2 5e-3 on the first layer's weights.
- cognn (Finkelshtein et al., ICML 2024) and drew (Gutteridge et al., ICML 2023, nu = 1): netlab's
  choice, not the papers': GCN's schedule, 64 hidden, 2 (cognn) / 3 (drew) layers, dropout 0.5 on
  the inputs and after every layer, L2 5e-4 on all parameters.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
DATASETS = ("cora", "citeseer")
VARIANTS = tuple(
    f"model={m},data={d}"
    for m in ("gcn", "sgc", "gat", "gatv2", "appnp", "cognn", "drew")
    for d in DATASETS
)

_GAT = dict(
    model=dict(hidden=8, heads=8, out_heads=1, dropout=0.6),
    weight_decay=5e-4,
    scope="",
    steps=1000,
    log_every=100,
    eval_every=200,
    lr=0.005,
)
# Per model: model fields, L2 (weight_decay on parameters whose path starts with `scope`),
# epochs, logging, Adam learning rate. Per (model, dataset): overrides.
TABLE = {
    "gcn": dict(
        model=dict(hidden=16, num_layers=2, dropout=0.5),
        weight_decay=5e-4,
        scope="conv0",
        steps=200,
        log_every=20,
        eval_every=40,
        lr=0.01,
    ),
    "sgc": dict(
        model=dict(k=2), weight_decay=None, scope="", steps=100, log_every=10, eval_every=20, lr=0.2
    ),
    "gat": _GAT,
    "gatv2": _GAT,
    "appnp": dict(
        model=dict(hidden=64, dropout=0.5, k=10, alpha=0.1, edge_dropout=0.0),
        weight_decay=5e-3,
        scope="lin0",
        steps=500,
        log_every=50,
        eval_every=100,
        lr=0.01,
    ),
}
_NEW = dict(hidden=64, num_layers=2, dropout=0.5, input_dropout=0.5)
TABLE["cognn"] = dict(TABLE["gcn"], model=_NEW, scope="")
TABLE["drew"] = dict(TABLE["gcn"], model=dict(_NEW, num_layers=3), scope="")
OVERRIDES = {
    ("sgc", "cora"): dict(weight_decay=3e-5),
    ("sgc", "citeseer"): dict(weight_decay=1e-4),
}


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="gcn", data="cora")
    if a.model not in TABLE:
        raise ValueError(f"model={a.model!r}; choose one of {', '.join(TABLE)}")
    if a.data not in DATASETS:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(DATASETS)}")
    hp = dict(TABLE[a.model], **OVERRIDES.get((a.model, a.data), {}))
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(dict(name=a.model, **hp["model"]))
    c.data = ml_collections.ConfigDict(
        dict(
            name=a.data,
            data_dir="",
            split=0,
            row_normalize=True,
            edge_sharded=False,
            precompute=True,
        )
    )
    c.loss = ml_collections.ConfigDict(
        dict(weight_decay=hp["weight_decay"], weight_decay_scope=hp["scope"])
    )
    c.train.steps = hp["steps"]
    c.train.batch_size = 0  # full batch: the whole graph every step
    c.train.log_every = hp["log_every"]
    c.train.eval_every = hp["eval_every"]
    c.checkpoint.every = hp["steps"]
    c.optimizer.name = "adam"
    c.optimizer.lr = hp["lr"]
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0  # L2 is in the loss (loss.weight_decay), as in the papers
    c.mesh.data = -1  # every device; cpu/gpu: full graph replicated, pod: edges sharded
    c.data.edge_sharded = a.preset == "pod"
    return c
