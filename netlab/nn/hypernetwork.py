"""HyperNetworks: Ha, Dai & Le 2017 (ICLR), static and dynamic; and the magnitude-invariant
parametrisation (MIP) of Ortiz, Guttag & Dalca 2023 ("Magnitude Invariant Parametrizations
Improve Hypernetwork Learning").

A hypernetwork is a small network that generates the weights of a larger (main) one.

Static (Sec. 3.1, eq. 2), for convolution kernels. Each kernel tile of the main network has a
learned layer embedding z_j (N_z,); one hypernetwork, shared by all tiles, maps it in two linear
steps to the tile's kernel K_j (f x f x N_in x N_out):

    a_i = W_i z_j + B_i                     i = 1 .. N_in      (W_i: d x N_z)
    K_j^i = <W_out, a_i>^1 + B_out          (W_out: f x f x N_out x d, B_out shared over i)
    K_j = concat_i K_j^i

A layer whose channels are multiples of (N_in, N_out) is a grid of such tiles, each with its own
z (the paper's tiling for wide residual networks). `StaticHyperNetwork` is eq. 2, `HyperConv` a
convolution whose kernel it generates, `HyperConvStack` several such layers sharing one
hypernetwork (the only per-layer parameters are the z's: the paper's compression). Difference
from the paper: kernels use Flax's HWIO layout; W_out is initialised so that a generated kernel
has fan-in variance (1 / (f f N_in)) for unit-variance z, as an ordinary convolution would.

Dynamic (Sec. 3.2, HyperLSTM, eqs. 10-12): the weights change per input. Ha et al. generate a
per-example embedding z from a small network and scale the rows of a learned matrix with it,
which costs no more than the main layer:

    W(z) x = d(z) * (W x),   d(z) = W_d z,       b(z) = W_b z_b + b_0

`HyperMlp` is that rule without the recurrence, for a Transformer MLP (`model.mlp = "hyper"`): a
small network reads each token x, h = tanh(W_h x + b_h), and emits the embeddings z = W_z h + b_z
of both layers' row scales and biases. As in the authors' initialisation the z projections start
at zero weight with bias one (z_b: bias zero) and W_d at 1/N_z, so d(z) = 1 and b(z) = 0 at
initialisation: the layer starts as the plain two-layer MLP and learns its modulation.

MIP (Ortiz et al., Sec. 4): a hypernetwork h(gamma) of inputs gamma in [0, 1]^M (e.g.
regularisation weights) whose output magnitude follows the magnitude of gamma trains badly. MIP
(1) encodes each input with a constant-norm map, [cos(pi gamma / 2), sin(pi gamma / 2)] (squared
L2 norm M for every gamma; the paper's choice, default) or [gamma, 1 - gamma] (L1 sum M;
`encoding="linear"`), and (2) predicts the weights in residual form theta = theta_0 + W_out
h(enc gamma), where theta_0 (the output bias) starts as an independent Kaiming initialisation of
the main network's weights. For a backbone with zero biases and positively homogeneous
activations (LeakyReLU, as in the paper), the expected squared norm of W_out h(e) over the
initialisation is c * |e|^2 (each layer's pre-activation is, given its input, a centred Gaussian
of variance sigma^2 |input|^2), so under MIP it is the same for every gamma, whereas without the
encoding it is proportional to |gamma|^2. `MIPHyperNetwork` implements it (`encoding="none"`
gives the plain hypernetwork).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.nn import layers
from netlab.nn.registries import MLPS
from netlab.sharding import axes

ENCODINGS = ("cos_sin", "linear", "none")


class StaticHyperNetwork(nn.Module):
    """Eq. 2: a layer embedding z (..., z_dim) -> a kernel tile (..., f, f, in, out) (HWIO)."""

    kernel_size: int = 3
    in_channels: int = 16  # N_in of one tile
    out_channels: int = 16  # N_out of one tile
    z_dim: int = 64  # N_z
    hidden: int = 64  # d

    @nn.compact
    def __call__(self, z):
        f, n_in, n_out, d = self.kernel_size, self.in_channels, self.out_channels, self.hidden
        w_in = self.param(
            "w_in", nn.initializers.normal(self.z_dim**-0.5), (self.z_dim, n_in, d), jnp.float32
        )
        b_in = self.param("b_in", nn.initializers.zeros, (n_in, d), jnp.float32)
        w_out = self.param(
            "w_out",
            nn.initializers.normal(1.0 / math.sqrt(d * f * f * n_in)),
            (d, f, f, n_out),
            jnp.float32,
        )
        b_out = self.param("b_out", nn.initializers.zeros, (f, f, n_out), jnp.float32)
        a = jnp.einsum("...z,zid->...id", z, w_in) + b_in  # a_i = W_i z + B_i
        k = jnp.einsum("...id,dhwo->...hwio", a, w_out)  # <W_out, a_i>^1
        return k + b_out[..., :, :, None, :]  # + B_out, shared over the pieces i


def tile_kernels(hyper, z):
    """The full kernel from a grid of embeddings z (rows, cols, z_dim): tile (r, c) fills input
    channels r*N_in.. and output channels c*N_out.. (the paper's concatenation)."""
    tiles = hyper(z)  # (rows, cols, f, f, n_in, n_out)
    rows, cols, f, _, n_in, n_out = tiles.shape
    k = jnp.transpose(tiles, (2, 3, 0, 4, 1, 5))  # (f, f, rows, n_in, cols, n_out)
    return k.reshape(f, f, rows * n_in, cols * n_out)


class HyperConv(nn.Module):
    """A stride-1 SAME convolution (NHWC) whose kernel the shared `hyper` generates from this
    layer's grid of embeddings; channels must be multiples of the hypernetwork's tile."""

    hyper: StaticHyperNetwork
    in_features: int
    features: int

    def setup(self):
        h = self.hyper
        if self.in_features % h.in_channels or self.features % h.out_channels:
            raise ValueError(
                f"channels {self.in_features} -> {self.features}: not multiples of the "
                f"hypernetwork's tile {h.in_channels} -> {h.out_channels}"
            )
        grid = (self.in_features // h.in_channels, self.features // h.out_channels, h.z_dim)
        self.z = self.param("z", nn.initializers.normal(1.0), grid, jnp.float32)
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)

    def kernel(self):
        return tile_kernels(self.hyper, self.z)

    def __call__(self, x):
        k = self.kernel().astype(x.dtype)
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn) + self.bias


