"""LightGCN (He et al., SIGIR 2020) on the LastFM split of LightGCN-PyTorch: BPR, Recall@20 / NDCG@20.

    python -m netlab.main --config configs/graph/lightgcn_lastfm.py:cpu --workdir runs/lightgcn_lastfm
    # needs NETLAB_DATA_DIR (e.g. ../shared/data) or --config.data.data_dir=...
"""
import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "netlab.graph.recsys_task:Recommendation"
    c.model = ml_collections.ConfigDict(dict(
        name="lightgcn", dim=64, num_layers=3, init_std=0.1, reg=1e-4,
        lam=0.0, gamma=0.0, neg_weight=1.0, num_negatives=1, num_neighbors=10))
    c.data = ml_collections.ConfigDict(dict(name="lastfm", data_dir="", k=20, eval_users_per_chunk=1024))
    c.train.batch_size = 2048          # LightGCN-PyTorch bpr_batch
    c.train.steps = 3000               # ~145 epochs of 42,135 interactions
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.checkpoint.every = 1000
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    if preset in ("gpu", "pod"):
        c.train.steps = 20000          # ~1000 epochs
        c.train.eval_every = 2000
        c.checkpoint.every = 2000
    return c
