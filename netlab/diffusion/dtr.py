"""DTR: Denoising Task Routing, timestep-dependent channel masks on DiT's blocks, no new parameters.

Park et al. 2024, "Denoising Task Routing for Diffusion Models" (ICLR, the routing section): each
of the T = 1000 timesteps t gets a binary channel mask m_t in {0, 1}^C that activates a window of
n = floor(beta * C) consecutive channels (beta: the sharing ratio, 0.8) starting at
round((t / (T - 1))^alpha * (C - n)) (alpha = 4: the window slides fastest at large t), so
adjacent timesteps share all but a few channels and distant ones share fewer. As in the authors'
code, the mask gates what every block's branches read and the branch outputs update all channels:
block(x) is replaced by block(x * m_t) + x * (1 - m_t) = x + Delta(x * m_t).

`DTR` is `netlab.diffusion.dit.DiT` with the identical parameter tree: it runs DiT's own forward
and masks around each `block{i}` call with a Flax method interceptor. beta = 1 gives all-ones masks
and DiT bit for bit. netlab's backbones see the noise level, not an integer timestep: the timestep
is taken as t = round(u (T - 1)) with u the time at which the cosine schedule (DTR's default)
reaches the network's log-SNR (exact for `diffusion.schedule="cosine"`), passed by the task as
noise_cond = -12.5 logSNR (`noise_cond_scale`). The optional uncertainty-weighted loss per
timestep cluster (their ANT-UW) is not implemented.
"""

import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.diffusion import dit
from netlab.diffusion.dit import DiT
from netlab.errors import UserError
from netlab.nn.blocks import AdaLNZeroBlock


def _is_block(context) -> bool:
    """A call of one of DiT's blocks `block{i}` (under remat: the inner, rematerialised call)."""
    return (
        isinstance(context.module, AdaLNZeroBlock)
        and context.method_name == "__call__"
        and re.fullmatch(r"block\d+", context.module.name or "") is not None
    )


def check(beta: float, alpha: float) -> None:
    if not 0.0 < beta <= 1.0:
        raise UserError(f"model.dtr_ratio={beta}: the sharing ratio must be in (0, 1], e.g. 0.8")
    if not alpha > 0.0:
        raise UserError(f"model.dtr_alpha={alpha}: the window exponent must be > 0, e.g. 4")


def window(t, channels: int, beta: float = 0.8, alpha: float = 4.0, num_timesteps: int = 1000):
    """(start, n) of the active channel window for integer timesteps t in [0, T - 1]."""
    n = int(math.floor(beta * channels))
    start = jnp.round((jnp.asarray(t) / (num_timesteps - 1)) ** alpha * (channels - n))
    return start.astype(jnp.int32), n


def masks(t, channels: int, beta: float = 0.8, alpha: float = 4.0, num_timesteps: int = 1000):
    """(..., C) float masks m_t for integer timesteps t: 1 on [start, start + n)."""
    start, n = window(t, channels, beta, alpha, num_timesteps)
    c = jnp.arange(channels)
    return ((c >= start[..., None]) & (c < start[..., None] + n)).astype(jnp.float32)


def timestep(noise_cond, noise_cond_scale: float = 12.5, num_timesteps: int = 1000):
    """Integer timestep round(u (T - 1)) of the noise level noise_cond = -scale * logSNR, with u
    the time at which the iDDPM cosine schedule (netlab's "cosine", offset 0.008) has that
    log-SNR: alphabar = sigmoid(logSNR) = cos^2((u + s) / (1 + s) pi / 2) / f(0), solved for u."""
    off = 0.008
    f0 = math.cos(off / (1 + off) * math.pi / 2) ** 2
    logsnr = -noise_cond / noise_cond_scale
    abar = jnp.clip(jax.nn.sigmoid(logsnr) * f0, 0.0, 1.0)
    u = (1 + off) * (2.0 / jnp.pi) * jnp.arccos(jnp.sqrt(abar)) - off
    return jnp.clip(jnp.round(u * (num_timesteps - 1)), 0, num_timesteps - 1).astype(jnp.int32)


class DTR(DiT):
    dtr_ratio: float = 0.8  # beta
    dtr_alpha: float = 4.0
    num_timesteps: int = 1000
    noise_cond_scale: float = 12.5

    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        check(self.dtr_ratio, self.dtr_alpha)
        t = timestep(noise_cond, self.noise_cond_scale, self.num_timesteps)
        m = masks(t, self.width, self.dtr_ratio, self.dtr_alpha, self.num_timesteps)
        m = m[:, None, :].astype(self.dtype)  # (B, 1, C)

        def route(next_fun, args, kwargs, context):
            if not _is_block(context):
                return next_fun(*args, **kwargs)
            h, *rest = args
            return next_fun(h * m, *rest, **kwargs) + h * (1 - m)

        with nn.intercept_methods(route):
            return super().__call__(x, noise_cond, labels, train)


def build(m, *, data_shape, num_classes, policy, sparse_mlp=None) -> DTR:
    """DiT from `config.model` (as `dit.build`) with `model.dtr_ratio` (0.8) and `model.dtr_alpha`
    (4). Not a registered backbone yet; a config names it by path:
    `--config.model.backbone=netlab.diffusion.dtr:build`."""
    base = dit.build(
        m, data_shape=data_shape, num_classes=num_classes, policy=policy, sparse_mlp=sparse_mlp
    )
    beta, alpha = float(m.get("dtr_ratio", 0.8)), float(m.get("dtr_alpha", 4.0))
    check(beta, alpha)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(DiT) if f.init}
    fields.pop("parent", None), fields.pop("name", None)
    return DTR(**fields, dtr_ratio=beta, dtr_alpha=alpha)
