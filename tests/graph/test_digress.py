"""DiGress: cycle and spectral features, marginal transitions, equivariance, sampler output."""

import itertools

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.graph import digress as Dg


def nx_cycles(g, n):
    node, graph = np.zeros((n, 3)), np.zeros(4)
    for c in nx.simple_cycles(g, length_bound=6):
        if len(c) >= 3:
            graph[len(c) - 3] += 1
            if len(c) <= 5:
                node[c, len(c) - 3] += 1
    return node, graph


def dense(graphs, n):
    a = np.zeros((len(graphs), n, n), np.float32)
    for i, g in enumerate(graphs):
        m = nx.to_numpy_array(g, nodelist=range(g.number_of_nodes()))
        a[i, : len(m), : len(m)] = m
    return a


def test_cycle_counts_equal_networkx_simple_cycles():
    graphs = [nx.gnp_random_graph(8, 0.5, seed=s) for s in range(3)]
    graphs += [nx.complete_graph(6), nx.cycle_graph(5), nx.petersen_graph()]
    node, graph = jax.jit(Dg.cycle_counts)(dense(graphs, 10))
    for i, g in enumerate(graphs):
        want_node, want_graph = nx_cycles(g, 10)
        np.testing.assert_allclose(np.asarray(node[i]), want_node, atol=1e-3)
        np.testing.assert_allclose(np.asarray(graph[i]), want_graph, atol=1e-3)


def test_spectral_features_count_components_and_match_numpy():
    g = nx.disjoint_union(nx.path_graph(3), nx.cycle_graph(4))  # 2 components, 7 nodes
    adj = dense([g], 9)
    mask = np.arange(9)[None] < 7
    comp, vals, vecs = jax.jit(Dg.spectral_features)(adj, mask)
    ev = np.linalg.eigvalsh(nx.laplacian_matrix(g).toarray().astype(float))
    assert float(comp[0, 0]) == 2
    np.testing.assert_allclose(np.asarray(vals[0]), ev[2:7] / 7, atol=1e-5)
    assert np.all(np.asarray(vecs)[0, 7:] == 0)