class HyperConvStack(nn.Module):
    """Convolutions in_features -> features[0] -> ... (ReLU between) sharing one hypernetwork."""

    in_features: int = 16
    features: tuple = (16, 16)
    kernel_size: int = 3
    tile: tuple = (16, 16)  # (N_in, N_out)
    z_dim: int = 64
    hidden: int = 64

    def setup(self):
        self.hyper = StaticHyperNetwork(
            self.kernel_size, self.tile[0], self.tile[1], self.z_dim, self.hidden
        )
        widths = (self.in_features, *self.features)
        self.convs = [HyperConv(self.hyper, a, b) for a, b in zip(widths[:-1], widths[1:])]

    def kernels(self):
        """Each layer's generated kernel (HWIO), for inspection and tests."""
        return [conv.kernel() for conv in self.convs]

    def __call__(self, x):
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = nn.relu(x)
        return x


@MLPS.register("hyper")
class HyperMlp(nn.Module):
    """The dynamic hypernetwork as a Transformer MLP: each token's own embedding rescales the
    rows of both layers and sets their biases (eqs. 10-12 without the recurrence)."""

    hidden: int | None = None  # None: 4 x the model width
    z_dim: int = 8  # N_z of each weight / bias embedding
    hyper_hidden: int = 16  # width of the small network that reads the token
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        width = x.shape[-1]
        hidden = self.hidden or 4 * width
        dt, nz = self.dtype, self.z_dim
        h = jnp.tanh(layers.dense(self.hyper_hidden, axes.EMBED, None, dt, name="hyper_in")(x))
        zeros, ones = nn.initializers.zeros, nn.initializers.ones
        z = nn.Dense(2 * nz, dtype=dt, name="z_w", kernel_init=zeros, bias_init=ones)(h)
        zb = nn.Dense(2 * nz, dtype=dt, name="z_b", kernel_init=zeros)(h)

        def scale(name, zi, n):  # d(z) = W_d z, 1 at init
            w = self.param(name, nn.initializers.constant(1.0 / nz), (nz, n), jnp.float32)
            return zi @ w.astype(dt)

        def bias(name, zi, n):  # W_b z_b (b_0 is the main layer's own bias)
            w = self.param(name, nn.initializers.normal(0.01), (nz, n), jnp.float32)
            return zi @ w.astype(dt)

        fc1 = layers.dense(hidden, axes.EMBED, axes.MLP, dt, name="fc1")(x)
        pre = scale("d1", z[..., :nz], hidden) * fc1 + bias("b1", zb[..., :nz], hidden)
        a = axes.constrain(nn.gelu(pre, approximate=True), axes.BATCH, axes.LENGTH, axes.MLP)
        fc2 = layers.dense(width, axes.MLP, axes.EMBED, dt, name="fc2")(a)
        return scale("d2", z[..., nz:], width) * fc2 + bias("b2", zb[..., nz:], width)


def encode(gamma, encoding: str = "cos_sin"):
    """MIP's input encoding of gamma in [0, 1]^M (last axis): (..., 2M), or gamma itself."""
    if encoding == "cos_sin":
        return jnp.concatenate([jnp.cos(jnp.pi * gamma / 2), jnp.sin(jnp.pi * gamma / 2)], -1)
    if encoding == "linear":
        return jnp.concatenate([gamma, 1.0 - gamma], -1)
    if encoding == "none":
        return gamma
    raise ValueError(f"encoding={encoding!r}; choose one of {', '.join(ENCODINGS)}")


class MIPHyperNetwork(nn.Module):
    """gamma (..., M) -> the main network's weights as a flat vector (..., num_weights):
    theta_0 + W_out LeakyReLU-MLP(encode(gamma)). `fan_in` gives theta_0's Kaiming scale (the
    main network's fan-in); `independent=False` drops theta_0 (a plain hypernetwork)."""

    num_weights: int
    hidden: tuple = (16, 16)
    encoding: str = "cos_sin"
    fan_in: int = 1
    independent: bool = True
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, gamma):
        h = encode(gamma, self.encoding)
        gain = math.sqrt(2.0 / (1.0 + self.negative_slope**2))  # Kaiming, LeakyReLU
        for i, width in enumerate(self.hidden):
            init = nn.initializers.variance_scaling(gain**2, "fan_in", "normal")
            h = nn.leaky_relu(
                nn.Dense(width, kernel_init=init, name=f"fc{i}")(h), self.negative_slope
            )
        theta0 = nn.initializers.normal(gain / math.sqrt(self.fan_in))
        out = nn.Dense(
            self.num_weights,
            use_bias=self.independent,
            kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
            bias_init=theta0,
            name="out",
        )
        return out(h)
