"""Grouped matmul: the MegaBlocks-style tiled layout equals `jax.lax.ragged_dot` and a per-row numpy
loop, in values and gradients, for uneven group sizes including empty groups; the dropless layer
gives the same outputs with either implementation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.moe import experts, grouped
from netlab.moe.layer import MoEMLP


@pytest.mark.parametrize(
    "sizes,tile", [((5, 0, 17, 3, 0, 1), 4), ((26, 0, 0, 0, 0, 0), 8), ((4, 4, 4, 4, 5, 5), 0)]
)
def test_tiled_equals_ragged_dot_and_numpy(sizes, tile):
    sizes = np.array(sizes, np.int32)
    m, e, d, f = int(sizes.sum()), len(sizes), 6, 5
    x = jax.random.normal(jax.random.key(0), (m, d))
    w = jax.random.normal(jax.random.key(1), (e, d, f))
    group = np.repeat(np.arange(e), sizes)
    expect = np.einsum("md,mdf->mf", np.asarray(x), np.asarray(w)[group])
    fn = lambda impl: jax.jit(lambda x, w, s: grouped.grouped_matmul(x, w, s, impl, tile))
    for impl in ("tiled", "ragged_dot"):
        np.testing.assert_allclose(
            fn(impl)(x, w, jnp.asarray(sizes)), expect, rtol=1e-5, atol=1e-5, err_msg=impl
        )
    ct = jax.random.normal(jax.random.key(2), (m, f))
    grads = {
        impl: jax.grad(
            lambda x, w: jnp.sum(grouped.grouped_matmul(x, w, jnp.asarray(sizes), impl, tile) * ct),
            argnums=(0, 1),
        )(x, w)
        for impl in ("tiled", "ragged_dot")
    }
    for a, b in zip(grads["tiled"], grads["ragged_dot"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # an empty expert gets an exactly zero weight gradient
    for j in np.flatnonzero(sizes == 0):
        assert float(jnp.abs(grads["tiled"][1][j]).max()) == 0.0


def test_layout_bounds_padding():
    sizes = jnp.array([1, 0, 9, 30], jnp.int32)
    lay = grouped.TiledLayout(sizes, 40, 8)
    dest = np.asarray(lay.dest)
    assert len(set(dest.tolist())) == 40 and dest.max() < lay.blocks * 8
    # each row lands in a block owned by its own expert
    np.testing.assert_array_equal(
        np.asarray(lay.block_group)[dest // 8], np.repeat(np.arange(4), [1, 0, 9, 30])
    )


def test_dropless_layer_same_with_either_impl():
    x = jax.random.normal(jax.random.key(0), (2, 16, 8))
    m = MoEMLP(num_experts=8, hidden=12, k=2, backend="dropless", glu=True, activation="silu")
    p = nn.unbox(jax.jit(m.init)(jax.random.key(1), x)["params"])
    ys = [
        jax.jit(m.clone(grouped_matmul=i).apply)({"params": p}, x) for i in ("tiled", "ragged_dot")
    ]
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-5, atol=1e-5)


def test_unknown_impl_is_an_error():
    m = MoEMLP(num_experts=4, hidden=8, k=2, backend="dropless", grouped_matmul="megablocks")
    with pytest.raises(
        UserError, match="grouped_matmul='megablocks': choose one of auto, ragged_dot, tiled"
    ):
        m.init(jax.random.key(0), jnp.ones((1, 4, 8)))


def test_sort_by_expert_then_unsort_and_combine_is_the_weighted_sum():
    """The one sort-by-expert the dropless backends share: rows grouped by expert (stable, token
    order inside an expert) with the per-expert sizes; the inverse puts every row back and sums
    each token's k rows with its weights."""
    rng = np.random.default_rng(0)
    t, k, e, d = 7, 2, 4, 3
    index = np.stack([rng.choice(e, k, replace=False) for _ in range(t)])
    x = rng.standard_normal((t, d)).astype(np.float32)
    weight = rng.random((t, k)).astype(np.float32)
    rows, order, sizes = experts.sort_by_expert(jnp.asarray(index), jnp.asarray(x), e)
    pairs = sorted(((index[i, j], i, j) for i in range(t) for j in range(k)))  # (expert, token, j)
    np.testing.assert_array_equal(np.asarray(rows), x[[i for _, i, _ in pairs]])
    np.testing.assert_array_equal(np.asarray(sizes), np.bincount(index.reshape(-1), minlength=e))
    out = np.asarray(rows) * (1 + np.array([ex for ex, _, _ in pairs], np.float32))[:, None]
    y = experts.unsort_and_combine(jnp.asarray(out), order, jnp.asarray(weight))
    expect = np.einsum("tk,tkd->td", weight, x[:, None] * (1 + index[..., None]))
    np.testing.assert_allclose(y, expect, rtol=1e-6)
