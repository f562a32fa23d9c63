"""CatGCN: bi-interaction pooling equals the brute-force sum of pairwise products over real fields;
the field graph P = (11ᵀ + pI)/(F + p) is row-stochastic (constant embeddings stay constant) and
matches a dense transcription; with K = 0 hops the model ignores the edges, with K > 0 it does
not."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import catgcn, padding


def test_bi_interaction_and_field_graph():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 6, 3))
    mask = rng.random((5, 6)) < 0.7
    with jax.enable_x64(True):
        fm, mix, const = jax.device_get(
            jax.jit(
                lambda e, m: (
                    catgcn.bi_interaction(e, m),
                    catgcn.field_graph_mix(e, m, 2.0),
                    catgcn.field_graph_mix(jnp.ones_like(e), m, 2.0),
                )
            )(jnp.asarray(e), jnp.asarray(mask))
        )
    for i in range(5):
        real = np.flatnonzero(mask[i])
        brute = sum((e[i, f] * e[i, g] for f, g in itertools.combinations(real, 2)), np.zeros(3))
        np.testing.assert_allclose(fm[i], brute, rtol=1e-12, atol=1e-12)
        f = len(real)
        p = (np.ones((f, f)) + 2.0 * np.eye(f)) / (f + 2.0)
        np.testing.assert_allclose(mix[i, real], p @ e[i, real], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mix[i, ~mask[i]], 0.0)
    np.testing.assert_allclose(const, mask[..., None] * np.ones(3), rtol=1e-12)


def test_zero_hops_ignores_edges():
    rng = np.random.default_rng(1)
    x = (rng.random((8, 10)) < 0.4).astype(np.float32)
    graphs = [
        padding.to_device(
            padding.from_edges(
                rng.integers(0, 8, 12),
                rng.integers(0, 8, 12),
                8,
                nodes=x,
                symmetrize=True,
                budget=padding.Budget(9, 32, 2),
            )
        )
        for _ in range(2)
    ]
    m0 = catgcn.CatGCN(hidden=4, num_classes=2, embed_dim=3, max_fields=5, hops=0)
    m2 = catgcn.CatGCN(hidden=4, num_classes=2, embed_dim=3, max_fields=5, hops=2)

    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), *graphs)

    @jax.jit
    def run(gs):
        p = nn.unbox(m0.init(jax.random.key(0), graphs[0], graphs[0].nodes))
        return [jax.vmap(lambda g: m.apply(p, g, g.nodes))(gs) for m in (m0, m2)]

    (a0, b0), (a2, b2) = (np.asarray(v)[:, :8] for v in run(both))
    np.testing.assert_allclose(a0, b0, rtol=1e-6)
    assert np.abs(a2 - b2).max() > 1e-4