def test_marginal_transitions_keep_the_type_marginals_at_every_t():
    ab = jnp.asarray(Dg.cosine_alpha_bar(20), jnp.float32)
    m = jnp.asarray([0.7, 0.2, 0.1])
    q = jax.jit(jax.vmap(lambda a: Dg.qbar(a, m)))(ab)  # [T+1, K, K]
    np.testing.assert_allclose(np.asarray(q.sum(-1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m @ q), np.broadcast_to(m, (21, 3)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(Dg.q_marginal(m, ab, m)), m + 0 * q[:, 0], atol=1e-6)


def test_reverse_step_is_bayes_rule_for_one_hot_x0():
    m = np.array([0.6, 0.3, 0.1])
    a_t, a_s = 0.5, 0.8
    beta = 1 - a_t / a_s
    q_t = (1 - beta) * np.eye(3) + beta * m[None]
    qbar_s = a_s * np.eye(3) + (1 - a_s) * m[None]
    pairs = np.array(list(itertools.product(range(3), range(3))))
    got = jax.jit(Dg.reverse_probs)(pairs[:, 0], jnp.eye(3)[pairs[:, 1]], a_t, a_s, m)
    for (z_t, x0), row in zip(pairs, np.asarray(got)):
        want = q_t[:, z_t] * qbar_s[x0]
        np.testing.assert_allclose(row, want / want.sum(), atol=1e-6)


def random_params(shapes, seed=0):
    """Parameters of the right shapes without compiling ``init`` (any values test equivariance)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)


def test_denoiser_is_permutation_equivariant():
    rng = np.random.default_rng(1)
    n, pad = 7, 1
    g = nx.gnp_random_graph(n, 0.5, seed=3)
    e = dense([g], n + pad).astype(np.int32)
    x = np.zeros((1, n + pad), np.int32)
    mask = np.arange(n + pad)[None] < n
    perm = np.concatenate([rng.permutation(n), [n]])
    model = Dg.DiGress(num_node_types=1, dx=8, de=4, dy=4, num_layers=1, heads=2)
    t = jnp.full((2,), 0.3)
    params = random_params(jax.eval_shape(model.init, jax.random.key(0), x, e, t[:1], mask))
    xs, es = np.concatenate([x, x[:, perm]]), np.concatenate([e, e[:, perm][:, :, perm]])
    lx, le = jax.jit(lambda a, b: model.apply(params, a, b, t, mask.repeat(2, 0)))(xs, es)
    lx, le = np.asarray(lx), np.asarray(le)
    assert np.abs(le[0, :n, :n]).std() > 1e-3  # not trivially constant
    np.testing.assert_allclose(lx[1], lx[0][perm], atol=1e-4)
    np.testing.assert_allclose(le[1], le[0][perm][:, perm], atol=1e-4)
    np.testing.assert_allclose(le, le.transpose(0, 2, 1, 3), atol=1e-6)


def test_sampled_adjacency_is_symmetric_with_an_empty_diagonal():
    """The sampler itself symmetrises: fed deliberately asymmetric edge logits it still returns
    symmetric graphs, with no self-loops and nothing on padding."""
    bias = jax.random.normal(jax.random.key(5), (1, 8, 8, 2)) * 3.0

    def apply(x, e, t, mask, cond):
        return jnp.zeros((*x.shape, 1)), bias + jax.nn.one_hot(e, 2)

    m_x, m_e = jnp.ones(1), jnp.asarray([0.6, 0.4])
    counts = jnp.asarray([5, 8, 3])
    _, es, ms = jax.jit(lambda k: Dg.sample(apply, k, counts, 8, Dg.cosine_alpha_bar(4), m_x, m_e))(
        jax.random.key(2)
    )
    es, ms = np.asarray(es), np.asarray(ms)
    np.testing.assert_array_equal(es, es.transpose(0, 2, 1))
    assert np.all(np.diagonal(es, axis1=1, axis2=2) == 0)
    np.testing.assert_array_equal(ms.sum(1), counts)
    assert np.all(es[~(ms[:, :, None] & ms[:, None, :])] == 0) and es.sum() > 0


def test_an_oracle_denoiser_samples_its_graph():
    """The sampler's sanity case: a denoiser that always predicts one clean graph G (confident
    logits) makes ancestral sampling end exactly at G (q(z_{t-1} | z_t, G) reaches G at t = 0), so
    the samples are planar-valid whenever G is."""
    from netlab.graph import gen_metrics, spectre_data

    g = spectre_data.planar_graph(np.random.default_rng(0), 16)
    target = jnp.asarray(nx.to_numpy_array(g, nodelist=range(16)), jnp.int32)

    def apply(x, e, t, mask, cond):
        return jnp.zeros((*x.shape, 1)), 30.0 * jax.nn.one_hot(jnp.broadcast_to(target, e.shape), 2)

    m_x, m_e = jnp.ones(1), jnp.asarray([0.75, 0.25])
    counts = jnp.full(3, 16)
    ab = Dg.cosine_alpha_bar(10)
    _, es, ms = jax.jit(lambda k: Dg.sample(apply, k, counts, 16, ab, m_x, m_e))(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(es), np.broadcast_to(target, es.shape))
    assert all(gen_metrics.is_planar_valid(s) for s in spectre_data.from_dense(es, ms))


def test_edge_noise_draws_each_unordered_pair_once():
    """At alpha_bar = 0 every real pair i < j is an edge with probability m_e[1] exactly (one draw
    per unordered pair, mirrored): two draws per pair combined would give 1 - (1 - p)^2 or
    asymmetric graphs. At alpha_bar = 1 the clean graph comes back unchanged."""
    b, n, p = 400, 6, 0.3
    e0 = np.zeros((b, n, n), np.int32)
    e0[:, 0, 1] = e0[:, 1, 0] = 1
    mask = np.arange(n)[None] < np.r_[np.full(b // 2, n), np.full(b // 2, 4)][:, None]
    m_x, m_e = jnp.ones(1), jnp.asarray([1 - p, p])
    x0 = np.zeros(mask.shape, np.int32)

    def noise(key, ab):
        return Dg.apply_noise(key, x0, e0, mask, jnp.full((b,), ab), m_x, m_e)[1]

    e_t, e_same = jax.jit(jax.vmap(noise, (None, 0)))(jax.random.key(3), jnp.asarray([0.0, 1.0]))
    e_t = np.asarray(e_t)
    np.testing.assert_array_equal(e_same, e0 * (mask[:, :, None] & mask[:, None, :]))
    np.testing.assert_array_equal(e_t, e_t.transpose(0, 2, 1))
    upper = np.triu(np.ones((n, n), bool), 1) & mask[:, :, None] & mask[:, None, :]
    rate = e_t[upper].mean()  # 400 graphs, 4200 pairs: standard error 0.007
    assert abs(rate - p) < 0.03 and abs(rate - (1 - (1 - p) ** 2)) > 0.15
    assert np.all(e_t[~(mask[:, :, None] & mask[:, None, :])] == 0)
