"""NCN: common-neighbour counts and sums equal numpy's A @ A and (A_i ⊙ A_j) h; scores are
equivariant under node relabelling (with and without the common-neighbour term); the link split is
deterministic, disjoint, keeps held-out edges out of the training graph, and its negatives are
non-edges; Hits@K (strict, OGB) and MRR (ties count half) on hand-made scores."""

import flax.linen as nn
import jax
import networkx as nx
import numpy as np

from netlab.graph import link_eval, ncn, padding


def small_graph(perm=None, n=12):
    g = nx.gnp_random_graph(n, 0.35, seed=4)
    e = np.array(g.edges())
    x = np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32)
    if perm is not None:
        e, x = perm[e], x[np.argsort(perm)]
    a = np.zeros((n, n))
    a[e[:, 0], e[:, 1]] = a[e[:, 1], e[:, 0]] = 1
    return padding.from_edges(e[:, 0], e[:, 1], n, nodes=x, symmetrize=True), a, x


def test_common_neighbours_and_permutation_equivariance():
    n = 12
    perm = np.random.default_rng(1).permutation(n)
    hg, a, x = small_graph()
    hgp, _, _ = small_graph(perm)
    pairs = np.array([(i, j) for i in range(n) for j in range(n)], np.int32)
    h = np.random.default_rng(2).normal(size=(n + 1, 3)).astype(np.float32)
    models = [ncn.NCN(hidden=8, out=6, predictor_hidden=8, common_neighbours=c) for c in (1, 0)]

    both = jax.tree.map(lambda a, b: np.stack([a, b]), hg, hgp)  # equal padded shapes
    both_pairs = np.stack([pairs, perm[pairs]])

    @jax.jit
    def run(gs):
        g = jax.tree.map(lambda a: a[0], gs)
        rows = ncn.common_neighbour_rows(g, pairs)
        out = [rows.sum(1), rows @ h]
        for m in models:
            v = nn.unbox(m.init(jax.random.key(0), g, g.nodes, pairs))
            out.append(jax.vmap(lambda g, p: m.apply(v, g, g.nodes, p))(gs, both_pairs))
        return out

    counts, sums, (s_cn, s_cn_p), (s_h, s_h_p) = jax.tree.map(np.asarray, run(both))
    np.testing.assert_array_equal(counts, (a @ a).reshape(-1))
    want = np.stack([(a[i] * a[j]) @ h[:n] for i, j in pairs])
    np.testing.assert_allclose(sums, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_cn_p, s_cn, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_h_p, s_h, rtol=1e-5, atol=1e-5)
    assert np.abs(s_cn - s_h).max() > 1e-3  # the common-neighbour term changes the scores


def test_link_split_disjoint_deterministic_held_out_removed():
    g = nx.gnp_random_graph(80, 0.08, seed=0)
    e = np.array(g.edges())
    sp = link_eval.link_split(e[:, 1], e[:, 0], 80, 0.05, 0.1, seed=3)
    again = link_eval.link_split(e[:, 1], e[:, 0], 80, 0.05, 0.1, seed=3)
    assert all(np.array_equal(getattr(sp, f), getattr(again, f)) for f in ("train_pos", "val_neg"))
    m = g.number_of_edges()
    assert (len(sp.val_pos), len(sp.test_pos)) == (int(m * 0.05), int(m * 0.1))
    assert len(sp.train_pos) + len(sp.val_pos) + len(sp.test_pos) == m
    as_set = lambda p: set(map(tuple, p.tolist()))  # noqa: E731
    train, val, test = as_set(sp.train_pos), as_set(sp.val_pos), as_set(sp.test_pos)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == as_set(np.sort(e, 1))
    negs = as_set(sp.val_neg) | as_set(sp.test_neg)
    assert len(negs) == len(sp.val_neg) + len(sp.test_neg)
    assert all(u < v and not g.has_edge(u, v) for u, v in negs)
    tp = sp.train_pos
    graph = padding.from_edges(tp[:, 0], tp[:, 1], 80, symmetrize=True)
    msg = as_set(np.sort(np.stack([graph.senders, graph.receivers], 1)[graph.edge_mask], 1))
    assert msg == train  # the message-passing graph holds exactly the training edges


def test_hits_and_mrr():
    neg = np.array([0.9, 0.5, 0.5, 0.1])
    pos = np.array([1.0, 0.5, 0.6, 0.05])
    assert link_eval.hits_at_k(pos, neg, 1) == 0.25  # strictly above 0.9
    assert link_eval.hits_at_k(pos, neg, 2) == 0.5  # strictly above 0.5: a tie does not count
    assert link_eval.hits_at_k(pos, neg, 5) == 1.0  # fewer negatives than K
    # ranks: 1, (2 + 4) / 2 = 3, 2, 5
    np.testing.assert_allclose(link_eval.mrr(pos, neg), np.mean([1, 1 / 3, 1 / 2, 1 / 5]))
    own = np.array([[0.0], [0.5], [0.7], [0.0]])
    np.testing.assert_allclose(link_eval.mrr(pos, own), np.mean([1, 1 / 1.5, 1 / 2, 1]))
