"""TGN (Rossi et al., 2020, netlab/graph/tgn.py) and PRES on top of it (Su et al., ICLR 2024,
netlab/graph/pres.py) predicting future links of an event stream (netlab/graph/temporal_task.py):
TGN's protocol, chronological 70/15/15 split, one random negative per event, per-batch AP.

    python -m netlab.main --config configs/graph/tgn.py:cpu --workdir runs/tgn
    python -m netlab.main --config configs/graph/tgn.py:cpu,model=pres --workdir runs/pres
    # PRES's setting: temporal batches 4x larger (32 events), same number of events per step
    python -m netlab.main --config configs/graph/tgn.py:cpu,model=pres --workdir runs/pres_b32 \
        --config.data.batch_size=32 --config.data.chunk=2
    # t-batch training with a t-batching loss reduction (Loghmani & Fazli 2023)
    python -m netlab.main --config configs/graph/tgn.py:cpu --workdir runs/tgn_tbatch \
        --config.data.batching=tbatch --config.loss.reduction=item_sum

Argument: model=tgn|pres, data=synthetic|wikipedia|reddit, and a preset. ``data=synthetic`` is
the planted "triadic follow-up" stream of configs/graph/nat.py (same sizes and schedule, so the
numbers sit next to NAT's in bench/results/graph_nat.md). TGN: the paper's defaults (graph
attention embedding over the 10 most recent neighbours, 2 heads, ``last`` aggregator, GRU memory);
PRES: γ = 0.9 (learnable, initialised there) and coherence weight β = 0.1 (the authors' code);
``model.correction=False`` is TGN plus the coherence term. The cpu preset uses memory 32 and lr
1e-3; gpu/pod use TGN's memory 172, batch 200 on the JODIE sets and lr 1e-4.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
MODELS = ("tgn", "pres")
VARIANTS = ("model=tgn", "model=pres", "model=pres,data=wikipedia")


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, model="tgn", data="synthetic")
    if a.model not in MODELS:
        raise ValueError(f"config argument model={a.model!r}; choose one of {', '.join(MODELS)}")
    c = common.base_config()
    c.task = "graph.temporal_link"
    c.model = ml_collections.ConfigDict(
        dict(
            name=a.model,
            memory_dim=32,
            time_dim=8,
            aggregator="last",
            embedding="attention",
            num_neighbors=10,
            heads=2,
        )
    )
    if a.model == "pres":
        c.model.update(dict(gamma=0.9, correction=True, beta=0.1))
    c.data = ml_collections.ConfigDict(
        dict(name=a.data, data_dir="", batch_size=8, chunk=8, batching="events", seed=0)
    )
    if a.data == "synthetic":
        c.data.update(dict(num_nodes=64, num_events=2048, feat_dim=4, motif_prob=0.5, delay=10.0))
    c.loss = ml_collections.ConfigDict(dict(reduction="events"))
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
        c.model.memory_dim = 172
        if a.data != "synthetic":
            c.data.batch_size = 200
        c.optimizer.lr = 1e-4
        c.train.steps = 5000
        c.train.eval_every = 1000
        c.checkpoint.every = 5000
    return c
