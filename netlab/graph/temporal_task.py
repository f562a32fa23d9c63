"""Future-link prediction on event streams for ``TASK = "temporal"`` models (TGN, PRES, NAT).

Config: ``task = "graph.temporal_link"``, ``model.name`` one of ``tgn``, ``pres``, ``nat``;
``data.name`` is ``synthetic`` (:func:`netlab.graph.events.synthetic_stream` with
``data.num_nodes``, ``num_events``, ``feat_dim``, ``motif_prob``, ``delay``, ``seed``) or
``wikipedia`` / ``reddit`` (the JODIE CSVs through the dataset registry, ``data.data_dir``);
``data.batch_size`` events per temporal batch and ``data.chunk`` temporal batches per optimiser
step.

Loss: BCE of each event's positive and negative logits. ``loss.reduction`` (default ``events``:
the mean over the step's events of the two terms' sum, TGN's) or one of t-batching's reductions
(:mod:`netlab.graph.tbatch`, Loghmani & Fazli 2023) over the step's batches: ``mean`` (JODIE's,
each batch's mean summed over batches), ``item_sum``, ``full_sum``. ``data.batching = "tbatch"``
trains on JODIE t-batches instead of consecutive batches (:func:`netlab.graph.tbatch.pack`: each
step one window of ``batch_size * chunk`` events, every node at most once per t-batch, pieces of
at most ``batch_size`` events, padded to the largest window's count); evaluation is unchanged.
A model whose step also returns a coherence term (PRES) adds ``model.beta`` times its mean over
the step's non-empty batches.

Protocol (TGN's, ``netlab.graph.events``): chronological 70 / 15 / 15 split; every event is scored
with the state from before its batch, against one random destination. Training walks the training
window in order, ``chunk`` batches per step, carrying the model's state (memory, caches) from step
to step in the trainer's ``model_state`` with its gradient stopped between steps (TGN's
truncation); the first chunk of every pass starts from the empty state, and each pass draws new
negatives. ``evaluate`` replays the whole stream from the empty state with fixed negatives and
reports the per-batch-averaged AP of the train, val and test windows
(:func:`netlab.graph.tgn.batched_average_precision`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import builder, events, tbatch, tgn
from netlab.graph import datasets as D
from netlab.registry import check_choice, check_range

DATA_NAMES = ("synthetic", "wikipedia", "reddit")
BATCHING = ("events", "tbatch")
REDUCTIONS = ("events", *tbatch.REDUCTIONS)
DATA_KEYS = (
    "name",
    "data_dir",
    "batch_size",
    "chunk",
    "batching",
    "num_nodes",
    "num_events",
    "feat_dim",
    "motif_prob",
    "delay",
    "seed",
)


class TemporalLinkPrediction:
    """The task protocol (``netlab.train.task.Task``) for the module docstring's setting."""

    def __init__(self, config, policy=None, *, stream: events.EventStream | None = None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        self.fdt = builder.float_dtype(self.policy)
        d = config.data
        D.check_data_keys(d, DATA_KEYS, "TemporalLinkPrediction")
        name = d.get("name", "synthetic")
        check_choice("data.name", name, DATA_NAMES)
        self.batch_size = int(d.get("batch_size", 32))
        self.chunk = int(d.get("chunk", 4))
        check_range("data.batch_size", self.batch_size, 1, None, integer=True)
        check_range("data.chunk", self.chunk, 1, None, integer=True)
        self.batching = d.get("batching", "events")
        check_choice("data.batching", self.batching, BATCHING)
        self.reduction = config.get("loss", {}).get("reduction", "events")
        check_choice("loss.reduction", self.reduction, REDUCTIONS)
        self.seed = int(d.get("seed", 0))
        if stream is None:
            if name == "synthetic":
                stream, _ = events.synthetic_stream(
                    int(d.get("num_nodes", 64)),
                    int(d.get("num_events", 2048)),
                    int(d.get("feat_dim", 4)),
                    float(d.get("motif_prob", 0.5)),
                    float(d.get("delay", 0.5)),
                    self.seed,
                )
            else:
                stream = events.load_jodie(name, d.get("data_dir") or None)
        self.stream = stream
        self.train_stream, val, _ = events.chronological_split(stream)
        if len(self.train_stream) == 0 or len(val) == 0:
            raise UserError(f"data: {len(stream)} events are too few for a 70/15/15 split")
        self.val_start, self.test_start = len(self.train_stream), len(self.train_stream) + len(val)
        spec = builder.model_spec(config, self.policy, "temporal")
        self.model = spec(num_nodes=stream.num_nodes, edge_dim=stream.feat.shape[1])
        if self.batching == "tbatch":
            s = self.train_stream
            self.windows = tbatch.pack(s.src, s.dst, self.batch_size * self.chunk, self.batch_size)
            self.step_batches = max(len(w) for w in self.windows)
            self.num_chunks = len(self.windows)
        else:
            nb = -(-len(self.train_stream) // self.batch_size)
            self.step_batches = self.chunk
            self.num_chunks = -(-nb // self.chunk)
        self._epoch_batches = {}
        neg = events.sample_negatives(stream, len(stream), seed=self.seed + 10_000)
        self.eval_batches = self._cast(events.pad_batches(stream, self.batch_size, neg))
        self._run = jax.jit(lambda params, b: tgn.run(self.model, {"params": params}, b))

    def _cast(self, b):
        return {k: v.astype(self.fdt) if v.dtype.kind == "f" else v for k, v in b.items()}

    def _tbatches(self, neg):
        """The training window's t-batches as padded arrays [windows * step_batches, batch]."""
        s, k, bs = self.train_stream, self.step_batches, self.batch_size
        idx = np.full((self.num_chunks * k, bs), -1)
        for w, pieces in enumerate(self.windows):
            for j, members in enumerate(pieces):
                idx[w * k + j, : len(members)] = members
        safe = np.maximum(idx, 0)
        return {
            "src": s.src[safe],
            "dst": s.dst[safe],
            "neg": np.asarray(neg, np.int32)[safe],
            "t": s.t[safe].astype(np.float32),
            "feat": np.where((idx >= 0)[..., None], s.feat[safe], 0.0).astype(np.float32),
            "mask": idx >= 0,
        }

    def _train_batches(self, epoch):
        if epoch not in self._epoch_batches:
            s = self.train_stream
            neg = events.sample_negatives(self.stream, len(s), seed=self.seed + 1 + epoch)
            if self.batching == "tbatch":
                b = self._tbatches(neg)
            else:
                b = events.pad_batches(s, self.batch_size, neg)
                extra = self.num_chunks * self.chunk - b["mask"].shape[0]
                b = {k: np.concatenate([v, np.repeat(v[-1:], extra, 0)]) for k, v in b.items()}
                b["mask"][b["mask"].shape[0] - extra :] = False
            self._epoch_batches = {epoch: self._cast(b)}
        return self._epoch_batches[epoch]

    def init_variables(self, rng):
        state = self.model.init_state()
        first = jax.tree.map(lambda x: jnp.asarray(x[0]), self.eval_batches)
        params = self.model.init(rng, state, first, method=type(self.model).step)
        return {"params": params["params"], "temporal": state}

    def batch_axes(self):
        return {k: None for k in (*self.eval_batches, "reset")}

    def global_batch_size(self):
        return 0

    def train_batch(self, step):
        epoch, c = divmod(int(step), self.num_chunks)
        b = self._train_batches(epoch)
        k = self.step_batches
        out = {key: v[c * k : (c + 1) * k] for key, v in b.items()}
        return {**out, "reset": np.asarray(c == 0)}

    def loss_fn(self, params, model_state, batch, rng, train):
        batch = dict(batch)
        reset = batch.pop("reset")
        fresh = self.model.init_state()
        if "temporal" in model_state:
            prev = jax.lax.stop_gradient(model_state["temporal"])
            state = jax.tree.map(lambda a, b: jnp.where(reset, a, b), fresh, prev)
        else:
            state = fresh
        state, (pos, neg, *extra) = tgn.run(self.model, {"params": params}, batch, state)
        loss = self.link_loss(pos, neg, batch["mask"])
        metrics = {"bce": loss}
        if extra:  # PRES's coherence per batch, averaged over the non-empty ones
            has = jnp.any(batch["mask"], -1).astype(loss.dtype)
            coherence = jnp.sum(extra[0] * has) / jnp.maximum(jnp.sum(has), 1.0)
            metrics["coherence"] = coherence
            loss = loss + self.model.beta * coherence
        new_state = {**model_state, "temporal": state} if "temporal" in model_state else {}
        return loss, (metrics, new_state)

    def link_loss(self, pos, neg, mask):
        """The step's BCE (pos, neg, mask [batches, batch]) under ``loss.reduction``."""
        if self.reduction == "events":
            return tgn.link_loss(pos, neg, mask)
        per = 0.5 * (jax.nn.softplus(-pos) + jax.nn.softplus(neg))  # mean over the 2 outputs
        nb, bs = mask.shape
        bid = jnp.repeat(jnp.arange(nb), bs)
        return tbatch.reduce(per.reshape(-1), bid, nb, mask.reshape(-1), self.reduction, dim=2)

    def evaluate(self, params, model_state, step, workdir):
        b = self.eval_batches
        _, (pos, neg, *_) = self._run(params, b)
        index = np.arange(b["mask"].size).reshape(b["mask"].shape)
        out = {}
        for name, lo, hi in (
            ("train", 0, self.val_start),
            ("val", self.val_start, self.test_start),
            ("test", self.test_start, len(self.stream)),
        ):
            window = b["mask"] & (index >= lo) & (index < hi)
            out[f"{name}_ap"] = tgn.batched_average_precision(pos, neg, window)
        return out, {}


__all__ = ["BATCHING", "DATA_NAMES", "REDUCTIONS", "TemporalLinkPrediction"]
