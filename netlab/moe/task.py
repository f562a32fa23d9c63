"""Tasks of the MoE family (see netlab/train/task.py for the protocol).

`ByteLM`: next-byte prediction on Python's `pydoc_data` documentation text with a decoder-only
MoE Transformer; validation loss on the held-out tail; per-layer expert-load histograms and
token-to-expert heatmaps at each evaluation.

Config (see configs/moe/lm_tiny.py): `model.{width, depth, num_heads, mlp_hidden, moe_every}`,
`model.moe.*` (MoEMLP fields; capacity factors <= 0 mean "never drop"), `data.{seq_len,
valid_fraction, eval_windows}`, `loss.{load_balance, z_loss}` coefficients.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.moe import plots, text
from netlab.moe.lm import MoELM

AUX_SCALARS = ("load_balance", "z_loss", "importance", "dropped_fraction", "unrouted_fraction")


def moe_kwargs(cfg_moe) -> dict:
    kw = dict(cfg_moe)
    for key in ("capacity_factor", "eval_capacity_factor"):
        if key in kw and kw[key] is not None and float(kw[key]) <= 0:
            kw[key] = None
    if "batch_axes" in kw:
        kw["batch_axes"] = tuple(kw["batch_axes"])
    return kw


def mean_aux(aux_list) -> dict:
    """Means over MoE layers of the scalar aux values."""
    out = {}
    for key in AUX_SCALARS:
        vals = [a[key] for a in aux_list if key in a]
        if vals:
            out[key] = jnp.mean(jnp.stack(vals))
    return out


class ByteLM:
    def __init__(self, config):
        from netlab.train import precision

        self.config = config
        m = config.model
        self.seq_len = int(config.data.seq_len)
        self.model = MoELM(vocab=256, max_len=self.seq_len, width=m.width, depth=m.depth,
                           num_heads=m.num_heads, mlp_hidden=m.mlp_hidden, moe_every=m.moe_every,
                           moe=moe_kwargs(m.moe), dtype=precision.compute_dtype(config.train))
        self.train_data, self.valid_data = text.load(float(config.data.valid_fraction))
        self.batch_size = int(config.train.batch_size)
        self._eval = jax.jit(self._eval_fn)

    def init_variables(self, rng):
        return self.model.init({"params": rng, "router": rng}, jnp.zeros((1, self.seq_len), jnp.int32), False)

    def batch_axes(self):
        return {"tokens": ("batch", None)}

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step, process_index, process_count):
        tokens = text.train_windows(self.train_data, self.batch_size, self.seq_len + 1, self.config.seed, step)
        local = self.batch_size // process_count
        return {"tokens": tokens[process_index * local:(process_index + 1) * local]}

    def _forward(self, params, model_state, tokens, rng, train, capture=False):
        mutable = []
        if train and "router_bias" in model_state:
            mutable.append("router_bias")
        if capture:
            mutable.append("intermediates")
        variables = {"params": params, **model_state}
        out = self.model.apply(variables, tokens[:, :-1], train, rngs={"router": rng}, mutable=mutable or False)
        (logits, aux), updates = out if mutable else (out, {})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        return ce, aux, updates

    def loss_fn(self, params, model_state, batch, rng, train):
        ce, aux, updates = self._forward(params, model_state, batch["tokens"], rng, train)
        metrics = dict(mean_aux(aux), cross_entropy=ce)
        coef = self.config.loss
        loss = ce
        if aux:
            loss = loss + coef.load_balance * metrics["load_balance"] + coef.z_loss * metrics["z_loss"]
        new_state = dict(model_state)
        if "router_bias" in updates:
            new_state["router_bias"] = updates["router_bias"]
        return loss, (metrics, new_state)

    def _eval_fn(self, params, model_state, tokens):
        ce, aux, updates = self._forward(params, model_state, tokens, jax.random.key(0), False, capture=True)
        gates = [g[0][0] for _, g in sorted(_collect(updates.get("intermediates", {}), "gates"))]
        return ce, mean_aux(aux), [a["expert_fraction"] for a in aux], gates

    def evaluate(self, params, model_state, step, workdir):
        tokens = text.eval_windows(self.valid_data, int(self.config.data.eval_windows), self.seq_len + 1)
        ce, aux, fractions, gates = jax.device_get(self._eval(params, model_state, tokens))
        scalars = {"valid_loss": float(ce), "valid_bits_per_byte": float(ce) / np.log(2)}
        scalars.update({f"valid_{k}": float(v) for k, v in aux.items()})
        images = {}
        if fractions:
            images["expert_load"] = plots.expert_load_histograms(fractions)
            n = min(48, self.seq_len)
            labels = [chr(c) if 32 < c < 127 else "·" for c in tokens[0, :n]]
            images["token_experts"] = plots.token_expert_heatmaps([np.asarray(g)[:n] for g in gates], labels)
        return scalars, images


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


class ViTMoEDigits:
    """Classify scikit-learn's digits with ViT-MoE (V-MoE style: MoE every other block)."""

    def __init__(self, config):
        from netlab.data import digits
        from netlab.moe.vit import ViTMoE
        from netlab.train import precision

        self.config = config
        m = config.model
        self.model = ViTMoE(num_classes=10, patch=m.patch, width=m.width, depth=m.depth, num_heads=m.num_heads,
                            mlp_hidden=m.mlp_hidden, moe_every=m.moe_every, moe=moe_kwargs(m.moe),
                            dtype=precision.compute_dtype(config.train))
        self.digits = digits
        self.data = digits.load(config.data.test_fraction)
        self.batch_size = int(config.train.batch_size)
        self._eval = jax.jit(self._eval_fn)

    def init_variables(self, rng):
        return self.model.init({"params": rng, "router": rng}, jnp.zeros((1, 8, 8, 1), jnp.float32), False)

    def batch_axes(self):
        return {"image": ("batch", None, None, None), "label": ("batch",)}

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step, process_index, process_count):
        idx = self.digits.epoch_batch_indices(len(self.data["train_y"]), self.batch_size, self.config.seed, step)
        idx = self.digits.process_rows(idx, process_index, process_count)
        return {"image": self.data["train_x"][idx], "label": self.data["train_y"][idx]}

    def _apply(self, params, model_state, image, rng, train, capture=False):
        mutable = (["router_bias"] if train and "router_bias" in model_state else []) + (
            ["intermediates"] if capture else [])
        out = self.model.apply({"params": params, **model_state}, image, train, rngs={"router": rng},
                               mutable=mutable or False)
        return out if mutable else (out, {})

    def loss_fn(self, params, model_state, batch, rng, train):
        (logits, aux), updates = self._apply(params, model_state, batch["image"], rng, train)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        metrics = dict(mean_aux(aux), cross_entropy=ce, accuracy=(logits.argmax(-1) == batch["label"]).mean())
        coef = self.config.loss
        loss = ce + coef.load_balance * metrics["load_balance"] + coef.z_loss * metrics["z_loss"]
        new_state = dict(model_state)
        if "router_bias" in updates:
            new_state["router_bias"] = updates["router_bias"]
        return loss, (metrics, new_state)

    def _eval_fn(self, params, model_state, image):
        (logits, aux), updates = self._apply(params, model_state, image, jax.random.key(0), False, capture=True)
        gates = [g[0][0] for _, g in sorted(_collect(updates.get("intermediates", {}), "gates"))]
        return logits.argmax(-1), mean_aux(aux), [a["expert_fraction"] for a in aux], gates

    def evaluate(self, params, model_state, step, workdir):
        pred, aux, fractions, gates = jax.device_get(self._eval(params, model_state, self.data["test_x"]))
        scalars = {"test_accuracy": float((pred == self.data["test_y"]).mean())}
        scalars.update({f"test_{k}": float(v) for k, v in aux.items()})
        images = {"expert_load": plots.expert_load_histograms(fractions),
                  "token_experts": plots.token_expert_heatmaps([np.asarray(g) for g in gates])}
        return scalars, images

