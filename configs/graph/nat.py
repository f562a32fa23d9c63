"""NAT (Luo & Li, LoG 2022: N-cache neighbourhood dictionaries, netlab/graph/nat.py) predicting
future links of an event stream (netlab/graph/temporal_task.py): TGN's protocol, chronological
70/15/15 split, one random negative per event, per-batch AP of the val and test windows.

    python -m netlab.main --config configs/graph/nat.py:cpu --workdir runs/nat
    # the no-neighbourhood ablation (self representations only):
    python -m netlab.main --config configs/graph/nat.py:cpu --workdir runs/nat_self \
        --config.model.use_neighbourhood=False
    # JODIE Wikipedia (jodie/wikipedia.csv under $NETLAB_DATA_DIR, else downloaded):
    python -m netlab.main --config configs/graph/nat.py:gpu,data=wikipedia --workdir runs/nat_wiki

``data=synthetic`` is the planted "triadic follow-up" stream of netlab/graph/events.py (a node
that met u soon meets u's previous partner: the partner sits in the node's hop-2 cache). The
follow-up delay (up to 10 time units, about 17 events) outlasts a batch of 8 events (about 5
units): a follow-up in the batch of its cause is invisible to any model scored with pre-batch
state, so with the generator's default delay 0.5 and batch 32 almost every motif would be. The
gpu/pod sizes are the paper's (hop-1 32 slots, hop-2 16, alpha 0.9, batch 100 as its README, lr
1e-4); the cpu preset is smaller and uses lr 1e-3.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = ("data=synthetic", "data=wikipedia", "data=reddit")


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="synthetic")
    c = common.base_config()
    c.task = "graph.temporal_link"
    c.model = ml_collections.ConfigDict(
        dict(
            name="nat",
            self_dim=32,
            ngh_dim=8,
            time_dim=8,
            cache_sizes=(8, 4),
            replace_prob=0.9,
            pos_dim=8,
            heads=2,
            use_neighbourhood=True,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(name=a.data, data_dir="", batch_size=8, chunk=8, seed=0)
    )
    if a.data == "synthetic":
        c.data.update(dict(num_nodes=64, num_events=2048, feat_dim=4, motif_prob=0.5, delay=10.0))
    c.train.steps = 600
    c.train.batch_size = 0
    c.train.log_every = 50
    c.train.eval_every = 300
    c.checkpoint.every = 600
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "constant"
    c.mesh.data = -1  # one sequential stream, replicated on every device (nothing to split)
    if a.preset in ("gpu", "pod"):
        c.model.update(dict(self_dim=72, ngh_dim=4, cache_sizes=(32, 16), pos_dim=16))
        if a.data != "synthetic":
            c.data.batch_size = 100
        c.optimizer.lr = 1e-4
        c.train.steps = 5000
        c.train.eval_every = 1000
        c.checkpoint.every = 5000
    return c
