"""UltraGCN (Mao et al., CIKM 2021) on the LastFM split of LightGCN-PyTorch: Recall@20 / NDCG@20.

    python -m netlab.main --config configs/graph/ultragcn_lastfm.py:cpu --workdir runs/ultragcn_lastfm
"""
import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "netlab.graph.recsys_task:Recommendation"
    c.model = ml_collections.ConfigDict(dict(
        name="ultragcn", dim=64, num_layers=0, init_std=1e-4, reg=1e-4,
        lam=1.0,                       # weight of the beta-weighted constraint loss L_C
        gamma=2.5,                     # weight of the item-item constraint loss L_I
        neg_weight=50.0, num_negatives=50, num_neighbors=10))
    c.data = ml_collections.ConfigDict(dict(name="lastfm", data_dir="", k=20, eval_users_per_chunk=1024))
    c.train.batch_size = 1024
    c.train.steps = 3000
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    if preset in ("gpu", "pod"):
        c.train.steps = 20000
        c.train.eval_every = 2000
    return c
