"""Low-cost customisation with a frozen global expert, a small local expert and a gate. Zhang,
Davoodi & Hu 2018, "A Mixture of Expert Approach for Low-Cost Customization of Deep Neural
Networks" (arXiv 1811.00056).

The paper deploys a Global Expert (GE), a network trained on a large generic data set, on a user's
device, and adds a small Local Expert (LE) trained on the user's own data to correct the GE's
errors, plus a Gating Network (GN) that decides whether an input is handled by the GE or the LE.
Only LE and GN are trained on the device; the GE is frozen, so the generic accuracy is kept and
training costs a few percent of re-training the GE (the paper: LeNet-5 on EMNIST as GE, 10 users'
handwriting, about 2.5% overhead).

Equations used here (the paper specifies the binary GE-vs-LE decision; the soft form in training
is the classic mixture of experts of Jacobs et al. 1991, our choice, so that GN is trainable by
gradient descent):

    z(x)  = GN(x)                              one logit, g(x) = sigmoid(z(x))
    p(y|x) = g(x) softmax(GE(x))_y + (1 - g(x)) softmax(LE(x))_y                  (training)
    g(x)  = 1[z(x) > 0]                        (evaluation, `hard_gate=True`: the paper's switch)

The model returns log p(y|x), computed as a logsumexp of log g + log_softmax(GE) and
log(1 - g) + log_softmax(LE), so a task's softmax cross-entropy on it is exactly -log p(y|x).
g -> 1 gives the GE alone, g -> 0 the LE alone.

Freezing: the GE's parameters live in the `frozen` variable collection, not in `params`, so the
trainer's optimizer (and its weight decay, which would move a parameter whose gradient is zero)
never sees them; they are also wrapped in `stop_gradient`. They come from `global_path`: a netlab
workdir (or its ckpt/ folder: the newest checkpoint's `params` item, e.g. a run of
configs/moe/vit_moe_digits.py) or an .npz written by `save_params`; with no path they are drawn
from the init key (a smoke run: a random, frozen GE). The GE is any image model of `MODELS`
(`global_model`, fields `global_fields`), applied in evaluation mode as it is deployed.
LE: flatten -> dense(local_hidden) -> relu -> dense(classes); GN: flatten -> dense(gate_hidden) ->
relu -> dense(1).
"""

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.moe.registries import MODELS
from netlab.registry import check_range

FROZEN = "frozen"  # the variable collection that holds the global expert


def flatten(tree, prefix=""):
    """{"a/b": leaf} of a nested dict."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def unflatten(flat: dict) -> dict:
    out = {}
    for path, value in flat.items():
        *head, last = path.split("/")
        node = out
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def save_params(path: str, params) -> str:
    """Write a parameter tree as an .npz (keys "/"-joined) that `global_path` reads."""
    params = nn.unbox(jax.device_get(params))
    np.savez(path, **{k: np.asarray(v) for k, v in flatten(params).items()})
    return path


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> dict:
    """{"a/b": numpy leaf} from an .npz or from the newest checkpoint of a netlab workdir."""
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    import orbax.checkpoint as ocp

    ckdir = os.path.join(path, "ckpt") if os.path.isdir(os.path.join(path, "ckpt")) else path
    steps = [int(s) for s in os.listdir(ckdir) if s.isdigit()] if os.path.isdir(ckdir) else []
    if not steps:
        raise UserError(
            f"model.global_path={path!r} holds no checkpoint; point it at a workdir, its ckpt/ "
            "folder or an .npz written by netlab.moe.customize.save_params"
        )
    item = os.path.join(ckdir, str(max(steps)), "params")
    meta = ocp.StandardCheckpointer().metadata(item)
    tree = getattr(meta, "item_metadata", meta)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    restored = ocp.StandardCheckpointer().restore(item, target)
    return {k: np.asarray(v) for k, v in flatten(restored).items()}


def load_params(path: str, abstract) -> dict:
    """The GE parameters at `path`, checked leaf by leaf against `abstract` (its init shapes)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise UserError(
            f"model.global_path={path!r} does not exist; train the global model first (e.g. "
            "configs/moe/vit_moe_digits.py) and point this key at its workdir"
        )
    saved = _read(path, os.path.getmtime(path))
    want = {k: tuple(v.shape) for k, v in flatten(abstract).items()}
    got = {k: tuple(v.shape) for k, v in saved.items()}
    if want != got:
        bad = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
        raise UserError(
            f"model.global_path={path!r}: its parameters do not fit model.global_model / "
            f"model.global_fields (first difference: {bad[0]}); use the saved run's model fields"
        )
    return unflatten(saved)


