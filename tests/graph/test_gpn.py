"""Graph Parsing Networks: one parsing level equals a numpy/networkx transcription (dominant edge
per node, weakly connected components of i -> dom(i), quotient edges without duplicates, mean
inner-edge cluster scores); the clusters partition the real nodes, and without self-loops every
cluster of a graph without isolated nodes has at least two nodes."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from netlab.graph import gpn, padding

N = 14


def reference(s, r, es, ss):
    best = {}
    for k in range(len(s)):
        i = r[k]
        if i not in best or es[k] > best[i][0] or (es[k] == best[i][0] and s[k] < best[i][1]):
            best[i] = (es[k], s[k])
    dom = [
        i if ss is not None and ss[i] >= best.get(i, (-1, i))[0] else best.get(i, (0, i))[1]
        for i in range(N)
    ]
    fg = nx.Graph()
    fg.add_nodes_from(range(N))
    fg.add_edges_from((i, d) for i, d in enumerate(dom))
    return {frozenset(c) for c in nx.connected_components(fg)}


def test_parse_matches_transcription_and_partitions():
    rng = np.random.default_rng(0)
    g = nx.gnm_random_graph(N, 20, seed=1)
    g.add_edges_from((u, u + 1) for u in range(N - 1) if g.degree(u) == 0)  # no isolated nodes
    e = np.array(g.edges())
    hg = padding.from_edges(
        e[:, 0],
        e[:, 1],
        N,
        nodes=np.ones((N, 1), np.float32),
        symmetrize=True,
        budget=padding.Budget(N + 2, 64, 2),
    )
    pair_score = rng.random((N + 2, N + 2))
    pair_score = pair_score + pair_score.T  # symmetric, as sigmoid(MLP(h_i ⊙ h_j))
    es = np.where(hg.edge_mask, pair_score[hg.senders, hg.receivers], 0.0).astype(np.float32)
    ss = rng.random(N + 2).astype(np.float32) * 2.2

    @jax.jit
    def run(graph, es, ss):
        out = []
        for self_score in (ss, None):
            cluster, k, pooled = gpn.parse(graph, es, self_score)
            sc = gpn.cluster_scores(graph, cluster, es, self_score)
            out.append((cluster, k, pooled.senders, pooled.receivers, pooled.edge_mask, sc))
        return out

    m = hg.edge_mask
    s, r = hg.senders[m], hg.receivers[m]
    for (cluster, k, ps, pr, pm, sc), self_score in zip(
        jax.device_get(run(padding.to_device(hg), jnp.asarray(es), jnp.asarray(ss))), (ss, None)
    ):
        want = reference(s, r, es[m], self_score)
        got = {frozenset(np.flatnonzero(cluster[:N] == c).tolist()) for c in range(int(k))}
        assert got == want and int(k) == len(want)
        assert set(cluster[:N].tolist()) == set(range(int(k)))  # ids 0..K-1, a partition
        quotient = {(cluster[a], cluster[b]) for a, b in zip(s, r) if cluster[a] != cluster[b]}
        assert set(zip(ps[pm].tolist(), pr[pm].tolist())) == quotient and pm.sum() == len(quotient)
        for c in range(int(k)):
            inner = (cluster[s] == c) & (cluster[r] == c)
            solo = 1.0 if self_score is None else self_score[:N][cluster[:N] == c].max()
            want_sc = es[m][inner].mean() if inner.any() else solo
            np.testing.assert_allclose(sc[c], want_sc, rtol=1e-6)
        if self_score is None:
            assert all(len(c) >= 2 for c in got) and int(k) <= N // 2
