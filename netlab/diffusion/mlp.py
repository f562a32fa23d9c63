"""A small residual MLP denoiser for low-dimensional data (the 2-D toy task).

Registered as `model.backbone="mlp"`. Each layer: h += Mlp(silu(LN(h) + c)), c the noise (and
class) embedding; with `remat_policy` each layer's MLP is rematerialised (`train.remat`).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.diffusion.registries import BACKBONES
from netlab.errors import UserError
from netlab.nn import layers
from netlab.sharding import axes


class MlpDenoiser(nn.Module):
    dim: int
    width: int = 128
    depth: int = 3
    num_classes: int = 0
    dtype: Any = jnp.float32
    remat_policy: Any = None

    @nn.compact
    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        fdt = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        c = layers.TimestepEmbedder(self.width, name="t_embed")(noise_cond)
        if self.num_classes:
            table = self.param(
                "label_embed",
                axes.param(nn.initializers.normal(0.02), axes.VOCAB, axes.EMBED),
                (self.num_classes + 1, self.width),
                fdt,
            )
            c = c + table[labels]
        mlp = layers.Mlp
        if self.remat_policy is not None:
            mlp = nn.remat(layers.Mlp, policy=self.remat_policy)
        h = layers.dense(self.width, None, axes.EMBED, self.dtype, name="inp")(x.astype(self.dtype))
        for i in range(self.depth):
            z = layers.layer_norm(self.dtype, name=f"ln{i}")(h) + c.astype(self.dtype)
            h = h + mlp(2 * self.width, self.dtype, name=f"mlp{i}")(nn.silu(z)[:, None])[:, 0]
        return layers.dense(self.dim, axes.EMBED, None, self.dtype, name="out")(h).astype(fdt)


@BACKBONES.register("mlp")
def build(m, *, data_shape, num_classes, policy) -> MlpDenoiser:
    """MlpDenoiser from `config.model` (width, depth) for vectors `data_shape` = (D,)."""
    if len(data_shape) != 1:
        raise UserError(
            f"model.backbone='mlp' needs vector data (D,), not shape "
            f"{tuple(data_shape)}; choose model.backbone='dit' or 'unet' for images"
        )
    width, depth = int(m.get("width", 128)), int(m.get("depth", 3))
    if width < 1 or depth < 0:
        raise UserError(
            f"model.width={width}, model.depth={depth}: expected width >= 1 and depth >= 0"
        )
    return MlpDenoiser(
        dim=int(data_shape[0]),
        width=width,
        depth=depth,
        num_classes=num_classes,
        dtype=policy.compute_dtype,
        remat_policy=policy.remat_policy,
    )
