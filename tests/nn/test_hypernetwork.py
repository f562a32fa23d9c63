"""HyperNetworks (Ha et al. 2017) and MIP (Ortiz et al. 2023).

- Static: the hypernetwork's kernels are eq. 2 (a numpy transcription, tiles concatenated), and the
  layer's output is `lax.conv` with those kernels; one hypernetwork serves every layer.
- Dynamic (`mlp:hyper`): at initialisation d(z) = 1 and b(z) = 0, so it equals the plain MLP with
  the same weights; one optimizer step lowers a loss and moves the zero-initialised z maps.
- MIP: for a bias-free LeakyReLU hypernetwork at initialisation E |W_out h(e)|^2 = c |e|^2 (see
  the module docstring). So the plain hypernetwork's output magnitude follows |gamma| (exactly:
  it is positively homogeneous), while MIP's cos/sin encoding has |e|^2 = M for every gamma and
  the expected magnitude is the same for a small and a large gamma (checked over 2048 inits).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.nn import hypernetwork as hn
from netlab.nn import layers
from netlab.nn.registries import MLPS

RNG = np.random.default_rng(0)


def _params(module, *args):
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args))
    return jax.tree.map(lambda s: RNG.normal(0, 0.5, s.shape).astype(np.float32), shapes)


def _eq2(z, p):
    """Ha et al. eq. 2 for one embedding z (N_z,), then the tile in HWIO."""
    a = np.stack([p["w_in"][:, i, :].T @ z + p["b_in"][i] for i in range(p["b_in"].shape[0])])
    k = np.stack([np.tensordot(a[i], p["w_out"], axes=(0, 0)) + p["b_out"] for i in range(len(a))])
    return k.transpose(1, 2, 0, 3)  # (N_in, f, f, N_out) -> (f, f, N_in, N_out)


def test_static_hypernetwork_conv_is_lax_conv_with_the_eq2_kernels():
    stack = hn.HyperConvStack(in_features=4, features=(8, 4), tile=(4, 4), z_dim=5, hidden=6)
    x = RNG.normal(size=(2, 6, 6, 4)).astype(np.float32)
    v = _params(stack, x)
    p = v["params"]
    assert set(p) == {"hyper", "convs_0", "convs_1"}  # one hypernetwork, per-layer z's only
    assert p["convs_0"]["z"].shape == (1, 2, 5) and p["convs_1"]["z"].shape == (2, 1, 5)

    run = jax.jit(lambda v: (stack.apply(v, x), stack.apply(v, method="kernels")))
    y, kernels = run(v)
    ref = []
    for conv in ("convs_0", "convs_1"):
        z = p[conv]["z"]
        tiles = [[_eq2(z[r, c], p["hyper"]) for c in range(z.shape[1])] for r in range(len(z))]
        rows = [np.concatenate(row, 3) for row in tiles]  # output channels within a row
        ref.append(np.concatenate(rows, 2))
    for k, k_ref in zip(kernels, ref):
        np.testing.assert_allclose(k, k_ref, rtol=1e-5, atol=1e-5)

    def conv(h, k, b):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(h, k, (1, 1), "SAME", dimension_numbers=dn) + b

    h = np.maximum(conv(x, ref[0], p["convs_0"]["bias"]), 0)
    np.testing.assert_allclose(y, conv(h, ref[1], p["convs_1"]["bias"]), rtol=1e-4, atol=1e-4)


def test_dynamic_hyper_mlp_starts_as_the_plain_mlp_and_trains():
    assert MLPS.get("hyper") is hn.HyperMlp
    mod = MLPS.get("hyper")(hidden=12, z_dim=3, hyper_hidden=5)
    plain = layers.Mlp(12)
    x = RNG.normal(size=(2, 4, 6)).astype(np.float32)
    target = RNG.normal(size=x.shape).astype(np.float32)
    v = _params(mod, x)
    p = v["params"]
    # the documented initialisation: z = 1 (zero weights, unit bias), z_b = 0, W_d = 1 / N_z
    p["z_w"] = {"kernel": np.zeros((5, 6), np.float32), "bias": np.ones(6, np.float32)}
    p["z_b"] = {"kernel": np.zeros((5, 6), np.float32), "bias": np.zeros(6, np.float32)}
    p["d1"], p["d2"] = np.full((3, 12), 1 / 3, np.float32), np.full((3, 6), 1 / 3, np.float32)
    tx = optax.sgd(0.1)

    @jax.jit
    def run(v):
        loss = lambda v: jnp.mean((mod.apply(v, x, train=True) - target) ** 2)  # noqa: E731
        before, g = jax.value_and_grad(loss)(v)
        up, _ = tx.update(g, tx.init(v))
        after = loss(optax.apply_updates(v, up))
        mine = {k: v["params"][k] for k in ("fc1", "fc2")}
        return mod.apply(v, x), plain.apply({"params": mine}, x), before, after, g

    y, y_plain, before, after, g = run(v)
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-5)
    assert after < before
    # the hypernetwork path gets gradient although its z maps start at zero weight
    assert np.abs(g["params"]["z_w"]["kernel"]).max() > 0
    assert np.abs(g["params"]["z_b"]["kernel"]).max() > 0


def test_mip_encoding_makes_the_expected_weight_magnitude_independent_of_gamma():
    gamma = RNG.uniform(0.5, 1.0, size=(3,)).astype(np.float32)
    small = 0.05 * gamma
    both = np.stack([small, gamma])
    grid = np.stack([gamma, small, np.zeros(3), np.ones(3)])
    inits = 1024

    def draws(encoding):
        """`inits` independent initialisations, drawn on the host: zero-mean Gaussian kernels of
        fan-in variance, zero hidden biases (the module's initialisers, whose exact variances the
        property does not depend on)."""
        mod = hn.MIPHyperNetwork(num_weights=32, hidden=(16, 16), encoding=encoding, fan_in=8)
        shapes = nn.unbox(jax.eval_shape(mod.init, jax.random.key(0), both))["params"]
        p = {}
        for name, leaf in shapes.items():
            k = leaf["kernel"].shape
            p[name] = {"kernel": RNG.normal(0, k[0] ** -0.5, (inits, *k)).astype(np.float32)}
            p[name]["bias"] = np.zeros((inits, k[1]), np.float32)
        return mod, p

    models = {e: draws(e) for e in hn.ENCODINGS}

    @jax.jit
    def run(params):
        out = {}
        for e, (mod, _) in models.items():
            delta = jax.vmap(lambda p: mod.apply({"params": p}, both))(params[e])  # W_out h(e)
            out[e] = delta, jnp.sum(delta**2, -1), jnp.sum(hn.encode(both, e) ** 2, -1)
        return out, hn.encode(grid, "cos_sin"), hn.encode(grid, "linear")

    out, cos_sin, linear = run({e: p for e, (_, p) in models.items()})
    # exact: |[cos, sin]|^2 = M and sum [gamma, 1 - gamma] = M for every gamma in [0, 1]^M
    np.testing.assert_allclose(np.sum(np.square(cos_sin), -1), 3.0, rtol=1e-6)
    np.testing.assert_allclose(np.sum(linear, -1), 3.0, rtol=1e-6)
    # plain: positively homogeneous, so every init scales its output by exactly 0.05
    delta = out["none"][0]
    np.testing.assert_allclose(delta[:, 0], 0.05 * delta[:, 1], rtol=1e-4, atol=1e-7)
    # E |W_out h(e)|^2 = c |e|^2 for every encoding
    for enc in hn.ENCODINGS:
        e_sq = out[enc][2]
        ratio = out[enc][1][:, 0].mean() / out[enc][1][:, 1].mean()
        np.testing.assert_allclose(ratio, e_sq[0] / e_sq[1], rtol=0.05)
    # so under MIP (cos/sin) the small and the large gamma get the same expected magnitude,
    # where the plain hypernetwork's is 400 times smaller for the small one
    assert abs(out["cos_sin"][1][:, 0].mean() / out["cos_sin"][1][:, 1].mean() - 1) < 0.05
