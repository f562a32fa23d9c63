"""LightGCN / UltraGCN / BPR / Recall-NDCG against numpy oracles; LastFM + Gowalla loaders."""

import csv
import hashlib
import math
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from netlab.errors import UserError
from netlab.graph import lightgcn, recsys, recsys_data, recsys_task, ultragcn


def _random_interactions(U, I, n, seed):
    rng = np.random.default_rng(seed)
    key = rng.choice(U * I, n, replace=False)
    u, i = key // I, key % I
    # every user and item at least once
    u = np.concatenate([u, np.arange(U), rng.integers(0, U, I)])
    i = np.concatenate([i, rng.integers(0, I, U), np.arange(I)])
    key = np.unique(u * I + i)
    return (key // I).astype(np.int32), (key % I).astype(np.int32)


def test_lightgcn_equals_mean_of_dense_normalised_powers():
    U, I, L = 6, 9, 3
    u, i = _random_interactions(U, I, 15, 0)
    g = lightgcn.bipartite_graph(u, i, U, I)
    model = lightgcn.LightGCN(U, I, dim=5, num_layers=L, init_std=1.0)
    params = model.init(jax.random.key(0), g)
    out = model.apply(params, g)
    # numpy oracle
    R = np.zeros((U, I))
    R[u, i] = 1
    A = np.block([[np.zeros((U, U)), R], [R.T, np.zeros((I, I))]])
    d = A.sum(1)
    Ahat = A / np.sqrt(np.outer(d, d))
    E0 = np.concatenate([np.asarray(out["users0"]), np.asarray(out["items0"])], 0).astype(
        np.float64
    )
    expect = sum(np.linalg.matrix_power(Ahat, k) @ E0 for k in range(L + 1)) / (L + 1)
    got = np.concatenate([out["users"], out["items"]], 0)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, E0, atol=1e-3)  # propagation changed something


def test_lightgcn_permutation_equivariant():
    U, I = 5, 8
    u, i = _random_interactions(U, I, 12, 1)
    pu, pi = np.random.default_rng(2).permutation(U), np.random.default_rng(3).permutation(I)
    model = lightgcn.LightGCN(U, I, dim=4, num_layers=2, init_std=1.0)
    g = lightgcn.bipartite_graph(u, i, U, I)
    params = model.init(jax.random.key(1), g)
    out = model.apply(params, g)
    # relabel user a -> pu[a], item b -> pi[b]; permute the embedding tables the same way
    g2 = lightgcn.bipartite_graph(pu[u], pi[i], U, I)
    p = nn.unbox(params)["params"]
    ue, ie = np.empty_like(p["user_embedding"]), np.empty_like(p["item_embedding"])
    ue[pu], ie[pi] = p["user_embedding"], p["item_embedding"]
    out2 = model.apply({"params": {"user_embedding": ue, "item_embedding": ie}}, g2)
    np.testing.assert_allclose(np.asarray(out2["users"])[pu], out["users"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out2["items"])[pi], out["items"], rtol=1e-5, atol=1e-6)


def test_bpr_loss_matches_numpy():
    rng = np.random.default_rng(0)
    eu, ep, en = (rng.standard_normal((7, 4)).astype(np.float32) for _ in range(3))
    loss, bpr = lightgcn.bpr_loss(eu, ep, en, 0.1, eu, ep, en)
    x = (eu * ep).sum(1) - (eu * en).sum(1)
    ref = np.mean(-np.log(1.0 / (1.0 + np.exp(-x))))
    l2 = ((eu**2).sum() + (ep**2).sum() + (en**2).sum()) / 2 / 7
    np.testing.assert_allclose(bpr, ref, rtol=1e-5)
    np.testing.assert_allclose(loss, ref + 0.1 * l2, rtol=1e-5)


def _numpy_recall_ndcg(scores, train, test, k):
    rec, nd = [], []
    for s, tr, te in zip(scores, train, test):
        if not te:
            continue
        ranked = [j for j in np.argsort(-s, kind="stable") if j not in tr][:k]
        hits = [1.0 if j in te else 0.0 for j in ranked]
        rec.append(sum(hits) / len(te))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(te), k)))
        nd.append(dcg / idcg)
    return np.mean(rec), np.mean(nd)


def test_recall_ndcg_tiny_hand_computed():
    # 1 user, 5 items, k=2. Item 0 scores highest but is a training item: masked.
    scores = jnp.array([[9.0, 5.0, 4.0, 3.0, 1.0]])
    train = jnp.array([[True, False, False, False, False]])
    test = jnp.array([[False, False, True, False, True]])
    r, n, h = recsys.recall_ndcg_at_k(scores, train, test, k=2)
    # top-2 after masking: items 1, 2 -> one hit (item 2) at rank 2 of 2 test items
    np.testing.assert_allclose(r, [0.5])
    np.testing.assert_allclose(n, [(1 / math.log2(3)) / (1 + 1 / math.log2(3))], rtol=1e-6)
    assert bool(h[0])


