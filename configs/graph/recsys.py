"""Graph collaborative filtering: LightGCN (He et al., SIGIR 2020) and UltraGCN (Mao et al., CIKM
2021) on the LastFM and Gowalla splits of LightGCN-PyTorch; BPR / UltraGCN losses, Recall@20 and
NDCG@20 over all items.

    python -m netlab.main --config configs/graph/recsys.py:model=lightgcn,data=lastfm \
        --workdir runs/lightgcn_lastfm
    python -m netlab.main --config configs/graph/recsys.py:model=lightgcn,data=gowalla,gpu \
        --workdir runs/lightgcn_gowalla
    # data: --config.data.data_dir, else $NETLAB_DATA_DIR, else the cache/a download (docs/data.md)

Argument: model=lightgcn|ultragcn, data=lastfm|gowalla (settings below) and a preset.
- lightgcn, lastfm: batch 2048 (LightGCN-PyTorch bpr_batch), 3000 steps (~145 epochs of 42,135
  interactions); gpu/pod: 20000 steps (~1000 epochs).
- lightgcn, gowalla: paper Recall@20 0.1830, NDCG@20 0.1554; the paper trains 1000 epochs of
  810,128 interactions (~400k steps at batch 2048): a GPU job (gpu/pod); cpu is a smoke run.
- ultragcn, lastfm: lam 1.0 (beta-weighted constraint loss L_C), gamma 2.5 (item-item constraint
  L_I), 50 negatives of weight 50, 10 item neighbours, batch 1024, 3000 steps (gpu/pod: 20000).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = (
    "model=lightgcn,data=lastfm",
    "model=lightgcn,data=gowalla",
    "model=ultragcn,data=lastfm",
)

_LIGHTGCN = dict(
    name="lightgcn",
    dim=64,
    num_layers=3,
    init_std=0.1,
    reg=1e-4,
    lam=0.0,
    gamma=0.0,
    neg_weight=1.0,
    num_negatives=1,
    num_neighbors=10,
)
_ULTRAGCN = dict(
    name="ultragcn",
    dim=64,
    num_layers=0,
    init_std=1e-4,
    reg=1e-4,
    lam=1.0,
    gamma=2.5,
    neg_weight=50.0,
    num_negatives=50,
    num_neighbors=10,
)
# Per (model, dataset): model fields, batch, and train/log/eval/checkpoint steps on cpu and on
# gpu/pod (the gpu entry overrides the cpu one).
TABLE = {
    ("lightgcn", "lastfm"): dict(
        model=_LIGHTGCN,
        batch_size=2048,
        cpu=dict(steps=3000, log_every=100, eval_every=1000, ckpt=1000),
        gpu=dict(steps=20000, eval_every=2000, ckpt=2000),
    ),
    ("lightgcn", "gowalla"): dict(
        model=_LIGHTGCN,
        batch_size=2048,
        cpu=dict(steps=400, log_every=50, eval_every=0, ckpt=400),
        gpu=dict(steps=400000, log_every=1000, eval_every=20000, ckpt=20000),
    ),
    ("ultragcn", "lastfm"): dict(
        model=_ULTRAGCN,
        batch_size=1024,
        cpu=dict(steps=3000, log_every=100, eval_every=1000, ckpt=1000),
        gpu=dict(steps=20000, eval_every=2000),
    ),
}


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="lightgcn", data="lastfm")
    if (a.model, a.data) not in TABLE:
        choices = ", ".join(f"model={m},data={d}" for m, d in TABLE)
        raise ValueError(f"no setting for model={a.model},data={a.data}; choose one of {choices}")
    hp = TABLE[(a.model, a.data)]
    run = dict(hp["cpu"], **(hp["gpu"] if a.preset in ("gpu", "pod") else {}))
    c = common.base_config()
    c.task = "graph.recommendation"
    c.model = ml_collections.ConfigDict(dict(hp["model"]))
    c.data = ml_collections.ConfigDict(
        dict(name=a.data, data_dir="", k=20, eval_users_per_chunk=1024)
    )
    c.train.batch_size = hp["batch_size"]
    c.train.steps = run["steps"]
    c.train.log_every = run["log_every"]
    c.train.eval_every = run["eval_every"]
    c.checkpoint.every = run["ckpt"]
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    return c
