"""RevNet couplings (Gomez et al. 2017): inputs are reconstructed from outputs, the memory-saving
gradient (unrolled, and as a scan with a reverse-scan backward) equals ordinary backpropagation,
and its compiled temporary memory does not grow with depth while ordinary backpropagation's
does."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import layers, reversible
from netlab.nn.registries import MLPS

RNG = np.random.default_rng(0)


def _f(p, h):
    return jnp.tanh(h @ p["w"] + p["b"])


def _block_params(c):
    def one():
        return {
            "w": RNG.normal(0, 0.5, (c, c)).astype(np.float32),
            "b": RNG.normal(0, 0.1, c).astype(np.float32),
        }

    return one(), one()


def _loss(run, fns, params, x1, x2):
    y1, y2 = run(fns, params, x1, x2)
    return jnp.sum(jnp.sin(y1) * y2)


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct_and_grads(fns, params, x1, x2):
    y1, y2 = reversible.reversible_sequence(fns, params, x1, x2)
    back = reversible.inverse_sequence(fns, params, y1, y2)
    grad = jax.grad(_loss, argnums=(2, 3, 4))
    return (
        back,
        grad(reversible.reversible_sequence, fns, params, x1, x2),
        grad(reversible.plain_sequence, fns, params, x1, x2),
    )


def test_inputs_are_reconstructed_and_gradients_equal_backprop():
    fns = tuple((_f, _f) for _ in range(4))
    params = tuple(_block_params(6) for _ in range(4))
    x1, x2 = (RNG.normal(size=(8, 6)).astype(np.float32) for _ in range(2))
    (b1, b2), rev, plain = _reconstruct_and_grads(fns, params, x1, x2)
    np.testing.assert_allclose(b1, x1, atol=1e-5)
    np.testing.assert_allclose(b2, x2, atol=1e-5)
    flat_rev, flat_plain = jax.tree.leaves(rev), jax.tree.leaves(plain)
    assert len(flat_rev) == 4 * 2 * 2 + 2  # every block's F and G parameters, and both inputs
    for a, b in zip(flat_rev, flat_plain):  # float32 reconstruction error, relative to the scale
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def _temp_bytes(depth, run, n=256, c=16):
    fns = tuple((_f, _f) for _ in range(depth))
    p = {
        "w": jax.ShapeDtypeStruct((c, c), jnp.float32),
        "b": jax.ShapeDtypeStruct((c,), jnp.float32),
    }
    params = tuple((p, p) for _ in range(depth))
    x = jax.ShapeDtypeStruct((n, c), jnp.float32)
    grad = jax.grad(functools.partial(_loss, run, fns), argnums=(0, 1, 2))
    return jax.jit(grad).lower(params, x, x).compile().memory_analysis().temp_size_in_bytes


def test_compiled_gradient_memory_does_not_grow_with_depth():
    rev2, rev8 = (_temp_bytes(d, reversible.reversible_sequence) for d in (2, 8))
    plain2, plain8 = (_temp_bytes(d, reversible.plain_sequence) for d in (2, 8))
    assert rev8 <= 1.1 * rev2, (rev2, rev8)  # activations recomputed, not stored
    assert plain8 >= 2 * plain2, (plain2, plain8)  # ordinary backprop keeps every block's
    assert rev8 < plain8


def test_flax_revnet_inverts_and_matches_backprop_and_is_an_mlp():
    mlp = functools.partial(layers.Mlp, hidden=8)
    blocks = tuple((mlp, mlp) for _ in range(2))
    rev, plain = reversible.RevNet(blocks), reversible.RevNet(blocks, reversible=False)
    scan = reversible.RevNet(blocks, scan=True)  # the same blocks as a scan, reverse-scan backward
    x = RNG.normal(size=(2, 3, 8)).astype(np.float32)
    shapes = nn.unbox(jax.eval_shape(rev.init, jax.random.key(0), x))
    variables = jax.tree.map(lambda s: RNG.normal(0, 0.5, s.shape).astype(np.float32), shapes)

    @jax.jit
    def run(variables):
        y = rev.apply(variables, x)

        def loss(m, v, x):
            return jnp.sum(jnp.cos(m.apply(v, x)))

        return (
            y,
            rev.apply(variables, y, method="inverse"),
            jax.grad(loss, argnums=(1, 2))(rev, variables, x),
            jax.grad(loss, argnums=(1, 2))(plain, variables, x),
            scan.apply(variables, x),
            jax.grad(loss, argnums=(1, 2))(scan, variables, x),
        )

    y, back, g_rev, g_plain, y_scan, g_scan = run(variables)
    np.testing.assert_allclose(y_scan, y, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    assert y.shape == x.shape and not np.allclose(y, x)
    np.testing.assert_allclose(back, x, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_rev), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    # as a Transformer MLP (model.mlp = "revnet"): (..., embed) -> (..., embed)
    layer = MLPS.get("revnet")(depth=2)
    assert layer.__class__ is reversible.ReversibleMlp
    lvars = jax.eval_shape(layer.init, jax.random.key(0), x)
    assert jax.eval_shape(functools.partial(layer.apply, train=True), lvars, x).shape == x.shape
