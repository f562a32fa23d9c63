"""MixtureGrowth: Pham, Teterwak, Plummer et al. 2024, "MixtureGrowth: Growing Neural Networks by
Recombining Learned Parameters" (WACV).

Each layer's weight is a linear combination of a small bank of templates shared by the layer's
blocks (template mixing, after Savarese & Maire 2019): with K templates T_k of shape
(d_in, d_out), block (i, j) of the layer's weight is W_ij = sum_k a_ijk T_k. A small network is
one block per layer. Growing widens every layer by a factor g: the weight becomes a g x g grid of
blocks, all made from the SAME learned templates; only the coefficient vectors a_ij of the new
blocks are new. The paper's point is how to initialise them: a new block reuses a
learned linear combination (`init="copy"`: the coefficients of an existing block, cycled), so the
new units start from already-trained filters instead of random ones; `init="random"` draws fresh
coefficients (the baseline it compares against).

- `TemplateDense(features, num_templates, grid)`: the layer; params `templates` (K, d_in / grid,
  features / grid) and `coefficients` (grid, grid, K).
- `grow(params, factor, init, key)`: the params of the grown layer (grid * factor). The old
  blocks keep their coefficients, so the old weight is the top-left block of the new one, and a
  grown network fed the old input padded with zeros (and read on the old outputs) computes
  exactly what the old one did (`tests/nn/test_mixture_growth.py`). Templates are not copied:
  growing adds (grid factor)^2 K - grid^2 K coefficients and no template parameters.

Not implemented: the paper's training recipe around growth (when to grow, learning-rate reset) and
its choice among several learned combinations by importance scores; `copy` cycles through them.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

INITS = ("copy", "random")


def assemble(templates, coefficients):
    """(K, a, b) templates, (g, g, K) coefficients -> the (g a, g b) weight."""
    g = coefficients.shape[0]
    k, a, b = templates.shape
    blocks = jnp.einsum("ijk,kab->iajb", coefficients, templates)
    return blocks.reshape(g * a, g * b)


class TemplateDense(nn.Module):
    """Dense layer whose (d_in, features) kernel is a grid x grid block matrix of template mixes."""

    features: int
    num_templates: int = 4
    grid: int = 1

    @nn.compact
    def __call__(self, x):
        d_in = x.shape[-1]
        if d_in % self.grid or self.features % self.grid:
            raise ValueError(f"d_in={d_in}, features={self.features} not divisible by {self.grid}")
        templates = self.param(
            "templates",
            nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=0),
            (self.num_templates, d_in // self.grid, self.features // self.grid),
        )
        coefficients = self.param(
            "coefficients",
            nn.initializers.normal(self.num_templates**-0.5),
            (self.grid, self.grid, self.num_templates),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ assemble(templates, coefficients) + bias


def grow(params, factor: int, init: str = "copy", key=None):
    """Params of `TemplateDense(features * factor, grid=grid * factor)` from those of the small
    layer: same templates, old coefficients in the top-left blocks, new blocks per `init`."""
    if init not in INITS:
        raise ValueError(f"init={init!r}; choose one of {', '.join(INITS)}")
    old = params["coefficients"]
    g, _, k = old.shape
    n = g * factor
    if init == "copy":  # reuse the learned combinations, cycled over the old blocks
        flat = old.reshape(g * g, k)
        idx = jnp.arange(n * n) % (g * g)
        new = flat[idx].reshape(n, n, k)
    else:
        new = jax.random.normal(key, (n, n, k), old.dtype) * k**-0.5
    coefficients = new.at[:g, :g].set(old)
    bias = jnp.zeros(params["bias"].shape[0] * factor, params["bias"].dtype)
    bias = bias.at[: params["bias"].shape[0]].set(params["bias"])
    return {"templates": params["templates"], "coefficients": coefficients, "bias": bias}