def test_recall_ndcg_at_20_matches_numpy():
    rng = np.random.default_rng(4)
    B, I, k = 6, 60, 20
    scores = rng.standard_normal((B, I)).astype(np.float32)
    train = [set(rng.choice(I, 8, replace=False).tolist()) for _ in range(B)]
    test = [
        set(rng.choice(sorted(set(range(I)) - tr), n, replace=False).tolist()) if n else set()
        for tr, n in zip(train, [3, 25, 1, 0, 10, 7])
    ]
    # make user 0's training items the top scorers: if they leaked, recall would drop
    for j in train[0]:
        scores[0, j] = 100.0
    tm = np.zeros((B, I), bool)
    sm = np.zeros((B, I), bool)
    for b in range(B):
        tm[b, list(train[b])] = True
        sm[b, list(test[b])] = True
    r, n, h = recsys.recall_ndcg_at_k(scores, tm, sm, k)
    h = np.asarray(h)
    assert h.tolist() == [True, True, True, False, True, True]
    ref_r, ref_n = _numpy_recall_ndcg(scores, train, test, k)
    np.testing.assert_allclose(np.asarray(r)[h].mean(), ref_r, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(n)[h].mean(), ref_n, rtol=1e-5)


def test_ultragcn_constraint_weights_match_numpy():
    U, I = 7, 10
    u, i = _random_interactions(U, I, 20, 5)
    c = ultragcn.ultragcn_constraints(u, i, U, I, num_neighbors=3)
    R = np.zeros((U, I))
    R[u, i] = 1
    du, di = R.sum(1), R.sum(0)
    beta = (1 / du[:, None]) * np.sqrt((du[:, None] + 1) / (di[None, :] + 1))
    np.testing.assert_allclose(np.outer(c["beta_user"], c["beta_item"]), beta, rtol=1e-5)
    G = R.T @ R
    g = G.sum(1)
    omega = G / (g - np.diag(G))[:, None] * np.sqrt(g[:, None] / g[None, :])
    np.fill_diagonal(omega, -np.inf)
    for it in range(I):
        ref = np.sort(omega[it][np.isfinite(omega[it]) & (G[it] > 0)])[::-1][:3]
        np.testing.assert_allclose(c["ii_weights"][it][: len(ref)], ref, rtol=1e-5)
        np.testing.assert_allclose(omega[it, c["ii_neighbors"][it][: len(ref)]], ref, rtol=1e-5)


