"""Tasks of the MoE family (see netlab/train/task.py for the protocol).

`ByteLM` ("moe.byte_lm"): next-byte prediction on Python's `pydoc_data` documentation text with a
decoder-only MoE Transformer; validation loss on the held-out tail; per-layer expert-load
histograms and token-to-expert heatmaps at each evaluation.

`MoEDigits` ("moe.vit_digits" for `model.name="vit"`): classify scikit-learn's digits with an image
model of `netlab.moe.registries.MODELS` (ViT-MoE, CondConv, pMoE); held-out accuracy and, for the
routed models, the same routing pictures.

Config: `model.name` (a MODELS entry) and that model's fields (`model.moe.*` are MoEMLP fields;
capacity factors <= 0 mean "never drop"); `loss.{load_balance, z_loss}` weight the MEAN over the
model's MoE layers of the balance loss and router z-loss, so each layer is given the coefficient
divided by the number of MoE layers and the summed `aux_loss` collection is that weighted mean.
Every bad value is a one-line UserError raised here, before the trainer writes anything.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.errors import UserError
from netlab.moe import advmoe, plots, text
from netlab.moe.registries import MODELS
from netlab.moe.shared import mlp_factory
from netlab.nn import aux, precision
from netlab.registry import check_range

STATE = "router_bias"  # the loss-free router's bias: model state, not a parameter
FROZEN = "frozen"  # parameters no optimizer may touch (customize.py's global expert)


def moe_kwargs(cfg_moe) -> dict:
    """MoEMLP fields from a config group: capacity factors <= 0 -> None, lists -> tuples."""
    kw = dict(cfg_moe)
    for key in ("capacity_factor", "eval_capacity_factor"):
        if kw.get(key) is not None and not isinstance(kw[key], str) and float(kw[key]) <= 0:
            kw[key] = None
    if "batch_axes" in kw:
        kw["batch_axes"] = tuple(kw["batch_axes"])
    return kw


def build_model(config, policy, inputs: str, input_shape: tuple, **fixed):
    """The MODELS entry `config.model.name` with the other `config.model` fields, the policy's
    dtype and remat, `fixed` (set by the task) and per-layer aux-loss weights, checked for inputs
    of `input_shape` (one example); UserErrors name the bad key."""
    m = config.model
    name = m.get("name", "")
    cls = MODELS.get(name)
    if getattr(cls, "inputs", inputs) != inputs:
        ok = [n for n in MODELS.names() if getattr(MODELS.get(n), "inputs", "") == inputs]
        raise UserError(
            f"model.name={name!r} reads {cls.inputs}; this task needs a model of "
            f"{inputs}: choose one of {', '.join(ok)}"
        )
    kw = {k: v for k, v in m.items() if k != "name"}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
    if "moe" in kw:
        kw["moe"] = moe_kwargs(kw["moe"])
    kw.update(fixed, dtype=policy.compute_dtype, remat_policy=policy.remat_policy)
    model = MODELS.build(name, **kw)
    if hasattr(model, "check"):
        model.check(input_shape)
    n = model.num_moe_layers() if hasattr(model, "num_moe_layers") else 0
    if n and getattr(model, "moe", None) is not None:
        loss = config.get("loss", {})
        weights = dict(
            load_balance_weight=float(loss.get("load_balance", 0.0)) / n,
            z_loss_weight=float(loss.get("z_loss", 0.0)) / n,
        )
        model = model.clone(moe=dict(model.moe, **weights))
    return model


def check_moe(config, model, group_size: int, causal: bool = False):
    """Check the model's MoE fields (router, backend, k, capacity, ...) before anything runs."""
    if getattr(model, "moe", None) is None and not hasattr(model, "moe_layer"):
        return
    expert = int(config.mesh.get("expert", 1))
    layer = model.moe_layer() if hasattr(model, "moe_layer") else mlp_factory(model.moe)()
    layer.check(group_size=group_size, causal=causal, expert_devices=max(expert, 1))


