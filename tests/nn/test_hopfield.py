"""Modern Hopfield layers (Ramsauer et al. 2021): one update of eq. (3) with beta = 1/sqrt(d) is
softmax attention; one step retrieves a stored pattern from a corrupted query; pooling is
invariant to the order of the stored set.

Parameters are drawn on the host from the shapes of `init` (compiling Flax's initialisers costs
more than these checks), and each test is one jitted call."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import hopfield
from netlab.nn.registries import MLPS

RNG = np.random.default_rng(0)


def _params(module, *args):
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args))
    return jax.tree.map(lambda s: RNG.normal(0, 0.5, s.shape).astype(np.float32), shapes)


def test_one_update_with_transformer_beta_is_softmax_attention():
    state = RNG.normal(size=(2, 3, 8)).astype(np.float32)
    stored = RNG.normal(size=(2, 5, 6)).astype(np.float32)
    mod = hopfield.Hopfield(num_heads=2, out_features=8)
    p = _params(mod, state, stored)["params"]

    @jax.jit
    def pairs(p):
        # eq. (3) alone, no projections: xi_new = X softmax(X^T xi / sqrt(d)) = attention(xi, X, X)
        xi, xs = state[:, :, None, :6], stored[:, :, None]  # (batch, length, 1 head, dim)
        plain = hopfield.hopfield_update(xi[:, :, 0], xs[:, :, 0], 6**-0.5)
        plain_ref = jax.nn.dot_product_attention(xi, xs, xs)[:, :, 0]
        # the Hopfield layer equals multi-head attention with q = R W_Q, k = Y W_K,
        # v = Y W_K W_V (scale 1/sqrt(head_dim) = beta), followed by the output map
        z = mod.apply({"params": p}, state, stored)
        q = jnp.einsum("bnd,dhk->bnhk", state, p["w_q"])
        k = jnp.einsum("bmd,dhk->bmhk", stored, p["w_k"])
        att = jax.nn.dot_product_attention(q, k, k @ p["w_v"])
        return plain, plain_ref, z, jnp.einsum("bnhj,hjd->bnd", att, p["w_o"])

    plain, plain_ref, z, z_ref = pairs(p)
    np.testing.assert_allclose(plain, plain_ref, atol=1e-5)
    np.testing.assert_allclose(z, z_ref, atol=1e-5)


def test_one_step_retrieves_a_stored_pattern_from_a_corrupted_query():
    patterns = RNG.normal(size=(16, 64)).astype(np.float32)  # random: well separated (Sec. 2)
    queries = np.where(RNG.random(patterns.shape) < 0.6, patterns, 0.0)  # 40% of each erased
    out = jax.jit(hopfield.retrieve, static_argnames="steps")(queries, patterns, 1.0, steps=1)
    np.testing.assert_allclose(out, patterns, atol=1e-3)
    # the corrupted queries are far from their patterns; retrieval is not the identity
    assert np.abs(queries - patterns).max() > 1.0


def test_pooling_is_permutation_invariant_and_layer_is_an_mlp():
    x = RNG.normal(size=(2, 7, 8)).astype(np.float32)
    perm = RNG.permutation(7)
    pool = hopfield.HopfieldPooling(num_queries=2, num_heads=2)
    layer = MLPS.get("hopfield")(num_patterns=4)
    more = hopfield.Hopfield(num_heads=1, update_steps=3)
    params = (_params(pool, x), _params(layer, x), _params(more, x, x))

    @jax.jit
    def run(params):
        pv, lv, hv = params
        return (
            pool.apply(pv, x),
            pool.apply(pv, x[:, perm]),
            layer.apply(lv, x, train=True),
            layer.apply(lv, x[:, :3]),
            more.apply(hv, x, x),
        )

    pooled, pooled_perm, y, y3, multi = run(params)
    assert pooled.shape == (2, 2, 8)
    np.testing.assert_allclose(pooled_perm, pooled, atol=1e-5)
    # HopfieldLayer: learned stored patterns, (..., embed) -> (..., embed), selectable as model.mlp
    assert MLPS.get("hopfield") is hopfield.HopfieldLayer
    assert y.shape == x.shape
    # tokens do not interact: each token's output depends on that token only
    np.testing.assert_allclose(y3, y[:, :3], atol=1e-5)
    assert multi.shape == x.shape and np.isfinite(np.asarray(multi)).all()
