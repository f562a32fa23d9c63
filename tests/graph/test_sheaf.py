"""Neural Sheaf Diffusion: the sheaf Laplacian against its definition, its spectrum, special
cases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from netlab.graph import padding, sheaf


def _graph(n=7, seed=0):
    rng = np.random.default_rng(seed)
    a = np.triu(rng.random((n, n)) < 0.4, 1)
    a[np.arange(n - 1), np.arange(1, n)] = True
    s, r = np.nonzero(a)
    return padding.to_device(
        padding.from_edges(
            s, r, n, nodes=rng.standard_normal((n, 4)).astype(np.float32), symmetrize=True
        )
    ), n


VARIANTS = ((False, False), (True, False), (True, True))  # (normalised, augmented)


def _dense_laplacians(g, maps, map_type, n, d, variants=VARIANTS):
    """The dense sheaf Laplacian for each (normalised, augmented) of `variants`, in one program."""

    @jax.jit
    def run(g, maps):
        x = jnp.eye(g.num_nodes * d, dtype=maps.dtype).reshape(g.num_nodes, d, g.num_nodes * d)
        return [
            sheaf.SheafLaplacian(g, maps, map_type, normalised=nz, augmented=au).apply(x)
            for nz, au in variants
        ]

    N = g.num_nodes
    return [np.asarray(L).reshape(N * d, N * d)[: n * d, : n * d] for L in run(g, maps)]


def _random_maps(map_type, E, d, rng, orth_method="householder"):
    k = sheaf.num_map_params(map_type, d, orth_method)
    return sheaf.maps_from_params(
        jnp.asarray(rng.standard_normal((E, k))), map_type, d, orth_method
    )


def _numpy_sheaf_laplacian(g, maps, n, d, diag):
    """L_F by Definition 2.1 from the per-edge sender-side maps, and its block diagonal D."""
    s, r, m = (np.asarray(a) for a in (g.senders, g.receivers, g.edge_mask))
    F = {}
    for e in np.nonzero(m)[0]:
        M = np.asarray(maps[e], np.float64)
        F[(int(s[e]), int(r[e]))] = np.diag(M) if diag else M  # F_{s ◁ {s, r}}
    L = np.zeros((n * d, n * d))
    for (v, u), Fv in F.items():  # each incidence v ◁ {v, u}
        Fu = F[(u, v)]
        L[v * d : (v + 1) * d, v * d : (v + 1) * d] += Fv.T @ Fv
        L[v * d : (v + 1) * d, u * d : (u + 1) * d] -= Fv.T @ Fu
    D = np.zeros_like(L)
    for v in range(n):
        D[v * d : (v + 1) * d, v * d : (v + 1) * d] = L[v * d : (v + 1) * d, v * d : (v + 1) * d]
    return L, D


@pytest.mark.parametrize(
    "map_type,orth",
    [("diag", None), ("orth", "householder"), ("orth", "cayley"), ("general", None)],
)
def test_sheaf_laplacian_matches_definition_symmetric_psd(map_type, orth):
    g, n = _graph(seed=1)
    d = 3
    with jax.enable_x64(True):
        maps = _random_maps(
            map_type, g.num_edges, d, np.random.default_rng(2), orth or "householder"
        )
        L_ref, D_ref = _numpy_sheaf_laplacian(g, maps, n, d, map_type == "diag")
        laplacians = _dense_laplacians(g, maps, map_type, n, d)
        for (normalised, augmented), L in zip(VARIANTS, laplacians, strict=True):
            expect = L_ref
            if normalised:
                Dn = D_ref + (np.eye(n * d) if augmented else 0)
                Dis = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(Dn)))
                expect = Dis @ L_ref @ Dis
            np.testing.assert_allclose(L, expect, atol=1e-6)
            np.testing.assert_allclose(L, L.T, atol=1e-8)
            w = np.linalg.eigvalsh((L + L.T) / 2)
            assert w.min() > -1e-8
            if normalised and not augmented:
                assert w.max() <= 2 + 1e-6  # normalised spectrum in [0, 2]


@pytest.mark.parametrize("map_type", ["diag", "orth", "general"])
def test_identity_maps_give_graph_laplacian_kron_identity(map_type):
    g, n = _graph(seed=3)
    d = 2
    with jax.enable_x64(True):
        E = g.num_edges
        maps = jnp.ones((E, d)) if map_type == "diag" else jnp.broadcast_to(jnp.eye(d), (E, d, d))
        A = np.zeros((n, n))
        m = np.asarray(g.edge_mask)
        A[np.asarray(g.receivers)[m], np.asarray(g.senders)[m]] = 1
        deg = A.sum(1)
        Lg = np.diag(deg) - A
        expected = (  # for VARIANTS' (normalised, augmented)
            Lg,
            np.eye(n) - A / np.sqrt(np.outer(deg, deg)),
            Lg / np.sqrt(np.outer(deg + 1, deg + 1)),
        )
        for L, expect in zip(_dense_laplacians(g, maps, map_type, n, d), expected, strict=True):
            np.testing.assert_allclose(L, np.kron(expect, np.eye(d)), atol=1e-8)


@pytest.mark.parametrize("method", sheaf.ORTH_METHODS)
def test_orthogonal_maps_are_orthogonal(method):
    d = 4
    rng = np.random.default_rng(0)
    Q = np.asarray(
        jax.jit(sheaf.maps_from_params, static_argnums=(1, 2, 3))(
            jnp.asarray(rng.standard_normal((50, sheaf.num_map_params("orth", d, method)))),
            "orth",
            d,
            method,
        )
    )
    np.testing.assert_allclose(
        np.einsum("eji,ejk->eik", Q, Q), np.broadcast_to(np.eye(d), Q.shape), atol=1e-5
    )
    assert np.abs(Q - np.eye(d)).max() > 0.1  # not trivially the identity
    if method == "cayley":
        np.testing.assert_allclose(np.linalg.det(Q), 1.0, atol=1e-4)  # SO(d)


def test_reverse_edges():
    g, _ = _graph(seed=4)
    rev = np.asarray(sheaf.reverse_edges(g))
    s, r, m = (np.asarray(a) for a in (g.senders, g.receivers, g.edge_mask))
    assert np.all(s[rev][m] == r[m]) and np.all(r[rev][m] == s[m])
    assert np.all(~m[rev][~m])


@pytest.mark.parametrize("map_type", ["diag", "orth", "general"])
def test_nsd_permutation_equivariant(map_type):
    """One forward pass on the disjoint union of a graph and its relabelled copy: node i of the
    first copy and node n + perm[i] of the second must get the same output."""
    g, n = _graph(n=9, seed=5)
    m = np.asarray(g.edge_mask)
    s, r, x = np.asarray(g.senders)[m], np.asarray(g.receivers)[m], np.asarray(g.nodes)[:n]
    perm = np.random.default_rng(6).permutation(n)
    xp = np.zeros_like(x)
    xp[perm] = x
    union = padding.from_edges(
        np.concatenate([s, n + perm[s]]),
        np.concatenate([r, n + perm[r]]),
        2 * n,
        nodes=np.concatenate([x, xp]),
    )
    model = sheaf.NeuralSheafDiffusion(
        num_classes=3, d=3, hidden_channels=4, num_layers=2, map_type=map_type, nonlinear=True
    )
    out, params = jax.jit(model.init_with_output)(jax.random.key(0), union, union.nodes)
    out = np.asarray(out)
    np.testing.assert_allclose(out[n + perm], out[:n], rtol=1e-4, atol=1e-5)
    assert np.abs(out[:n] - out[:n].mean(0)).max() > 1e-4  # outputs differ across nodes
    if (
        map_type == "general"
    ):  # Newton–Schulz D^{-1/2}: finite gradients (eigh's would be NaN at D = I)
        params = nn.unbox(params)
        grads = jax.jit(
            jax.grad(lambda p: jnp.sum(model.apply(p, union, union.nodes)[: 2 * n] ** 2))
        )(params)
        assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(grads))


def _train_task(task, steps, lr):
    import optax

    params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
    tx = optax.adam(lr)
    arrays = jax.tree.map(jnp.asarray, task.arrays)

    @jax.jit
    def train(params):
        def body(carry, i):
            p, o = carry
            (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(
                p, {}, arrays, jax.random.key(i), True
            )
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        (params, _), losses = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
        return params, losses

    return train(params)


@pytest.mark.slow
def test_nsd_node_classification_task_on_csbm():
    import ml_collections

    from netlab.graph import datasets as D
    from netlab.graph import generators
    from netlab.graph.continuous_task import DiffusionNodeClassification

    s, r, y, x = generators.contextual_sbm((40, 40), 0.2, 0.02, feature_dim=8, mu=2.5, rng=0)
    rng = np.random.default_rng(1)
    split = rng.permutation(
        3 * np.ones(80, int) - (np.arange(80) < 16) - (np.arange(80) < 32)
    )  # 16/16/48
    ds = D.NodeDataset("csbm", x, y, s, r, 2, split == 1, split == 2, split == 3)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(
                name="nsd", d=2, hidden_channels=4, num_layers=2, map_type="orth", dropout=0.0
            ),
            data=dict(name="csbm", data_dir="", split=0, row_normalize=False),
            loss=dict(weight_decay=0.0, weight_decay_scope=""),
            train=dict(compute_dtype="float32"),
        )
    )
    task = DiffusionNodeClassification(cfg, dataset=ds)
    params, losses = _train_task(task, 60, 0.02)
    after = task.evaluate(params, {}, 60, "")[0]
    assert float(losses[-1]) < 0.3 * float(losses[0])
    assert after["train_accuracy"] == 1.0
    # held-out nodes (chance 0.5): the task's masks, loss and evaluation are wired correctly
    assert after["val_accuracy"] > 0.8 and after["test_accuracy"] > 0.7


def test_add_lp_add_hp_blocks_are_the_signless_and_the_graph_laplacian():
    """The authors' fixed extra stalk dimensions (their LaplacianBuilder.append_fixed_maps and its
    dense test, values [1, -1] for [lp, hp]): add_lp's block is the augmented-normalised signless
    Laplacian (D + A), add_hp's the graph Laplacian (D - A); the learned block is the sheaf
    Laplacian of the learned maps alone and nothing couples the blocks."""
    g, n = _graph(seed=7)
    d = 2
    m = np.asarray(g.edge_mask)
    A = np.zeros((n, n))
    A[np.asarray(g.receivers)[m], np.asarray(g.senders)[m]] = 1
    deg = A.sum(1)
    scale = np.sqrt(np.outer(deg + 1, deg + 1))
    with jax.enable_x64(True):
        for map_type in ("diag", "orth", "general"):
            learned = _random_maps(map_type, g.num_edges, d, np.random.default_rng(8))
            maps = sheaf.append_fixed_maps(g, learned, add_lp=True, add_hp=True)
            (L,) = _dense_laplacians(g, maps, map_type, n, d + 2, [(True, True)])
            L = L.reshape(n, d + 2, n, d + 2)
            np.testing.assert_allclose(L[:, d, :, d], (np.diag(deg) + A) / scale, atol=1e-10)
            np.testing.assert_allclose(
                L[:, d + 1, :, d + 1], (np.diag(deg) - A) / scale, atol=1e-10
            )
            for i, j in ((d, d + 1), (d, 0), (d + 1, d - 1)):
                assert np.abs(L[:, i, :, j]).max() == 0 and np.abs(L[:, j, :, i]).max() == 0
            L_ref, D_ref = _numpy_sheaf_laplacian(g, learned, n, d, map_type == "diag")
            Dis = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(D_ref + np.eye(n * d))))
            np.testing.assert_allclose(
                L[:, :d, :, :d].reshape(n * d, n * d), Dis @ L_ref @ Dis, atol=1e-6
            )
    # the model: stalks of d + 2, maps learned for the d learned dimensions only
    model = sheaf.NeuralSheafDiffusion(
        num_classes=3,
        d=d,
        hidden_channels=4,
        num_layers=2,
        add_lp=True,
        add_hp=True,
        left_init="identity",
    )
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), g, g.nodes))["params"]
    assert shapes["encoder"]["kernel"].shape == (4, (d + 2) * 4)
    assert shapes["sheaf_learner_0"]["V"]["kernel"].shape == (2 * (d + 2) * 4, d)
    assert shapes["left_0"].shape == (d + 2, d + 2) and shapes["epsilon_1"].shape == (d + 2,)


def test_torch_init_is_uniform_on_the_fan_in_bound():
    """weight_init="torch" (the authors' nn.Linear default): every Dense kernel and bias lies in
    +-1/sqrt(fan_in) with the uniform law's std bound/sqrt(3) (the encoder's 80 weights); the
    default "lecun" keeps zero biases."""
    g, _ = _graph(n=9, seed=5)
    feats = g.nodes.shape[-1]
    shapes = {}
    for init in ("torch", "lecun"):
        model = sheaf.NeuralSheafDiffusion(
            num_classes=3, d=2, hidden_channels=10, num_layers=1, weight_init=init
        )
        shapes[init] = nn.unbox(jax.jit(model.init)(jax.random.key(1), g, g.nodes))["params"]
    p = shapes["torch"]
    enc, dec, v = p["encoder"], p["decoder"], p["sheaf_learner_0"]["V"]["kernel"]
    for w, fan_in in ((enc["kernel"], feats), (enc["bias"], feats), (dec["bias"], 20), (v, 40)):
        assert np.abs(np.asarray(w)).max() <= 1 / np.sqrt(fan_in) + 1e-7
    assert np.abs(np.asarray(enc["bias"])).min() > 0
    std = np.asarray(enc["kernel"]).std() * np.sqrt(3 * feats)
    assert 0.85 < std < 1.15, std
    assert np.all(np.asarray(shapes["lecun"]["encoder"]["bias"]) == 0)


def test_second_linear_with_identity_weights_is_the_plain_encoder():
    """second_linear (the authors' lin12): a width-preserving Dense after the encoder's dropout;
    with its kernel the identity and its bias zero the model equals the one without it, with a
    random kernel it does not (the layer is on the forward path)."""
    g, _ = _graph(n=8, seed=3)
    kw = dict(num_classes=3, d=2, hidden_channels=5, num_layers=2, nonlinear=True)
    plain = sheaf.NeuralSheafDiffusion(**kw)
    second = sheaf.NeuralSheafDiffusion(**kw, second_linear=True)
    p = nn.unbox(second.init(jax.random.key(0), g, g.nodes))["params"]
    assert p["encoder_2"]["kernel"].shape == (10, 10)
    base = {k: v for k, v in p.items() if k != "encoder_2"}
    ident = dict(p, encoder_2={"kernel": jnp.eye(10), "bias": jnp.zeros(10)})
    want = plain.apply({"params": base}, g, g.nodes)
    np.testing.assert_allclose(second.apply({"params": ident}, g, g.nodes), want, atol=1e-6)
    assert np.abs(second.apply({"params": p}, g, g.nodes) - want).max() > 1e-3


def test_weight_decay_overrides_closed_form_and_bad_value():
    """l2_penalty with overrides (the NSD authors' separate sheaf_decay): each parameter takes the
    decay of its first matching prefix, else the base decay inside `scope`; a negative or
    non-numeric override is a one-line UserError."""
    import ml_collections

    from netlab.errors import UserError
    from netlab.graph.task import l2_penalty, weight_decay_overrides

    params = {
        "encoder": {"kernel": jnp.full((2, 3), 2.0)},  # sum of squares 24
        "sheaf_learner_0": {"V": {"kernel": jnp.full((4,), 3.0)}},  # 36
        "sheaf_learner_1": {"V": {"kernel": jnp.ones((5,))}},  # 5
    }
    got = l2_penalty(params, 1e-2, "", {"sheaf_learner": 1e-4})
    np.testing.assert_allclose(got, 0.5 * (1e-2 * 24 + 1e-4 * 41), rtol=1e-6)
    np.testing.assert_allclose(l2_penalty(params, 0.0, "", {"sheaf_learner_1": 2.0}), 5.0)
    np.testing.assert_allclose(l2_penalty(params, 1e-2, "enc"), 0.5 * 1e-2 * 24, rtol=1e-6)
    cfg = ml_collections.ConfigDict(dict(loss=dict(weight_decay_overrides=dict(a=None, b=1e-3))))
    assert weight_decay_overrides(cfg) == {"b": 1e-3}
    for bad in (-1.0, "x"):
        cfg.loss.weight_decay_overrides = ml_collections.ConfigDict(dict(sheaf_learner=bad))
        with pytest.raises(UserError, match="weight_decay_overrides.sheaf_learner"):
            weight_decay_overrides(cfg)
    with pytest.raises(UserError, match="no parameter path starts with 'sheaf_lerner'"):
        l2_penalty(params, 1e-2, "", {"sheaf_lerner": 1e-4})  # a typo is not silently ignored


def test_node_task_loss_applies_the_weight_decay_overrides():
    """The node task's loss carries loss.weight_decay_overrides: with weight_decay 0 and the sheaf
    learners at 0.5, the loss grows by exactly 0.25 Σ (sheaf-learner parameters)² over the same
    task without the override."""
    import ml_collections

    from netlab.graph import datasets as D
    from netlab.graph.continuous_task import DiffusionNodeClassification

    g, n = _graph(n=8, seed=4)
    m = np.asarray(g.edge_mask)
    s, r = np.asarray(g.senders)[m], np.asarray(g.receivers)[m]
    x, y = np.asarray(g.nodes)[:n], np.arange(n) % 2
    ds = D.NodeDataset("tiny", x, y, s, r, 2, y == y, y != y, y != y)
    losses = {}
    for over in (None, 0.5):
        cfg = ml_collections.ConfigDict(
            dict(
                seed=0,
                model=dict(name="nsd", d=2, hidden_channels=3, num_layers=2, nonlinear=True),
                data=dict(name="tiny", data_dir="", split=0, row_normalize=False),
                loss=dict(weight_decay=0.0, weight_decay_overrides=dict(sheaf_learner=over)),
                train=dict(compute_dtype="float32"),
            )
        )
        task = DiffusionNodeClassification(cfg, dataset=ds)
        params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
        arrays = jax.tree.map(jnp.asarray, task.train_batch(0))
        losses[over] = float(task.loss_fn(params, {}, arrays, jax.random.key(1), False)[0])
    sq = sum(
        float(jnp.sum(v**2))
        for k in ("sheaf_learner_0", "sheaf_learner_1")
        for v in jax.tree.leaves(params[k])
    )
    assert sq > 0
    np.testing.assert_allclose(losses[0.5] - losses[None], 0.25 * sq, rtol=1e-4)


def _authors_diag_nsd_forward(p, x, senders, receivers, n, d, hc, layers, add_lp, add_hp):
    """numpy float64 transcription of the authors' DiscreteDiagSheafDiffusion.forward in eval mode
    (twitter-research/neural-sheaf-diffusion, models/disc_models.py; DiagLaplacianBuilder with
    normalised=True, augmented=True; maps relearned every layer, second_linear on), laid out as
    theirs: features viewed as an (n D) x hc matrix, torch Linear y = x W^T, the Laplacian a dense
    (n D) x (n D) matrix from their diagonal and triangular entries."""
    D = d + add_lp + add_hp
    elu = lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0)))  # noqa: E731
    h = elu(x @ p["encoder"]["kernel"] + p["encoder"]["bias"])  # lin1, ELU
    h = h @ p["encoder_2"]["kernel"] + p["encoder_2"]["bias"]  # lin12
    X = h.reshape(n * D, hc)  # x.view(graph_size * final_d, -1)
    X0 = X
    deg = np.bincount(senders, minlength=n).astype(np.float64)
    for t in range(layers):
        xr = X.reshape(n, -1)
        maps = np.tanh(
            np.concatenate([xr[senders], xr[receivers]], 1) @ p[f"sheaf_learner_{t}"]["V"]["kernel"]
        )
        diag = np.zeros((n, d))
        np.add.at(diag, senders, maps**2)  # scatter_add(maps**2, row)
        s_inv = (diag + 1) ** -0.5
        L = np.zeros((n * D, n * D))
        rev = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(senders, receivers))}
        for e, (u, v) in enumerate(zip(senders, receivers)):
            back = rev[(int(v), int(u))]
            for i in range(d):  # tril entry -F_u F_v, normalised left and right
                L[u * D + i, v * D + i] = -maps[e, i] * maps[back, i] * s_inv[u, i] * s_inv[v, i]
            for j, sign in zip(range(d, D), [1.0] * add_lp + [-1.0] * add_hp):  # fixed maps
                L[u * D + j, v * D + j] = sign / np.sqrt((deg[u] + 1) * (deg[v] + 1))
        for v in range(n):
            for i in range(d):
                L[v * D + i, v * D + i] = s_inv[v, i] ** 2 * diag[v, i]
            for j in range(d, D):
                L[v * D + j, v * D + j] = deg[v] / (deg[v] + 1)
        Wl, Wr = p[f"left_{t}"], p[f"right_{t}"].T  # torch weights: left as ours, right transposed
        Y = (X.T.reshape(-1, D) @ Wl.T).reshape(-1, n * D).T  # lin_left_weights
        Y = Y @ Wr.T  # lin_right_weights
        Y = elu(L @ Y)
        coeff = 1 + np.tile(np.tanh(p[f"epsilon_{t}"])[:, None], (n, 1))
        X0 = coeff * X0 - Y
        X = X0
    logits = X.reshape(n, -1) @ p["decoder"]["kernel"] + p["decoder"]["bias"]
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))  # log_softmax


def test_diag_nsd_forward_matches_a_transcription_of_the_authors_model():
    """Diag-NSD with add_lp, add_hp, maps relearned at every layer and second_linear, all weights
    random (epsilons, biases and left weights too): our log-softmax outputs equal the float64
    transcription of the authors' forward to 1e-10."""
    g, n = _graph(n=8, seed=11)
    m = np.asarray(g.edge_mask)
    s, r = np.asarray(g.senders)[m], np.asarray(g.receivers)[m]
    d, hc, layers = 2, 3, 2
    model = sheaf.NeuralSheafDiffusion(
        num_classes=4,
        d=d,
        hidden_channels=hc,
        num_layers=layers,
        nonlinear=True,
        add_lp=True,
        add_hp=True,
        second_linear=True,
    )
    with jax.enable_x64(True):
        g64 = jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, g)
        p = nn.unbox(model.init(jax.random.key(0), g64, g64.nodes))["params"]
        rng = np.random.default_rng(12)
        p = jax.tree.map(lambda a: jnp.asarray(0.7 * rng.standard_normal(a.shape)), p)
        ours = jax.nn.log_softmax(model.apply({"params": p}, g64, g64.nodes), -1)
        p_np = jax.tree.map(np.asarray, p)
        want = _authors_diag_nsd_forward(
            p_np, np.asarray(g64.nodes)[:n], s, r, n, d, hc, layers, True, True
        )
    np.testing.assert_allclose(np.asarray(ours)[:n], want, rtol=1e-10, atol=1e-10)
