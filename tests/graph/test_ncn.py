"""NCN: common-neighbour counts and sums equal numpy's A @ A and (A_i ⊙ A_j) h; scores are
equivariant under node relabelling (with and without the common-neighbour term); the link split is
deterministic, disjoint, keeps held-out edges out of the training graph, and its negatives are
non-edges; Hits@K (strict, OGB) and MRR (ties count half) on hand-made scores; each option of the
authors' code (puregcn, JK, dropouts, branch head, xlin, tailact, CN edge dropout, sparse host
triples) does what its docstring says, and bad combinations are one-line errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from netlab.errors import UserError
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


def test_authors_options_do_what_they_say():
    """The options of the authors' code (netlab/graph/ncn.py docstring), one property each."""
    n = 12
    hg, a, x = small_graph()
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], np.int32)
    keep = np.random.default_rng(3).random(hg.edge_mask.shape) < 0.6
    x2 = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    base = dict(hidden=6, out=6, predictor_hidden=6, num_layers=2)
    branch = dict(base, encoder="puregcn", jk=True, predictor="branch", predictor_ln=True)
    full = ncn.NCN(**branch, use_xlin=True, cn_edge_dropout=0.5)
    plain, no_cn = ncn.NCN(**branch), ncn.NCN(**branch, common_neighbours=False)
    gcn_xdp = ncn.NCN(**dict(base, num_layers=1), common_neighbours=False, input_dropout=1.0)
    enc_tdp = ncn.PureGCN(6, 1, tail_dropout=1.0)
    no_cn_keys = {"xij_0", "xij_1", "xij_3", "lin_0", "lin_1", "out"}

    def params(model):  # random parameters without compiling an init
        shapes = jax.eval_shape(
            lambda: nn.unbox(model.init(jax.random.key(0), hg, hg.nodes, pairs))
        )
        rng = np.random.default_rng(7)
        return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)["params"]

    p, v = params(full), params(gcn_xdp)
    pr = p["predictor"]
    pn = dict(p, predictor={k: v for k, v in pr.items() if "xlin" not in k})
    zero = {k: jax.tree.map(np.zeros_like, pr[k]) for k in ("xlin_2", "xlin_3")}
    p_xlin0 = dict(p, predictor=dict(pr, **zero))  # last Dense and LayerNorm of xlin: 0
    pn_beta0 = dict(pn, predictor=dict(pn["predictor"], beta=0 * pr["beta"]))
    p0 = dict(p, predictor={k: v for k, v in pr.items() if k in no_cn_keys})

    tr = ncn.common_neighbour_triples(hg, pairs, 128)

    @jax.jit
    def run(g, k):
        out = {"rows_keep": ncn.common_neighbour_rows(g, pairs, keep=k)}
        rng = {"dropout": jax.random.key(1)}
        stack = lambda *t: jax.tree.map(lambda *a: jnp.stack(a), *t)  # noqa: E731
        s, inter = jax.vmap(  # one trace for both parameter sets
            lambda q: full.apply({"params": q}, g, g.nodes, pairs, capture_intermediates=True)
        )(stack(p, p_xlin0))
        out["jk"] = inter["intermediates"]["mpnn"]["__call__"][0][0]
        out["preedp"] = (s[0], full.apply({"params": p}, g, g.nodes, pairs, train=True, rngs=rng))
        out["triples"] = full.apply(
            {"params": p}, g, g.nodes, pairs, train=True, rngs=rng, cn_triples=tr
        )
        sp = jax.vmap(lambda q: plain.apply({"params": q}, g, g.nodes, pairs))(stack(pn, pn_beta0))
        out["xlin"] = (s[1], sp[0])
        out["beta0"] = (sp[1], no_cn.apply({"params": p0}, g, g.nodes, pairs))
        xs = jnp.stack([g.nodes, g.nodes.at[:n].set(x2)])
        f = lambda m, xx: m.apply({"params": v}, g, xx, pairs, train=True, rngs=rng)  # noqa: E731
        out["xdp"] = jax.vmap(lambda xx: f(gcn_xdp, xx))(xs)
        pe = {"params": p["mpnn"]}
        out["tdp"] = enc_tdp.apply(pe, g, xs[1], train=True, rngs=rng)
        return out

    out = jax.tree.map(np.asarray, run(hg, keep))
    # puregcn + jk: no per-layer weights, h = w0 P z + w1 P² z with z = x W + b
    pe, h = p["mpnn"], out["jk"]
    assert set(pe) == {"input", "jk"}
    d = 1 / np.sqrt(a.sum(1) + 1)
    prop = d[:, None] * (a + np.eye(n)) * d[None]
    z = x @ pe["input"]["kernel"] + pe["input"]["bias"]
    want = pe["jk"][0] * prop @ z + pe["jk"][1] * prop @ prop @ z
    np.testing.assert_allclose(h[:n], want, rtol=1e-4, atol=1e-5)
    # cn edge dropout: CN rows of the adjacency without the dropped directed edges; the scores
    # change in training only (the eval scores match the plain model below)
    s, r, m = (np.asarray(v) for v in (hg.senders, hg.receivers, hg.edge_mask))
    ak = np.zeros((n + 1, n + 1))
    sel = m & keep & (s != r)
    ak[r[sel], s[sel]] = 1
    np.testing.assert_array_equal(out["rows_keep"], ak[pairs[:, 0]] * ak[pairs[:, 1]])
    assert np.abs(out["preedp"][1] - out["preedp"][0]).max() > 1e-4
    # sparse triples (host) give the dense rows' sums, edge dropout included
    np.testing.assert_allclose(out["triples"], out["preedp"][1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(*out["xlin"], rtol=1e-5, atol=1e-6)  # xlin(h) = 0: plain h
    np.testing.assert_allclose(*out["beta0"], rtol=1e-5, atol=1e-6)  # β = 0: the cn0 head
    np.testing.assert_array_equal(*out["xdp"])  # input dropout 1: the features do not matter
    np.testing.assert_array_equal(out["tdp"], 0.0)  # tail dropout 1: the encoder output is 0
    keys = no_cn_keys - {"xij_3"} | {"xcn_0", "xcn_2", "xcn_3", "beta"}
    assert (
        set(params(ncn.NCN(**branch, tailact=True))["predictor"]) == keys
    )  # tailact: no last Dense in xij / xcn


def test_option_errors():
    hg, _, _ = small_graph()
    pairs = np.zeros((1, 2), np.int32)
    for kw in (dict(jk=True), dict(encoder="puregcn", out=3), dict(use_xlin=True)):
        with pytest.raises(UserError, match="model."):
            ncn.NCN(**{"hidden": 4, "out": 4, **kw}).init(jax.random.key(0), hg, hg.nodes, pairs)