def _collect(tree, name, prefix=""):
    """[(path, value)] of every sown `name` in an intermediates tree."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}/{key}"
        if key == name:
            out.append((path, value))
        elif isinstance(value, dict) or hasattr(value, "items"):
            out.extend(_collect(value, name, path))
    return out


class _MoETask:
    """Shared by the MoE tasks: apply with the aux collections, the loss terms, routing pictures."""

    def init_variables(self, rng):
        variables = self.model.init({"params": rng, "router": rng}, self.example_input(), False)
        return {k: v for k, v in variables.items() if k in ("params", STATE, FROZEN)}

    def global_batch_size(self):
        return self.batch_size

    def apply(self, params, model_state, inputs, rng, train, capture=False):
        """-> (output, collections): aux losses and metrics (+ intermediates when `capture`)."""
        mutable = list(aux.COLLECTIONS) + ([STATE] if train and STATE in model_state else [])
        mutable += ["intermediates"] if capture else []
        return self.model.apply(
            {"params": params, **model_state}, inputs, train, rngs={"router": rng}, mutable=mutable
        )

    def finish(self, task_loss, cols, model_state, metrics):
        """Task loss + the layers' weighted aux losses; metrics; the updated model state."""
        extra = aux.total_loss(cols)
        metrics = dict(aux.mean_metrics(cols), **metrics, aux_loss=extra)
        new_state = dict(model_state)
        if STATE in cols:
            new_state[STATE] = cols[STATE]
        return task_loss + extra, (metrics, new_state)

    @staticmethod
    def routing_pictures(cols):
        """(per-layer expert shares (E,), per-layer gates (S, E) of the first group), in layer
        order."""
        inter = cols.get("intermediates", {})
        fractions = [f[0] for _, f in sorted(_collect(inter, "expert_fraction"))]
        gates = [g[0][0] for _, g in sorted(_collect(inter, "gates"))]
        return fractions, gates


class ByteLM(_MoETask):
    def __init__(self, config, policy=None):
        policy = policy or precision.from_config(config.train)
        self.config = config
        self.seq_len = int(config.data.seq_len)
        check_range("data.seq_len", self.seq_len, 1, None, integer=True)
        self.model = build_model(
            config, policy, "tokens", (self.seq_len,), vocab=256, max_len=self.seq_len
        )
        check_moe(config, self.model, self.seq_len, causal=True)
        self.train_data, self.valid_data = text.load(float(config.data.valid_fraction))
        self.batch_size = int(config.train.batch_size)
        self._eval = jax.jit(self._eval_fn)

    def example_input(self):
        return jnp.zeros((1, self.seq_len), jnp.int32)

    def batch_axes(self):
        return {"tokens": ("batch", None)}

    def train_batch(self, step):
        return {
            "tokens": text.train_windows(
                self.train_data, self.batch_size, self.seq_len + 1, self.config.seed, step
            )
        }

    def _forward(self, params, model_state, tokens, rng, train, capture=False):
        logits, cols = self.apply(params, model_state, tokens[:, :-1], rng, train, capture)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        return ce, cols

    def loss_fn(self, params, model_state, batch, rng, train):
        ce, cols = self._forward(params, model_state, batch["tokens"], rng, train)
        return self.finish(ce, cols, model_state, {"cross_entropy": ce})

    def _eval_fn(self, params, model_state, tokens):
        ce, cols = self._forward(params, model_state, tokens, jax.random.key(0), False, True)
        return ce, aux.mean_metrics(cols), *self.routing_pictures(cols)

    def evaluate(self, params, model_state, step, workdir):
        tokens = text.eval_windows(
            self.valid_data, int(self.config.data.eval_windows), self.seq_len + 1
        )
        ce, metrics, fractions, gates = jax.device_get(self._eval(params, model_state, tokens))
        scalars = {"valid_loss": float(ce), "valid_bits_per_byte": float(ce) / np.log(2)}
        scalars.update({f"valid_{k}": float(v) for k, v in metrics.items()})
        images = {}
        if fractions:
            images["expert_load"] = plots.expert_load_histograms(fractions)
            n = min(48, self.seq_len)
            labels = [chr(c) if 32 < c < 127 else "·" for c in tokens[0, :n]]
            images["token_experts"] = plots.token_expert_heatmaps(
                [np.asarray(g)[:n] for g in gates], labels
            )
        return scalars, images


