"""GNP pooling: sum at (p, q) = (1, 0), mean at (1, 1), max as p -> ∞ (within N^{1/p}); invariant
to node permutations within a graph and to padding rows."""

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from netlab.graph import gnp, padding

SIZES = (3, 5, 2)  # three graphs; batched with padding (one padding graph)


def batch(x, budget=padding.Budget(16, 8, 4)):
    gts = []
    for i, n in enumerate(SIZES):
        gts.append(
            jraph.GraphsTuple(
                nodes=x[sum(SIZES[:i]) : sum(SIZES[: i + 1])],
                edges=None,
                senders=np.zeros(0, np.int32),
                receivers=np.zeros(0, np.int32),
                globals=None,
                n_node=np.array([n]),
                n_edge=np.array([0]),
            )
        )
    return padding.batch(gts, budget, norms=False)


def test_special_values_permutation_and_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(sum(SIZES), 4)).astype(np.float32)
    g = batch(x)
    garbage = g.replace(nodes=np.where(g.node_mask[:, None], g.nodes, 77.0).astype(np.float32))
    perm = np.concatenate([rng.permutation(n) + sum(SIZES[:i]) for i, n in enumerate(SIZES)])
    gp = batch(x[perm])
    pq = jnp.array([[1.0, 0.0], [1.0, 1.0], [1000.0, 0.0], [2.5, 0.7]])

    @jax.jit
    def pool(graphs):
        def one(g, pq_):
            pos = neg = (pq_[0], pq_[1])
            return gnp.gnp_signed(g.nodes, g.node_graph, g.num_graphs, pos, neg, g.node_mask)

        return jnp.stack([jax.vmap(lambda r: one(gg, r))(pq) for gg in graphs])

    out = np.asarray(pool([padding.to_device(h) for h in (g, garbage, gp)]))[:, :, : len(SIZES)]
    seg = np.repeat(np.arange(len(SIZES)), SIZES)
    total = np.stack([x[seg == k].sum(0) for k in range(len(SIZES))])
    np.testing.assert_allclose(out[0, 0], total, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0, 1], total / np.array(SIZES)[:, None], rtol=1e-5, atol=1e-5)
    xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
    mx = np.stack([xp[seg == k].max(0) - xn[seg == k].max(0) for k in range(len(SIZES))])
    np.testing.assert_allclose(out[0, 2], mx, rtol=0, atol=2e-3 * np.abs(x).max())
    np.testing.assert_allclose(out[1], out[0], rtol=1e-6)  # garbage in padding rows
    np.testing.assert_allclose(out[2], out[0], rtol=1e-5, atol=1e-6)  # permuted nodes


def test_positive_inputs_max_bounds():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((6, 3)) + 0.1, jnp.float32)
    seg = jnp.zeros(6, jnp.int32)
    p = 8.0
    out = np.asarray(jax.jit(lambda x: gnp.gnp_segment(x, seg, 1, p, 0.0))(x))[0]
    mx = np.asarray(x).max(0)
    assert np.all(out >= mx * (1 - 1e-6)) and np.all(out <= mx * 6 ** (1 / p) * (1 + 1e-6))
