"""LightGCN (He et al., SIGIR 2020) on Gowalla (LightGCN split): paper Recall@20 0.1830, NDCG@20 0.1554.

    python -m netlab.main --config configs/graph/lightgcn_gowalla.py:gpu --workdir runs/lightgcn_gowalla
    # the paper trains 1000 epochs of 810,128 interactions (~400k steps at batch 2048): a GPU job.
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
    c.data = ml_collections.ConfigDict(dict(name="gowalla", data_dir="", k=20, eval_users_per_chunk=1024))
    c.train.batch_size = 2048
    c.train.steps = 400                # cpu: a smoke run only
    c.train.log_every = 50
    c.train.eval_every = 0
    c.checkpoint.every = 400
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    if preset in ("gpu", "pod"):
        c.train.steps = 400000         # ~1000 epochs
        c.train.log_every = 1000
        c.train.eval_every = 20000
        c.checkpoint.every = 20000
    return c