def test_ultragcn_loss_matches_numpy():
    rng = np.random.default_rng(6)
    ue, ie = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    users, pos, negs = np.array([0, 1, 3]), np.array([2, 5, 0]), np.array([[1, 3], [0, 4], [2, 5]])
    bu, bi = rng.random(4), rng.random(6)
    nb, nw = rng.integers(0, 6, (6, 2)), rng.random((6, 2))
    loss, _ = ultragcn.ultragcn_loss(
        ue, ie, users, pos, negs, bu, bi, nb, nw, lam=0.7, gamma=0.3, neg_weight=2.0
    )
    ls = lambda x: -np.log1p(np.exp(-x))  # noqa: E731  log sigmoid
    tot = 0.0
    for b in range(3):
        e = ue[users[b]]
        sp, sn = e @ ie[pos[b]], ie[negs[b]] @ e
        lo = -ls(sp) - 2.0 * np.mean(ls(-sn))
        lc = -bu[users[b]] * bi[pos[b]] * ls(sp) - 2.0 * np.mean(
            bu[users[b]] * bi[negs[b]] * ls(-sn)
        )
        li = -np.sum(nw[pos[b]] * ls(ie[nb[pos[b]]] @ e))
        tot += lo + 0.7 * lc + 0.3 * li
    np.testing.assert_allclose(loss, tot / 3, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# loaders
def _raw_pairs(path):
    with open(path) as f:
        return {(int(a), int(b)) for a, b, *_ in csv.reader(f, delimiter="\t")}


def test_lastfm_loader_counts(shared_data_dir):
    d = recsys_data.load_lastfm(shared_data_dir)
    tr = _raw_pairs(shared_data_dir / "lightgcn/lastfm/data1.txt")
    te = _raw_pairs(shared_data_dir / "lightgcn/lastfm/test1.txt")
    assert (d.num_users, d.num_items) == (max(u for u, _ in tr | te), max(i for _, i in tr | te))
    assert len(d.train_users) == len(tr) and len(d.test_users) == len(te)
    assert {(u + 1, i + 1) for u, i in zip(d.train_users.tolist(), d.train_items.tolist())} == tr
    assert d.train_users.min() == 0 and d.train_items.min() >= 0


def test_gowalla_loader_counts(shared_data_dir):
    d = recsys_data.load_gowalla(shared_data_dir)
    n_test = 0
    users = set()
    with open(shared_data_dir / "lightgcn/gowalla/test.txt") as f:
        for line in f:
            ids = line.split()
            users.add(int(ids[0]))
            n_test += len(ids) - 1
    import scipy.sparse as sp

    A = sp.load_npz(shared_data_dir / "lightgcn/gowalla/s_adj_mat.npz")
    assert (d.num_users, d.num_items) == (len(users), A.shape[0] - len(users))
    assert len(d.train_users) == A.nnz // 2 and len(d.test_users) == n_test
    tr = d.train_users.astype(np.int64) * d.num_items + d.train_items
    te = d.test_users.astype(np.int64) * d.num_items + d.test_items
    assert len(np.intersect1d(tr, te)) == 0


def _copy_lastfm(src, dst):
    (dst / "lightgcn/lastfm").mkdir(parents=True)
    for rel in recsys_data.FILES["lastfm"]:
        shutil.copy(src / rel, dst / rel)
    shutil.copy(src / "SHA256SUMS", dst / "SHA256SUMS")


def test_corrupt_or_missing_file_refused(shared_data_dir, tmp_path, monkeypatch):
    _copy_lastfm(shared_data_dir, tmp_path)
    monkeypatch.delenv("NETLAB_DATA_DIR")  # only tmp_path and an empty cache hold the files
    monkeypatch.setenv("NETLAB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "lightgcn/lastfm/test1.txt"
    path.chmod(0o644)
    good = path.read_bytes()
    path.write_bytes(good.replace(b"\t", b" ", 1))
    with pytest.raises(UserError, match="checksum mismatch.*test1.txt"):
        recsys_data.load_lastfm(tmp_path)
    path.unlink()
    with pytest.raises(UserError, match="missing data file.*test1.txt"):
        recsys_data.load_lastfm(tmp_path)
    path.write_bytes(good)
    assert hashlib.sha256(good).hexdigest() in (tmp_path / "SHA256SUMS").read_text()
    assert recsys_data.load_lastfm(tmp_path).num_users == 1892
    with pytest.raises(UserError, match="NETLAB_DATA_DIR"):
        recsys_data.data_root(str(tmp_path / "nope"))


# ----------------------------------------------------------------------------------------------
# task
def _config(name="lightgcn"):
    return ml_collections.ConfigDict(
        dict(
            seed=3,
            model=dict(
                name=name,
                dim=16,
                num_layers=2,
                init_std=0.1,
                reg=1e-4,
                lam=1.0,
                gamma=0.5,
                neg_weight=1.0,
                num_negatives=4,
                num_neighbors=5,
            ),
            data=dict(name="lastfm", data_dir="", k=20, eval_users_per_chunk=1024),
            train=dict(batch_size=256),
        )
    )


def _tiny_data(seed=0):
    U, I = 40, 50
    rng = np.random.default_rng(seed)
    # two taste groups: users < 20 like items < 25, others like items >= 25
    u = np.repeat(np.arange(U), 8)
    i = np.where(u < 20, rng.integers(0, 25, len(u)), rng.integers(25, 50, len(u)))
    key = np.unique(u * I + i)
    u, i = key // I, key % I
    test = rng.random(len(u)) < 0.25
    return recsys_data.Interactions(
        "tiny",
        U,
        I,
        u[~test].astype(np.int32),
        i[~test].astype(np.int32),
        u[test].astype(np.int32),
        i[test].astype(np.int32),
    )


def test_bpr_sampling_is_pure_and_avoids_training_items():
    d = _tiny_data()
    ptr, idx = d.csr("train")
    a = recsys_task.bpr_triples(1, 7, 64, ptr, idx, d.num_items, 3)
    b = recsys_task.bpr_triples(1, 7, 64, ptr, idx, d.num_items, 3)
    c = recsys_task.bpr_triples(1, 8, 64, ptr, idx, d.num_items, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    train = set(zip(d.train_users.tolist(), d.train_items.tolist()))
    users, pos, neg = a
    assert all((u, p) in train for u, p in zip(users.tolist(), pos.tolist()))
    assert not any((u, n) in train for u, row in zip(users.tolist(), neg.tolist()) for n in row)


@pytest.mark.parametrize("name", ["lightgcn", "ultragcn"])
def test_task_training_improves_recall(name):
    cfg = _config(name)
    cfg.model.init_std = 0.1
    task = recsys_task.Recommendation(cfg, data=_tiny_data())
    params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
    tx = optax.adam(0.05)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(params, {}, batch, None, True)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    before = task.rank_metrics(params)
    losses = []
    for s in range(60):
        params, opt, loss = step(params, opt, task.train_batch(s))
        losses.append(float(loss))
    after = task.rank_metrics(params)
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    # two clean taste groups: half the 50 items are relevant, so 20 well-ranked items hit often
    assert after["recall@20"] > before["recall@20"] + 0.15
    assert after["recall@20"] > 0.6