class MoEDigits(_MoETask):
    """Classify scikit-learn's digits (8x8x1) with an image model from MODELS."""

    def __init__(self, config, policy=None):
        from netlab.data import digits

        policy = policy or precision.from_config(config.train)
        self.config = config
        self.model = build_model(config, policy, "images", (8, 8, 1), num_classes=10)
        patch = config.model.get("patch", 1)
        check_moe(config, self.model, (8 // patch) ** 2)
        self.digits = digits
        self.data = digits.load(config.data.test_fraction)
        self.batch_size = int(config.train.batch_size)
        self._eval = jax.jit(self._eval_fn)
        # AdvMoE (Zhang et al. 2023, netlab/moe/advmoe.py): `adv_moe.enabled` trains on TRADES
        # with PGD examples, router and backbone phases alternating by step parity
        self.adv = advmoe.from_config(config.get("adv_moe"))
        if self.adv is not None:
            abstract = jax.eval_shape(self.init_variables, jax.random.key(0))["params"]
            if advmoe.ROUTER not in jax.tree.leaves(advmoe.labels(abstract, self.adv.router_key)):
                raise UserError(
                    f"adv_moe.enabled=True: model.name={config.model.name!r} has no parameters "
                    f"under a {self.adv.router_key!r} key; choose a routed model or set "
                    "adv_moe.router_key"
                )

    def example_input(self):
        return jnp.zeros((1, 8, 8, 1), jnp.float32)

    def batch_axes(self):
        axes = {"image": ("batch", None, None, None), "label": ("batch",)}
        return dict(axes, phase=None) if self.adv is not None else axes

    def train_batch(self, step):
        idx = self.digits.epoch_batch_indices(
            len(self.data["train_y"]), self.batch_size, self.config.seed, step
        )
        batch = {"image": self.data["train_x"][idx], "label": self.data["train_y"][idx]}
        if self.adv is not None:  # 0: router phase, 1: backbone phase
            batch["phase"] = np.asarray(step % 2, np.int32)
        return batch

    @functools.partial(jax.jit, static_argnums=0)
    def _adv_eval(self, params, model_state, x, y):
        """Predictions on PGD examples maximising the cross-entropy (the paper's test attack:
        10 steps of eps / 4)."""
        c = dataclasses.replace(self.adv, steps=10, step_size=self.adv.eps / 4)

        def ce(z):
            logits = self.apply(params, model_state, z, jax.random.key(0), False)[0]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

        x_adv = advmoe.pgd(ce, x, jax.random.key(1), c)
        return self.apply(params, model_state, x_adv, jax.random.key(0), False)[0].argmax(-1)

    def adv_forward(self, model_state):
        """`forward(params, x, key) -> (logits, aux_loss)` in training mode, for advmoe."""

        def forward(params, x, key):
            logits, cols = self.apply(params, model_state, x, key, True)
            return logits, aux.total_loss(cols)

        return forward

    def loss_fn(self, params, model_state, batch, rng, train):
        if self.adv is not None and train and "phase" in batch:
            masked = advmoe.phase_mask(params, batch["phase"], self.adv.router_key)
            forward = self.adv_forward(model_state)
            loss, metrics = advmoe.trades_loss(
                forward, masked, batch["image"], batch["label"], rng, self.adv
            )
            return loss, (dict(metrics, phase=batch["phase"].astype(jnp.float32)), model_state)
        logits, cols = self.apply(params, model_state, batch["image"], rng, train)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return self.finish(ce, cols, model_state, {"cross_entropy": ce, "accuracy": accuracy})

    def _eval_fn(self, params, model_state, image):
        logits, cols = self.apply(params, model_state, image, jax.random.key(0), False, True)
        return logits.argmax(-1), aux.mean_metrics(cols), *self.routing_pictures(cols)

    def evaluate(self, params, model_state, step, workdir):
        pred, metrics, fractions, gates = jax.device_get(
            self._eval(params, model_state, self.data["test_x"])
        )
        scalars = {"test_accuracy": float((pred == self.data["test_y"]).mean())}
        scalars.update({f"test_{k}": float(v) for k, v in metrics.items()})
        if self.adv is not None:
            x, y = self.data["test_x"], self.data["test_y"]
            adv_pred = jax.device_get(self._adv_eval(params, model_state, x, y))
            scalars["test_robust_accuracy"] = float((adv_pred == y).mean())
        images = {}
        if fractions:
            images["expert_load"] = plots.expert_load_histograms(fractions)
            images["token_experts"] = plots.token_expert_heatmaps([np.asarray(g) for g in gates])
        return scalars, images


ViTMoEDigits = MoEDigits  # the name the task table knows ("moe.vit_digits")