def _plain(fields) -> dict:
    """Config fields -> plain Python (ConfigDicts -> dicts, lists -> tuples, capacity <= 0 ->
    None), as `netlab.moe.task.build_model` passes them."""
    fields = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields or {})
    out = {}
    for key, value in fields.items():
        if isinstance(value, dict) or hasattr(value, "to_dict"):
            value = _plain(value)
        elif isinstance(value, list):
            value = tuple(value)
        if key in ("capacity_factor", "eval_capacity_factor") and value is not None:
            value = None if float(value) <= 0 else value
        out[key] = value
    return out


class _MLP(nn.Module):
    hidden: int
    out: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(x))
        return nn.Dense(self.out, dtype=self.dtype, name="out")(x).astype(jnp.float32)


@MODELS.register("customize")
class CustomizedMoE(nn.Module):
    """GE (frozen, collection `frozen`) + LE + GN; returns log p(y|x) (B, num_classes)."""

    inputs = "images"

    num_classes: int = 10
    global_model: str = "vit"  # a MODELS entry reading images
    global_fields: Any = None  # its fields (the global run's `model` group, without `name`)
    global_path: str = ""  # workdir / ckpt folder / .npz of the GE params; "" = init key
    local_hidden: int = 32
    gate_hidden: int = 16
    hard_gate: bool = True  # evaluation: the paper's binary GE-or-LE decision
    dtype: Any = jnp.float32
    remat_policy: Any = None

    def global_expert(self):
        fields = _plain(self.global_fields)
        fields.pop("name", None)
        fields.setdefault("dtype", self.dtype)  # the run's compute dtype
        model = MODELS.build(
            self.global_model,
            key="model.global_model",
            num_classes=self.num_classes,
            parent=None,  # applied functionally with the frozen parameters, not a submodule
            **fields,
        )
        if getattr(model, "inputs", "images") != "images":
            raise UserError(
                f"model.global_model={self.global_model!r} reads {model.inputs}; the global "
                "expert must be an image model"
            )
        return model

    def check(self, input_shape=None):
        check_range("model.local_hidden", self.local_hidden, 1, None, integer=True)
        check_range("model.gate_hidden", self.gate_hidden, 1, None, integer=True)
        ge = self.global_expert()
        if hasattr(ge, "check"):
            ge.check(input_shape)
        if self.global_path and input_shape is not None:
            x = jnp.zeros((1, *input_shape), jnp.float32)
            load_params(self.global_path, nn.unbox(self._abstract(ge, x)))

    def num_moe_layers(self) -> int:
        return 0  # the frozen GE's balance losses do not train anything

    @staticmethod
    def _abstract(ge, x):
        """The GE's init shapes, with their logical-axis boxes (so the trainer shards it)."""
        return jax.eval_shape(lambda k: ge.init(k, x[:1]), jax.random.key(0))["params"]

    def _init_global(self, ge, x):
        if self.global_path:
            boxed = self._abstract(ge, x)
            loaded = load_params(self.global_path, nn.unbox(boxed))
            is_box = lambda a: isinstance(a, nn.meta.AxisMetadata)  # noqa: E731
            return jax.tree.map(
                lambda b, v: b.replace_boxed(jnp.asarray(v)) if is_box(b) else jnp.asarray(v),
                boxed,
                loaded,
                is_leaf=is_box,
            )
        return ge.init({"params": self.make_rng("params"), "router": self.make_rng("params")}, x)[
            "params"
        ]

    def gate_logit(self, images):
        return _MLP(self.gate_hidden, 1, self.dtype, name="gate")(images)[:, 0]

    @nn.compact
    def __call__(self, images, train: bool = False):
        ge = self.global_expert()
        frozen = self.variable(FROZEN, "global_expert", self._init_global, ge, images)
        ge_params = jax.lax.stop_gradient(frozen.value)
        ge_logp = jax.nn.log_softmax(ge.apply({"params": ge_params}, images, False), -1)
        le_logp = jax.nn.log_softmax(
            _MLP(self.local_hidden, self.num_classes, self.dtype, name="local")(images), -1
        )
        z = self.gate_logit(images)
        if train or not self.hard_gate:
            log_g, log_1mg = jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
        else:
            use_ge = z > 0
            log_g = jnp.where(use_ge, 0.0, -jnp.inf)
            log_1mg = jnp.where(use_ge, -jnp.inf, 0.0)
        both = jnp.stack([log_g[:, None] + ge_logp, log_1mg[:, None] + le_logp])
        return jax.nn.logsumexp(both, axis=0)
