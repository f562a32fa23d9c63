"""RADD on bytes: the Task (netlab/train/task.py protocol) behind configs/diffusion/radd_text.py.

The data are the bytes of Python's `pydoc_data` documentation topics, joined and split exactly as
the MoE byte LM does (`netlab.moe.text`, re-read here because pillars do not import each other; a
test checks the two agree), so the bits per byte of this model and of the dense autoregressive LM
(`configs/moe/lm_tiny.py` with dense MLPs) are measured on the same held-out bytes.

Training minimises the lambda-DCE (`radd.lambda_dce`, nats per byte) of a time-free
`radd.RADDNet`. Evaluation reports `valid_bpb_bound`, the Gauss-Legendre estimate of the
negative ELBO in bits per byte (an upper bound on the model's NLL, comparable with the AR
model's exact bits per byte), and samples `diffusion.num_samples` sequences with the caching
sampler `diffusion.sampler` (a DISCRETE_SAMPLERS entry, default "radd_cached") and with
`diffusion.compare_with` ("" to skip), logging the network calls and wall seconds of each and the
first text sample.

Config: model.{width, depth, num_heads, mlp_ratio}; data.{seq_len, valid_fraction,
eval_windows}; diffusion.{sampler, compare_with, sample_steps, num_samples, elbo_points,
lambda_eps}.
"""

import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import radd
from netlab.diffusion.registries import DISCRETE_SAMPLERS
from netlab.errors import UserError
from netlab.nn import precision
from netlab.registry import check_range

log = logging.getLogger(__name__)
VOCAB = 256
MASK = VOCAB


@functools.lru_cache(maxsize=None)
def load_text(valid_fraction: float = 0.1):
    """(train, valid) uint8 bytes of the pydoc topics, the same split as `netlab.moe.text.load`."""
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    cut = int(len(data) * (1.0 - valid_fraction))
    return data[:cut], data[cut:]


def windows(data, starts, length):
    return np.stack([data[s : s + length] for s in starts]).astype(np.int32)


def bits_per_byte(nats_per_sequence, length: int):
    """Mean negative-ELBO nats per sequence -> bits per byte."""
    return float(np.mean(nats_per_sequence)) / (length * np.log(2))


class RADDText:
    def __init__(self, config, policy=None):
        policy = policy or precision.from_config(config.train)
        self.config = config
        m, d = config.model, config.diffusion
        self.seq_len = check_range("data.seq_len", int(config.data.seq_len), 1, integer=True)
        self.batch_size = check_range(
            "train.batch_size", int(config.train.batch_size), 1, integer=True
        )
        for key, lo in (("sample_steps", 1), ("num_samples", 0), ("elbo_points", 1)):
            check_range(f"diffusion.{key}", d[key], lo, integer=True)
        check_range("diffusion.lambda_eps", float(d.lambda_eps), 0.0, 0.5)
        check_range("data.eval_windows", config.data.eval_windows, 1, integer=True)
        for key in ("width", "depth", "num_heads", "mlp_ratio"):
            check_range(f"model.{key}", m[key], 1, integer=True)
        if m.width % m.num_heads:
            raise UserError(
                f"model.width={m.width} is not divisible by model.num_heads={m.num_heads}"
            )
        self.model = radd.RADDNet(
            vocab=VOCAB,
            width=m.width,
            depth=m.depth,
            num_heads=m.num_heads,
            max_len=self.seq_len,
            mlp_ratio=m.mlp_ratio,
            dtype=policy.compute_dtype,
        )
        self.train_data, self.valid_data = load_text(float(config.data.valid_fraction))
        names = [d.sampler] + ([d.compare_with] if d.compare_with else [])
        keys = ["diffusion.sampler", "diffusion.compare_with"]
        self.samplers = {n: DISCRETE_SAMPLERS.get(n, k) for n, k in zip(names, keys)}
        self._nelbo = jax.jit(self._nelbo_fn)
        self._sample = jax.jit(self._sample_fn, static_argnums=(1, 3))

    def init_variables(self, rng):
        return self.model.init(rng, jnp.zeros((1, self.seq_len), jnp.int32))

    def batch_axes(self):
        return {"tokens": ("batch", None)}

    def global_batch_size(self):
        return self.batch_size

    def train_batch(self, step):
        rng = np.random.default_rng([self.config.seed, step, 11])
        starts = rng.integers(0, len(self.train_data) - self.seq_len, size=self.batch_size)
        return {"tokens": windows(self.train_data, starts, self.seq_len)}

    def _log_probs(self, params, train=False):
        return lambda x: self.model.apply({"params": params}, x, train)

    def loss_fn(self, params, model_state, batch, rng, train):
        eps = float(self.config.diffusion.lambda_eps)
        x0 = batch["tokens"]
        dce = radd.lambda_dce(self._log_probs(params, train), rng, x0, MASK, eps) / self.seq_len
        loss = dce.mean()
        return loss, ({"dce_per_byte": loss}, model_state)

    def _nelbo_fn(self, params, tokens):
        points = int(self.config.diffusion.elbo_points)
        return radd.nelbo(self._log_probs(params), jax.random.key(0), tokens, MASK, points)

    def _sample_fn(self, params, num, key, name):
        steps = int(self.config.diffusion.sample_steps)
        fn = self.samplers[name]
        return fn(self._log_probs(params), key, num, self.seq_len, steps, MASK)

    def evaluate(self, params, model_state, step, workdir):
        count = int(self.config.data.eval_windows)
        starts = np.linspace(0, len(self.valid_data) - self.seq_len - 1, count).astype(np.int64)
        tokens = windows(self.valid_data, starts, self.seq_len)
        scalars = {"valid_bpb_bound": bits_per_byte(self._nelbo(params, tokens), self.seq_len)}
        num = int(self.config.diffusion.num_samples)
        if num:
            key = jax.random.key(self.config.seed)
            for i, name in enumerate(self.samplers):
                jax.block_until_ready(self._sample(params, num, key, name))  # compiled
                start = time.perf_counter()
                x, calls = jax.block_until_ready(self._sample(params, num, key, name))
                scalars[f"sample_seconds_{name}"] = time.perf_counter() - start
                scalars[f"sample_calls_{name}"] = float(calls)
                if i == 0:
                    text = bytes(np.asarray(x[0], np.uint8)).decode("utf-8", "replace")
                    log.info("RADD sample (%s) at step %d: %r", name, step, text)
        return scalars, {}
