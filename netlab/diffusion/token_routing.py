"""Dynamic token routing for DiT: a learned per-token gate in front of every block, under a budget.

Ma, Fei & Huang 2023, "DiT: Efficient Vision Transformers with Dynamic Token Routing" (ICCV; the
reading list's "dynamic token routing for ViT/DiT"): every token chooses its path through the
network by differentiable per-token gates, and a budget constraint on the expected compute cuts
FLOPs. No code of that paper is public and its gate and budget formulas are not given in its
abstract, so this is netlab's reading, carried over to the diffusion DiT. Of the paper's paths
(Transformer block, down-scaling patch embedding, identity) only block and identity apply to a
denoiser, whose output needs every token at full resolution: block i either updates a token or
passes it on unchanged.

- Gate: a router per block, logit_i(x, c) = w_i . x_token + u_i . silu(c) + b_i (the token and
  the noise-level/class conditioning c, so routing can depend on the noise level, as DyDiT's
  timestep-wise width does), b_i = `gate_init` (2: blocks start almost always on).
- Training: a relaxed Bernoulli gate (the binary Gumbel-softmax of Jang et al. 2017 / Maddison et
  al. 2017) soft = sigmoid((logit + L) / temperature), L ~ Logistic(0, 1), with a straight-through
  hard value: g = [soft > 1/2] + soft - stop_gradient(soft). The block output is
  g * block(x) + (1 - g) * x, per token.
- Budget loss: weight * sum over blocks of (fraction of the batch's tokens the block runs on -
  budget)^2, the squared keep-ratio penalty of DynamicViT (Rao et al. 2021, Eq. 12, one term per
  stage) on the fraction of token-block passes (all DiT blocks cost the same per token); each
  block sows its term to `aux/routing_budget`, which the task adds to its loss. The realised
  fraction is logged as `aux/routing_compute`.
- Evaluation: hard routing, g = [logit > 0].
- Budget 1 ("full budget") is the dense DiT: every gate is open by definition, no router is built,
  and the model is `netlab.diffusion.dit.DiT` itself. Gates that are all open give DiT bit for
  bit (the gated sum g out + (1 - g) x with g in {0, 1} is exact), gates that are all closed DiT
  without its blocks.

Static shapes: the block still runs on every token and the gate selects per token, so the saving
is counted (what a gather-based kernel would skip), not realised; a token that skips a block still
serves as a key/value to the tokens that run it (the block's input is the whole sequence, as in
the dense DiT). The model is DiT with `block_cls` = `GatedBlock` (DiT's block plus its router),
so `train.remat` rematerialises the gate with the block.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.diffusion import dit
from netlab.diffusion.dit import DiT
from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.nn import aux, layers
from netlab.nn.blocks import AdaLNZeroBlock
from netlab.registry import check_range


def gate(logit, train: bool, key=None, temperature: float = 1.0):
    """Per-token gate: hard [logit > 0] at evaluation; in training the straight-through relaxed
    Bernoulli, forward value [logit + L > 0] (exactly 0 or 1), gradient that of the soft gate."""
    if not train:
        return (logit > 0).astype(logit.dtype)
    noise = jax.random.logistic(key, logit.shape, logit.dtype)
    soft = jax.nn.sigmoid((logit + noise) / temperature)
    hard = (soft > 0.5).astype(soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))


class GatedBlock(AdaLNZeroBlock):
    """DiT's block behind a per-token gate: g * block(x) + (1 - g) * x."""

    budget: float = 0.7  # target fraction of the tokens each block runs on
    weight: float = 1.0  # budget loss weight (per block)
    temperature: float = 1.0
    gate_init: float = 2.0  # router bias at init: sigmoid(2) = 0.88 of the tokens run the block

    @nn.compact
    def __call__(self, x, c, train: bool = False):
        bias = nn.initializers.constant(self.gate_init)
        logit = nn.Dense(1, kernel_init=layers.zeros, bias_init=bias, name="router")(
            x.astype(jnp.float32)
        )[..., 0]
        route_c = nn.Dense(1, use_bias=False, kernel_init=layers.zeros, name="router_c")
        logit = logit + route_c(nn.silu(c))
        g = gate(logit, train, self.make_rng("router") if train else None, self.temperature)
        out = super().__call__(x, c, train)
        used = jnp.mean(g)
        aux.sow_metric(self, "routing_compute", jax.lax.stop_gradient(used))
        if train:
            aux.sow_loss(self, "routing_budget", self.weight * (used - self.budget) ** 2)
        gd = g[..., None].astype(out.dtype)
        return gd * out + (1 - gd) * x


@functools.lru_cache(maxsize=None)
def gated_block(budget: float, weight: float = 1.0, temperature: float = 1.0, gate_init=2.0):
    """A `GatedBlock` class with these settings (DiT builds its blocks from a class)."""
    if budget >= 1.0:
        return AdaLNZeroBlock

    settings = (budget, weight, temperature, gate_init)

    class Gated(GatedBlock):
        budget: float = settings[0]
        weight: float = settings[1]
        temperature: float = settings[2]
        gate_init: float = settings[3]

    return Gated


def check(budget: float, weight: float, temperature: float) -> None:
    check_range("model.routing_budget", budget, 0.0, 1.0)
    if budget <= 0.0:
        raise UserError(f"model.routing_budget={budget}: expected a fraction in (0, 1], e.g. 0.7")
    check_range("model.routing_weight", weight, 0.0)
    if not temperature > 0.0:
        raise UserError(f"model.routing_temperature={temperature}: expected > 0, e.g. 1.0")


@BACKBONES.register("token_routing")
def build(m, *, data_shape, num_classes, policy, sparse_mlp=None) -> DiT:
    """DiT from `config.model` (as `dit.build`) with gated blocks: `model.routing_budget` (0.7),
    `model.routing_weight` (1.0), `model.routing_temperature` (1.0)."""
    base = dit.build(
        m, data_shape=data_shape, num_classes=num_classes, policy=policy, sparse_mlp=sparse_mlp
    )
    budget = float(m.get("routing_budget", 0.7))
    weight = float(m.get("routing_weight", 1.0))
    temperature = float(m.get("routing_temperature", 1.0))
    check(budget, weight, temperature)
    return base.clone(block_cls=gated_block(budget, weight, temperature))
