"""The static-shape graph utilities and the message-passing core against numpy oracles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.graph import graphs as G
from netlab.graph import padding


def random_graph(rng, n, e, f=5):
    s, r = rng.integers(0, n, e), rng.integers(0, n, e)
    x = rng.normal(size=(n, f)).astype(np.float32)
    return s, r, x


def test_canonical_edges_sorted_dedup_no_self_loops():
    s, r, w, _ = padding.canonical_edges([0, 1, 1, 2, 2, 0], [1, 0, 0, 2, 0, 1], 3, symmetrize=True)
    assert np.all(s != r)
    assert np.all(np.diff(r.astype(np.int64) * 3 + s) > 0)  # strictly sorted by (receiver, sender)
    assert {(int(a), int(b)) for a, b in zip(s, r)} == {(0, 1), (1, 0), (2, 0), (0, 2)}


def test_gcn_propagation_equals_dense_matrix():
    rng = np.random.default_rng(0)
    s, r, x = random_graph(rng, 12, 40)
    g = padding.from_edges(s, r, 12, nodes=x, symmetrize=False)
    out = G.normalized_adjacency_matmul(padding.to_device(g), jnp.asarray(g.nodes))
    cs, cr, cw, _ = padding.canonical_edges(s, r, 12)
    dense = padding.dense_gcn_matrix(cs, cr, cw, 12) @ x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(out)[:12], dense, rtol=1e-5, atol=1e-5)
    # padding rows hold the padding node only: its features are zero, so its output is zero
    assert np.all(np.asarray(out)[12:] == 0)


def test_host_norm_equals_device_norm():
    rng = np.random.default_rng(1)
    s, r, _ = random_graph(rng, 9, 30)
    g = padding.from_edges(s, r, 9, symmetrize=True)
    e_host, s_host = g.norm["gcn_edge"], g.norm["gcn_self"]
    e_dev, s_dev = G.gcn_norm(
        jnp.asarray(g.senders),
        jnp.asarray(g.receivers),
        jnp.asarray(g.edge_weight),
        g.num_nodes,
        xp=jnp,
    )
    np.testing.assert_allclose(e_host, e_dev, rtol=1e-6)
    np.testing.assert_allclose(s_host, s_dev, rtol=1e-6)
    assert np.all(e_host[~g.edge_mask] == 0)


def test_padding_keeps_sortedness_and_isolates_padding():
    graphs = []
    rng = np.random.default_rng(2)
    for n in (4, 7, 3):
        s, r, w, _ = padding.canonical_edges(
            rng.integers(0, n, 10), rng.integers(0, n, 10), n, symmetrize=True
        )
        graphs.append(
            jraph.GraphsTuple(
                nodes=rng.normal(size=(n, 3)).astype(np.float32),
                edges=None,
                senders=s,
                receivers=r,
                globals=None,
                n_node=np.array([n]),
                n_edge=np.array([len(s)]),
            )
        )
    g = padding.batch(graphs, padding.Budget(32, 64, 8))
    n_real = 14
    assert g.sorted_receivers and np.all(np.diff(g.receivers) >= 0)
    pad_edges = ~g.edge_mask
    assert np.all(g.senders[pad_edges] == n_real) and np.all(g.receivers[pad_edges] == n_real)
    assert np.all(g.senders[g.edge_mask] < n_real) and np.all(g.receivers[g.edge_mask] < n_real)
    assert g.node_mask.sum() == n_real and g.graph_mask.sum() == 3
    np.testing.assert_array_equal(g.node_graph[:n_real], np.repeat([0, 1, 2], [4, 7, 3]))
    assert g.n_node.sum() == 32 and g.n_edge.sum() == 64


def test_propagate_aggregations_match_numpy():
    rng = np.random.default_rng(3)
    s, r, x = random_graph(rng, 10, 35, f=3)
    g = padding.from_edges(s, r, 10, nodes=x)
    gd = padding.to_device(g)
    msgs = G.gather(gd, jnp.asarray(g.nodes))
    cs, cr = g.senders[g.edge_mask], g.receivers[g.edge_mask]
    for aggr in G.AGGREGATIONS:
        out = np.asarray(G.propagate(gd, msgs, aggr=aggr))[:10]
        for i in range(10):
            rows = x[cs[cr == i]]
            if len(rows) == 0:
                expect = np.zeros(3)
            else:
                expect = {"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0)}[aggr]
            np.testing.assert_allclose(out[i], expect, rtol=1e-5, atol=1e-6)


def test_segment_softmax_normalises_per_receiver_and_ignores_masked():
    logits = jnp.array([[1.0], [2.0], [3.0], [50.0], [0.5]])
    seg = jnp.array([0, 0, 1, 1, 2])
    mask = jnp.array([True, True, True, False, True])
    a = np.asarray(G.segment_softmax(logits, seg, 4, True, mask))[:, 0]
    np.testing.assert_allclose(a[:2], np.exp([1, 2]) / np.exp([1, 2]).sum(), rtol=1e-6)
    assert a[2] == pytest.approx(1.0) and a[3] == 0.0 and a[4] == pytest.approx(1.0)


def test_pool_ignores_padding():
    g = padding.batch(
        [
            jraph.GraphsTuple(
                nodes=np.ones((n, 2), np.float32) * (k + 1),
                edges=None,
                senders=np.zeros(0, np.int32),
                receivers=np.zeros(0, np.int32),
                globals=None,
                n_node=np.array([n]),
                n_edge=np.array([0]),
            )
            for k, n in enumerate((2, 3))
        ],
        padding.Budget(8, 8, 4),
    )
    gd = padding.to_device(g)
    x = (
        jnp.asarray(g.nodes) + jnp.asarray(~g.node_mask, jnp.float32)[:, None] * 100.0
    )  # poison padding rows
    np.testing.assert_allclose(np.asarray(G.pool(gd, x, "sum"))[:2], [[2, 2], [6, 6]])
    np.testing.assert_allclose(np.asarray(G.pool(gd, x, "mean"))[:2], [[1, 1], [2, 2]])
    np.testing.assert_allclose(np.asarray(G.pool(gd, x, "max"))[:2], [[1, 1], [2, 2]])


def test_bucket_ladder_picks_smallest_and_errors_in_one_line():
    ladder = padding.BucketLadder.from_max(256, 1024, 9, num_buckets=3)
    assert [b.n_node for b in ladder.budgets] == [64, 128, 256]
    assert ladder.fit(63, 200, 8).n_node == 64
    assert ladder.fit(64, 200, 8).n_node == 128
    assert ladder.fit(10, 300, 2).n_edge == 512
    with pytest.raises(padding.GraphBudgetError) as err:
        ladder.fit(300, 10, 2)
    msg = str(err.value)
    assert "\n" not in msg and "data.max_nodes" in msg and "300" in msg
    with pytest.raises(padding.GraphBudgetError):
        ladder.fit(10, 10, 9)  # no room for the padding graph


def test_edge_sharded_propagate_equals_single_device():
    rng = np.random.default_rng(4)
    s, r, x = random_graph(rng, 50, 300, f=4)
    g = padding.from_edges(s, r, 50, nodes=x, symmetrize=True, budget=padding.Budget(56, 640, 2))
    gd = padding.to_device(g)

    def f(graph):
        return G.normalized_adjacency_matmul(graph, graph.nodes)

    single = np.asarray(jax.jit(f)(gd))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    edge_sh, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    shardings = jax.tree.map(lambda v: edge_sh if v.shape and v.shape[0] == 640 else rep, gd)
    with jax.set_mesh(mesh), nn.logical_axis_rules((("edges", "data"), ("nodes", None))):
        gs = jax.device_put(gd, shardings)
        fn = jax.jit(f)
        sharded = fn(gs)
        hlo = fn.lower(gs).compile().as_text()
    assert gs.senders.sharding.spec == P("data")
    np.testing.assert_allclose(np.asarray(sharded), single, rtol=1e-5, atol=1e-6)
    assert "all-reduce" in hlo and "all-gather" not in hlo  # local partial sums, one all-reduce


def test_in_bounds_segment_ops_drop_the_bounds_check_from_their_gradient():
    """Ids promised < num_segments (a Graph's receivers): the scatter and its transpose's gather
    lose the bounds compare + select over the [E, ...] rows that the default "fill or drop" mode
    adds (with XLA's default flags none is left; the tests' opt-level-0 scatter loop keeps its
    own); the gradients are the same."""

    def loss(x, ids, in_bounds):
        s = G.segment_sum(x * x, ids, 5, True, in_bounds=in_bounds)
        return (s * s).sum()

    x, ids = jnp.arange(24.0).reshape(6, 4) / 10, jnp.array([0, 1, 1, 3, 4, 4])
    hlo = {
        b: jax.jit(jax.grad(loss), static_argnums=2).lower(x, ids, b).compile().as_text()
        for b in (False, True)
    }
    n = {b: (h.count("compare("), h.count("select(")) for b, h in hlo.items()}
    assert n[True][0] < n[False][0] and n[True][1] < n[False][1], n  # (5, 2) -> (3, 1) here
    np.testing.assert_allclose(jax.grad(loss)(x, ids, True), jax.grad(loss)(x, ids, False))
