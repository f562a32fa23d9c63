"""DIGRAC (He et al., LoG 2022) on a directed SBM: N = 1000, K = 5, p = 0.05, cyclic meta-graph,
eta = 0.1.

    python -m netlab.main --config configs/graph/digrac_dsbm.py:cpu --workdir runs/digrac_dsbm
    # unsupervised flow-imbalance training; evaluation prints the ARI against the planted
    # clusters. model.name=digrac (registries.MODELS); model.tau is DIMPA's self-loop weight.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "graph.digraph_clustering"
    c.model = ml_collections.ConfigDict(
        dict(name="digrac", hidden=32, hops=2, dropout=0.5, tau=0.5)
    )
    c.data = ml_collections.ConfigDict(
        dict(
            n=1000,
            k=5,
            p=0.05,
            eta=0.1,
            style="cyclic",
            ambient=False,
            size_ratio=1.0,
            graph_seed=0,
        )
    )
    # beta: the number of cluster pairs with a planted flow
    c.loss = ml_collections.ConfigDict(dict(beta=5, normalisation="vol_sum"))
    c.train.steps = 1000
    c.train.batch_size = 0
    c.train.log_every = 50
    c.train.eval_every = 250
    c.checkpoint.every = 1000
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 5e-4
    c.optimizer.wd_mask = "matrices"
    c.mesh.data = -1  # full graph replicated on every device (identical gradients)
    if preset in ("gpu", "pod"):
        c.data.n = 5000
    return c
