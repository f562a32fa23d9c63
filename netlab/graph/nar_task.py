"""Neural algorithmic reasoning on CLRS-style Quickselect traces (Xu & Veličković 2024, RNAR; the
CLRS-30 benchmark's ``quickselect``): train :class:`netlab.graph.rnar.RNAR` on arrays of
``data.n_train`` random keys, score the selected node (CLRS ``mask_one`` accuracy = micro-F1) on
fresh arrays of the same size and of ``data.n_ood`` keys (out of distribution: larger).

Batch (host numpy, one row per array; a pure function of (seed, step)): ``x`` [B, N, 2] = (pos,
key) with pos = i / N (CLRS's ``pos``, node order = index order), ``mask`` [B, N], ``hints``
[B, T, 5] = the trace's p, r, i, j, pivot node indices per inner-loop step (i = −1, unscored, while
i < p), ``steps`` [B, T] (real trace rows), ``output`` [B] (the rank-⌊n/2⌋ node) and ``last`` [B]
(its trace's last row). T = ``data.steps_per_node`` · N is the padded trace length; a key array
whose trace is longer is redrawn (deliberate: at 5 · N this drops about 1 % of the arrays of 32
keys and none of 16; the kept distribution is slightly shorter-traced than CLRS's).

Loss = CE(output at the last real step) + mean CE over real (step, hint) entries; metrics
``output_acc`` and ``hint_acc``. Config: ``task = "graph.algorithmic_reasoning"``,
``model.name = "rnar"``, ``data.*`` = :data:`DATA_KEYS`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.graph import builder, rnar
from netlab.graph import datasets as D
from netlab.registry import check_range

DATA_KEYS = ("n_train", "n_ood", "steps_per_node", "num_eval", "eval_batch")


def quickselect_batch(n: int, batch: int, num_steps: int, rng) -> dict:
    """``batch`` Quickselect examples on ``n`` uniform keys each, traces padded to ``num_steps``
    (longer traces redrawn from ``rng``)."""
    x = np.zeros((batch, n, 2), np.float32)
    hints = np.full((batch, num_steps, len(rnar.HINTS)), -1, np.int32)
    steps = np.zeros((batch, num_steps), bool)
    output = np.zeros(batch, np.int32)
    last = np.zeros(batch, np.int32)
    for b in range(batch):
        while True:
            keys = rng.random(n)
            sel, trace = rnar.quickselect_trace(keys)
            t = len(trace["j"])
            if t <= num_steps:
                break
        x[b, :, 0] = np.arange(n) / n
        x[b, :, 1] = keys
        if t == 0:  # n = 1: nothing to compare; the output is read at step 0
            t = 1
        else:
            hints[b, : len(trace["j"])] = np.stack([trace[k] for k in rnar.HINTS], -1)
        steps[b, :t] = True
        output[b], last[b] = sel, t - 1
    return dict(
        x=x, mask=np.ones((batch, n), bool), hints=hints, steps=steps, output=output, last=last
    )


class AlgorithmicReasoning:
    """Quickselect with hint supervision for ``TASK = "nar"`` models (see module doc)."""

    def __init__(self, config, policy=None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        d = config.data
        D.check_data_keys(d, DATA_KEYS, "AlgorithmicReasoning")
        spec = builder.model_spec(config, self.policy, "nar", defaults={"name": "rnar"})
        for key, lo in (("n_train", 2), ("n_ood", 2), ("steps_per_node", 1), ("num_eval", 1)):
            check_range(f"data.{key}", d[key], lo, None, integer=True)
        check_range("data.eval_batch", d.eval_batch, 1, None, integer=True)
        check_range("train.batch_size", config.train.batch_size, 1, None, integer=True)
        self.model = spec()
        self.fdt = builder.float_dtype(self.policy)
        self.eval_sets = {
            name: quickselect_batch(
                int(n), int(d.num_eval), int(d.steps_per_node) * int(n), self._rng(-1, i)
            )
            for i, (name, n) in enumerate((("test", d.n_train), ("ood", d.n_ood)))
        }
        self._metrics = jax.jit(lambda p, b: self.losses(p, b)[1])

    def _rng(self, step, tag):
        return np.random.default_rng([int(self.config.seed), step + 1, tag])

    def init_variables(self, rng):
        b = self.train_batch(0)
        return self.model.init(rng, jnp.asarray(b["x"][:1]), b["mask"][:1], b["steps"].shape[1])

    def batch_axes(self):
        return {
            "x": ("batch", None, None),
            "mask": ("batch", None),
            "hints": ("batch", None, None),
            "steps": ("batch", None),
            "output": ("batch",),
            "last": ("batch",),
        }

    def global_batch_size(self):
        return int(self.config.train.batch_size)

    def train_batch(self, step):
        d = self.config.data
        n = int(d.n_train)
        b = quickselect_batch(
            n, self.global_batch_size(), int(d.steps_per_node) * n, self._rng(step, 7)
        )
        b["x"] = b["x"].astype(self.fdt)
        return b

    def losses(self, params, batch):
        hint, out = self.model.apply(
            {"params": params}, batch["x"], batch["mask"], batch["steps"].shape[1]
        )
        out = jnp.take_along_axis(out, batch["last"][:, None, None], 1)[:, 0]  # [B, N]
        finite = lambda z: jnp.where(jnp.isfinite(z), z, jnp.finfo(z.dtype).min)  # noqa: E731
        out_ce = optax.softmax_cross_entropy_with_integer_labels(finite(out), batch["output"])
        tgt = batch["hints"]
        valid = batch["steps"][..., None] & (tgt >= 0)
        hint_ce = optax.softmax_cross_entropy_with_integer_labels(finite(hint), jnp.maximum(tgt, 0))
        w = valid.astype(hint_ce.dtype)
        hint_loss = (hint_ce * w).sum() / jnp.maximum(w.sum(), 1.0)
        hint_acc = ((hint.argmax(-1) == tgt) * w).sum() / jnp.maximum(w.sum(), 1.0)
        loss = out_ce.mean() + hint_loss
        metrics = {
            "loss": loss,
            "output_loss": out_ce.mean(),
            "hint_loss": hint_loss,
            "output_acc": (out.argmax(-1) == batch["output"]).astype(out_ce.dtype).mean(),
            "hint_acc": hint_acc,
        }
        return loss, metrics

    def loss_fn(self, params, model_state, batch, rng, train):
        loss, metrics = self.losses(params, batch)
        return loss, (metrics, model_state)

    def evaluate(self, params, model_state, step, workdir):
        scalars = {}
        eb = int(self.config.data.eval_batch)
        for name, data in self.eval_sets.items():
            rows = []
            for s in range(0, len(data["output"]), eb):
                part = {k: v[s : s + eb] for k, v in data.items()}
                part["x"] = part["x"].astype(self.fdt)
                m = jax.device_get(self._metrics(params, part))
                rows.append((len(part["output"]), m["output_acc"], m["hint_acc"]))
            rows = np.asarray(rows, np.float64)
            w = rows[:, 0] / rows[:, 0].sum()
            scalars[f"{name}_acc"] = float((w * rows[:, 1]).sum())
            scalars[f"{name}_hint_acc"] = float((w * rows[:, 2]).sum())
        return scalars, {}


__all__ = ["DATA_KEYS", "AlgorithmicReasoning", "quickselect_batch"]
