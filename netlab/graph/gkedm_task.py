"""GKEDM teacher → student attention distillation on a node-classification graph ("Attention is all
you need for boosting graph convolutional neural network", 2024; model in ``netlab.graph.gkedm``).

The task first trains a wide GKEDM teacher (``distill.teacher_hidden``, full batch, Adam
``distill.teacher_lr``, L2 ``loss.weight_decay``, ``distill.teacher_steps`` steps, dropout as the
student's) while the task is built, keeps its evaluation-mode attention maps (α, α_self) of every
layer fixed, and then hands the trainer the student (``config.model``, a narrow GKEDM with the same
number of layers and heads, so the maps line up node by node and head by head). The student's loss:

    L = CE(student) + L2 + λ · (1/L) Σ_l KD_att(α_teacher^l, α_student^l),

KD_att = ``gkedm.attention_distillation_loss`` (mean KL over real nodes and heads), λ =
``distill.kd_weight``. λ = 0 is the plain student (the ``node_classification`` loss exactly), the
"student without KD" baseline. The paper's λ (and any logit-KD term or temperature) was not
available to us; λ = 1 is our default, a free knob. ``evaluate`` adds the teacher's accuracies
(``teacher_val_accuracy``, ``teacher_test_accuracy``) to the student's.

Config: ``configs/graph/gkedm.py:mode=distill`` (task ``graph.gkedm_distillation``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.errors import UserError
from netlab.graph import gkedm
from netlab.graph import graphs as G
from netlab.graph.task import NodeClassification, l2_penalty, masked_accuracy, masked_cross_entropy
from netlab.registry import check_range

DISTILL_KEYS = ("teacher_hidden", "teacher_steps", "teacher_lr", "kd_weight")


def attention_maps(model, variables, graph, x, train=False, rng=None):
    """(logits, [(α, α_self) per GKEDM layer]) of ``model`` in ``train`` or evaluation mode."""
    rngs = {"dropout": rng} if rng is not None else {}
    variables = {k: v for k, v in variables.items() if k != "intermediates"}  # no stale maps
    logits, state = model.apply(
        variables, graph, x, train=train, rngs=rngs, mutable=["intermediates"]
    )
    inter = state["intermediates"]
    layers = sorted((k for k in inter if k.startswith("conv")), key=lambda k: int(k[4:]))
    maps = [inter[k]["attention"][0] for k in layers]
    return logits, maps


def distillation_term(graph, teacher_maps, student_maps):
    """(1/L) Σ_l ``attention_distillation_loss`` over the layers' maps."""
    terms = [
        gkedm.attention_distillation_loss(graph, t, s)
        for t, s in zip(teacher_maps, student_maps, strict=True)
    ]
    return sum(terms) / len(terms)


class GKEDMDistillation(NodeClassification):
    """Node classification of a GKEDM student distilled from a GKEDM teacher (module docstring)."""

    def __init__(self, config, policy=None, *, dataset=None, teacher_variables=None):
        """``teacher_variables``: a trained teacher's variables (skips its training; runs with
        and without KD can share one teacher)."""
        super().__init__(config, policy, dataset=dataset)
        if not isinstance(self.model, gkedm.GKEDM):
            raise UserError(
                f"model.name={config.model.name!r}: GKEDM distillation needs model.name='gkedm'"
            )
        d = dict(config.get("distill", {}))
        unknown = sorted(set(d) - set(DISTILL_KEYS))
        if unknown:
            raise UserError(
                f"unknown config key 'distill.{unknown[0]}'; choose from {', '.join(DISTILL_KEYS)}"
            )
        self.kd_weight = float(check_range("distill.kd_weight", d.get("kd_weight", 1.0), 0.0))
        hidden = int(check_range("distill.teacher_hidden", d.get("teacher_hidden", 256), 1))
        steps = int(check_range("distill.teacher_steps", d.get("teacher_steps", 200), 0))
        lr = float(check_range("distill.teacher_lr", d.get("teacher_lr", 0.01), 0.0))
        self.teacher = self.model.clone(hidden=hidden)
        if teacher_variables is None:
            teacher_variables = self._train_teacher(steps, lr, int(config.get("seed", 0)))
        self.teacher_variables = teacher_variables
        run = jax.jit(lambda v, g: attention_maps(self.teacher, v, g, g.nodes))
        logits, maps = run(self.teacher_variables, self._graph())
        self.teacher_maps = jax.device_get(maps)
        pred, y = np.asarray(logits).argmax(-1), self.arrays["y"]
        self.teacher_scalars = {
            f"teacher_{k}_accuracy": float((pred == y)[m].mean())
            for k, m in self.eval_masks.items()
            if m.any()
        }

    def _graph(self):
        return G.from_arrays(jax.tree.map(jnp.asarray, self.arrays))

    def _train_teacher(self, steps, lr, seed):
        """Full-batch Adam on the teacher (the student's CE + L2); its variables."""
        g = self._graph()
        key = jax.random.key(seed + 1)
        init = jax.jit(lambda k, g: self.teacher.init({"params": k}, g, g.nodes, train=False))
        params = nn.unbox(init(key, g))["params"]
        opt = optax.adam(lr)
        state = opt.init(params)

        def loss(p, k):
            out = self.teacher.apply({"params": p}, g, g.nodes, train=True, rngs={"dropout": k})
            ce = masked_cross_entropy(out, g_y, g_mask)
            # the student's L2 (weight_decay_overrides name the student's parameters)
            return ce + l2_penalty(p, self.weight_decay, self.wd_scope)

        g_y, g_mask = jnp.asarray(self.arrays["y"]), jnp.asarray(self.arrays["train_mask"])

        @jax.jit
        def step(p, s, k):
            grads = jax.grad(loss)(p, k)
            upd, s = opt.update(grads, s, p)
            return optax.apply_updates(p, upd), s

        for i in range(steps):
            params, state = step(params, state, jax.random.fold_in(key, i))
        return {"params": params}

    def init_variables(self, rng):
        variables = super().init_variables(rng)
        return {k: v for k, v in variables.items() if k != "intermediates"}

    def loss_fn(self, params, model_state, batch, rng, train):
        g = G.from_arrays(batch)
        variables = {"params": params, **model_state}
        logits, maps = attention_maps(self.model, variables, g, batch["nodes"], train, rng)
        ce = masked_cross_entropy(logits, batch["y"], batch["train_mask"])
        kd = distillation_term(g, self.teacher_maps, maps)
        loss = (
            ce
            + l2_penalty(params, self.weight_decay, self.wd_scope, self.wd_overrides)
            + self.kd_weight * kd
        )
        accuracy = masked_accuracy(logits, batch["y"], batch["train_mask"])
        return loss, ({"ce": ce, "kd": kd, "accuracy": accuracy}, model_state)

    def evaluate(self, params, model_state, step, workdir):
        scalars, pictures = super().evaluate(params, model_state, step, workdir)
        return {**scalars, **self.teacher_scalars}, pictures


__all__ = ["DISTILL_KEYS", "GKEDMDistillation", "attention_maps", "distillation_term"]
