"""Graph tasks through the Task protocol: optax steps, evaluation, edge sharding, buckets,
budgets; graph configs, their variants, and config errors."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from netlab.graph import datasets as D
from netlab.graph import layers as L
from netlab.graph import padding
from netlab.graph import task as T
from netlab.sharding.axes import MESH_AXES
from netlab.train.trainer import process_rows


def node_config(model, **data):
    c = common.base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(model)
    c.data = ml_collections.ConfigDict(
        dict(
            dict(
                name="karate",
                data_dir="",
                split=0,
                row_normalize=True,
                edge_sharded=False,
                precompute=True,
            ),
            **data,
        )
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.steps, c.train.batch_size = 3, 0
    c.optimizer.name, c.optimizer.lr, c.optimizer.schedule = "adam", 0.01, "constant"
    return c


def optax_steps(task, n, lr=0.05, seed=0):
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(seed)))["params"]
    tx = optax.adam(lr)
    opt = tx.init(params)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0))

    @jax.jit
    def step(params, opt, rng):
        (loss, (metrics, _)), g = jax.value_and_grad(task.loss_fn, has_aux=True)(
            params, {}, batch, rng, True
        )
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    losses = []
    for i in range(n):
        params, opt, loss = step(params, opt, jax.random.key(i))
        losses.append(float(loss))
    return params, losses


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        dict(name="gcn", hidden=16, dropout=0.5),
        dict(name="gat", hidden=4, heads=2, dropout=0.2),
        dict(name="appnp", hidden=16, k=5, alpha=0.1),
    ],
)
def test_node_classification_protocol_and_training(model):
    task = T.NodeClassification(node_config(model))
    axes = task.batch_axes()
    assert task.global_batch_size() == 0 and all(a is None for a in axes.values())
    batch = task.train_batch(5)
    assert batch["x" if "x" in batch else "nodes"].shape[0] == 35  # 34 nodes + 1 padding node
    params, losses = optax_steps(task, 40)
    # single dropout draws are noisy: compare the mean of the last steps with the first
    assert np.mean(losses[-5:]) < 0.85 * losses[0]
    scalars, images = task.evaluate(params, {}, 60, "/tmp")
    assert set(scalars) >= {"train_accuracy", "val_accuracy", "test_accuracy"}
    assert (
        scalars["train_accuracy"] == 1.0 and scalars["test_accuracy"] > 0.7
    )  # two leaders label the clubs


def test_sgc_precomputes_propagation_once():
    task = T.NodeClassification(node_config(dict(name="sgc", k=2)))
    assert task.model.k == 0  # S^K X is cached on the host: the trained model is a linear map
    g = padding.from_edges(
        task.dataset.senders, task.dataset.receivers, 34, nodes=D.normalize_features(task.dataset.x)
    )
    s = padding.dense_gcn_matrix(g.senders, g.receivers, g.edge_weight, g.num_nodes)[:34, :34]
    np.testing.assert_allclose(
        task.arrays["nodes"][:34],
        s @ s @ D.normalize_features(task.dataset.x),
        rtol=1e-5,
        atol=1e-6,
    )
    assert task.train_batch(0)["nodes"].shape[0] == 8  # the two labelled rows, padded to 8
    assert set(task.batch_axes()) == {"nodes", "y", "train_mask"}
    params, losses = optax_steps(task, 30, lr=0.2)
    # single dropout draws are noisy: compare the mean of the last steps with the first
    assert np.mean(losses[-5:]) < 0.85 * losses[0]
    assert task.evaluate(params, {}, 30, "/tmp")[0]["train_accuracy"] == 1.0


def test_dropout_hash_mask_rate_and_independence():
    k = jax.random.key(3)
    m1 = np.asarray(L.hash_keep_mask(k, (200, 300), 0.6))
    m2 = np.asarray(L.hash_keep_mask(jax.random.key(4), (200, 300), 0.6))
    assert abs(m1.mean() - 0.4) < 0.01 and abs(m2.mean() - 0.4) < 0.01
    assert abs((m1 & m2).mean() - 0.16) < 0.01  # independent across keys
    assert abs((m1[:, 1:] & m1[:, :-1]).mean() - 0.16) < 0.01  # no correlation between neighbours
    x = jnp.ones((1000, 50))
    y = L.Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": k})
    assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 2.0}
    assert np.array_equal(L.Dropout(0.5).apply({}, x, deterministic=True), x)


@pytest.mark.slow
def test_edge_sharded_training_equals_single_device():
    from netlab.train.trainer import Trainer

    results = {}
    for name, devices, sharded in (
        ("one", jax.devices()[:1], False),
        ("eight", jax.devices()[:8], True),
        ("replicated", jax.devices()[:8], False),  # the full graph on each of 8 devices
    ):
        cfg = node_config(dict(name="gcn", hidden=8, dropout=0.5), edge_sharded=sharded)
        cfg.mesh.data = -1
        trainer = Trainer(cfg, devices=devices, task=T.NodeClassification(cfg))
        state = trainer.init_state()
        batch = trainer.global_batch(0)
        if sharded:
            assert len(batch["senders"].sharding.device_set) == 8
            assert (
                batch["senders"].addressable_shards[0].data.shape[0]
                == batch["senders"].shape[0] // 8
            )
        for step in range(3):
            state, metrics = trainer.train_step(state, trainer.global_batch(step))
        results[name] = (jax.device_get(state.params), float(metrics["loss"]))
    for other in ("eight", "replicated"):
        assert results["one"][1] == pytest.approx(results[other][1], rel=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            results["one"][0],
            results[other][0],
        )


@pytest.mark.slow
def test_batch_norm_state_trains_replicated_like_one_device():
    """DeeperGCN with BatchNorm in its GENConv MLPs (running averages in ``batch_stats``) on a
    data=3 mesh, the full graph replicated on each device: loss, parameters and running averages
    equal the one-device run."""
    from netlab.train.trainer import Trainer

    results = []
    for devices in (jax.devices()[:1], jax.devices()[:3]):
        cfg = node_config(
            dict(name="deepergcn", hidden=4, num_layers=1, dropout=0.5, mlp_norm="batch")
        )
        cfg.mesh.data = -1
        trainer = Trainer(cfg, devices=devices, task=T.NodeClassification(cfg))
        assert trainer.mesh.shape["data"] == len(devices)
        state = trainer.init_state()
        for step in range(2):
            state, metrics = trainer.train_step(state, trainer.global_batch(step))
        results.append(jax.device_get((state.params, state.model_state, metrics["loss"])))
    stats = results[0][1]["batch_stats"]
    assert not np.allclose(stats["conv0"]["mlp"]["norm0"]["mean"], 0.0)  # updated by training
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *results)


def graph_config(**data):
    c = common.base_config()
    c.task = "graph.graph_classification"
    c.model = ml_collections.ConfigDict(
        dict(name="graph_classifier", hidden=16, num_layers=2, conv="gin")
    )
    c.data = ml_collections.ConfigDict(
        dict(
            dict(
                num_graphs=96,
                graphs_per_batch=4,
                max_nodes=160,
                max_edges=800,
                num_buckets=4,
                test_fraction=0.25,
            ),
            **data,
        )
    )
    c.train.batch_size = 2
    return c


@pytest.mark.slow
def test_graph_classification_compiles_once_per_bucket():
    task = T.GraphClassification(graph_config())
    traces = []

    def loss(params, batch):
        traces.append(batch["senders"].shape)  # Python side effect: runs once per compilation
        return task.loss_fn(params, {}, batch, jax.random.key(0), False)[0]

    f = jax.jit(loss)
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    steps_per_epoch = len(task.train_idx) // (task.rows * task.per_row)
    shapes = set()
    for step in range(steps_per_epoch):
        b = task.train_batch(step)
        assert b["senders"].shape[0] == 2
        shapes.add((b["nodes"].shape[1], b["senders"].shape[1]))
        f(params, b)
    assert len(shapes) > 1  # batches really had different sizes
    assert len(traces) == len(shapes) <= len(task.ladder)


@pytest.mark.slow
def test_graph_classification_learns_and_shards_rows():
    task = T.GraphClassification(graph_config())
    assert task.batch_axes()["senders"] == ("batch", None) and task.global_batch_size() == 2
    full = task.train_batch(0)
    assert full["senders"].shape[0] == 2  # the whole global batch; the trainer cuts process rows
    half = {k: process_rows(v, 1, 2) for k, v in full.items()}
    assert half["senders"].shape[0] == 1 and np.array_equal(half["label"], full["label"][1:])
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    tx = optax.adam(0.01)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        (l, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(
            params, {}, batch, jax.random.key(0), True
        )
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, l

    before = task.evaluate(params, {}, 0, "/tmp")[0]["train_accuracy"]
    for s in range(40):
        params, opt, _ = step(params, opt, task.train_batch(s))
    scalars = task.evaluate(params, {}, 40, "/tmp")[0]
    assert scalars["train_accuracy"] > max(before, 0.8) and scalars["test_accuracy"] > 0.7


def test_over_budget_batch_is_a_one_line_error_at_construction():
    with pytest.raises(padding.GraphBudgetError) as err:
        T.GraphClassification(graph_config(max_nodes=40, max_edges=800, num_buckets=2))
    msg = str(err.value)
    assert "\n" not in msg and "data.max_nodes to >= " in msg and "data.graphs_per_batch=4" in msg
    # the bound is the sum of the 4 largest graphs: a budget below it fails, one above it builds
    graphs = T.synthetic_graph_dataset(96, 0)
    need = sum(sorted((int(g.n_node[0]) for g, _ in graphs), reverse=True)[:4]) + 1
    with pytest.raises(padding.GraphBudgetError):
        T.GraphClassification(graph_config(max_nodes=need - 8, num_buckets=1), graphs=graphs)
    T.GraphClassification(
        graph_config(max_nodes=padding.round_up(need, 8), num_buckets=1), graphs=graphs
    )


@pytest.mark.slow
def test_link_prediction_on_karate():
    c = common.base_config()
    c.model = ml_collections.ConfigDict(dict(name="link_predictor", hidden=16, out=8))
    c.data = ml_collections.ConfigDict(
        dict(name="karate", data_dir="", val_fraction=0.1, test_fraction=0.15)
    )
    task = T.LinkPrediction(c)
    n_und = D.load_karate().num_edges // 2
    assert len(task.train_pos) + len(task.val_pos) + len(task.test_pos) == n_und
    assert task.arrays["edge_mask"].sum() == 2 * len(
        task.train_pos
    )  # held-out edges are not in the graph
    params, losses = optax_steps(task, 50, lr=0.02)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    scalars, _ = task.evaluate(params, {}, 50, "/tmp")
    assert 0.0 <= scalars["val_auc"] <= 1.0 and scalars["test_auc"] > 0.5


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=50), rng.integers(0, 2, 50)
    pairs = [
        (a > b) + 0.5 * (a == b)
        for a, ya in zip(s, y)
        for b, yb in zip(s, y)
        if ya == 1 and yb == 0
    ]
    assert T.roc_auc(s, y) == pytest.approx(np.mean(pairs))


CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs" / "graph"
# (config file, argument) whose task is built: every Planetoid variant and one of each other file.
BUILT = [
    ("planetoid.py", f"model={m},data={d}")
    for m in ("gcn", "sgc", "gat", "gatv2", "appnp")
    for d in ("cora", "citeseer")
] + [
    ("sheaf.py", "data=texas"),
    ("recsys.py", "model=lightgcn,data=lastfm"),
    ("recsys.py", "model=ultragcn,data=lastfm"),
    ("gcn_karate.py", "cpu"),
    ("gin_synthetic.py", "cpu"),
    ("gae_cora.py", "cpu"),
    ("deepergcn_cora.py", "cpu"),
    ("gcn_texas.py", "cpu"),
    ("grand_cora.py", "cpu"),
    ("grand_cora.py", "split=lcc,cpu"),
    ("digrac_dsbm.py", "cpu"),
    ("gcrn.py", "cpu"),
    ("gpn.py", "cpu"),
    ("gpn.py", "data=csl"),
]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.py")))
def test_every_declared_variant_and_preset_loads_with_a_short_task_name(name):
    from netlab import configlib
    from netlab.train.task import TASKS

    path = CONFIG_DIR / name
    args = configlib.presets(path)
    assert {"cpu", "gpu", "pod"} <= set(args)
    for arg in args:
        cfg = configlib.load(str(path), arg)
        assert cfg.task.startswith("graph.") and TASKS.get(cfg.task) is not None
    doc = configlib._import_config_module(path).__doc__
    assert f"configs/graph/{name}" in doc and "python -m netlab.main" in doc


@pytest.mark.parametrize("name,arg", BUILT, ids=[f"{n}:{a}" for n, a in BUILT])
def test_config_builds_its_task(name, arg, shared_data_dir, monkeypatch):
    from netlab import configlib

    monkeypatch.setenv("NETLAB_DATA_DIR", str(shared_data_dir))
    cfg = configlib.load(str(CONFIG_DIR / name), arg)
    if "num_graphs" in cfg.data:
        cfg.data.num_graphs = 40
    if name == "digrac_dsbm.py":
        cfg.data.n = 200
    task = configlib.import_task(cfg)
    shapes = jax.eval_shape(task.init_variables, jax.random.key(0))
    assert jax.tree.leaves(shapes)
    axes = task.batch_axes()
    batch = task.train_batch(0)
    assert set(axes) == set(batch)


def test_planetoid_variants_keep_the_papers_settings():
    """A few values of the table, as the eight files it replaced had them."""
    from netlab import configlib

    def load(arg):
        return configlib.load(str(CONFIG_DIR / "planetoid.py"), arg)

    gcn, sgc, gat, appnp = (
        load(f"model={m},data=citeseer") for m in ("gcn", "sgc", "gat", "appnp")
    )
    assert (gcn.model.hidden, gcn.loss.weight_decay_scope, gcn.train.steps) == (16, "conv0", 200)
    assert sgc.loss.weight_decay == 1e-4 and load("model=sgc,data=cora").loss.weight_decay == 3e-5
    assert (gat.model.heads, gat.optimizer.lr, gat.train.steps) == (8, 0.005, 1000)
    assert (appnp.loss.weight_decay, appnp.loss.weight_decay_scope) == (5e-3, "lin0")
    pod = load("model=gat,data=cora,pod")
    assert pod.data.edge_sharded and pod.mesh.data == -1


def test_bad_variant_is_a_one_line_error():
    from netlab import configlib
    from netlab.errors import UserError

    for path, arg, word in (
        ("planetoid.py", "model=gin,data=cora", "gcn"),
        ("planetoid.py", "model=gcn,data=pubmed", "citeseer"),
        ("sheaf.py", "data=texas,maps=full", "orth"),
        ("recsys.py", "model=ultragcn,data=gowalla", "lightgcn"),
    ):
        with pytest.raises(UserError, match=word) as e:
            configlib.load(str(CONFIG_DIR / path), arg)
        assert "\n" not in str(e.value)


# -- config keys -----------------------------------------------------------------------------------

TASK_OF = {
    "grand_cora.py:cpu": "graph.continuous_node_classification",
    "sheaf.py:data=texas": "graph.continuous_node_classification",
    "sheaf.py:data=film": "graph.continuous_node_classification",
    "digrac_dsbm.py:cpu": "graph.digraph_clustering",
    "recsys.py:model=lightgcn,data=lastfm": "graph.recommendation",
    "gin_synthetic.py:cpu": "graph.graph_classification",
    "gae_cora.py:cpu": "graph.link_prediction",
}


@pytest.mark.parametrize("name", sorted(TASK_OF))
def test_task_names_of_graph_configs(name):
    from netlab import configlib
    from netlab.train.task import TASKS

    path, arg = name.split(":")
    cfg = configlib.load(str(CONFIG_DIR / path), arg)
    assert cfg.task == TASK_OF[name]
    assert TASKS.get(cfg.task).__module__.startswith("netlab.graph.")
    assert "data_dir" in cfg.data or path in ("digrac_dsbm.py", "gin_synthetic.py")


def test_data_dir_override_spelled_dir_is_a_config_error():
    from netlab import configlib
    from netlab.errors import UserError

    with pytest.raises(UserError, match="data.data_dir"):
        configlib.load(
            str(CONFIG_DIR / "planetoid.py"), "model=gcn,data=cora", {"data.dir": "/tmp"}
        )


def _with_data_dir_key(cfg):
    with cfg.unlocked():
        cfg.data.dir = "/somewhere"
    return cfg


def test_unknown_data_key_is_refused_by_every_task(shared_data_dir):
    import ml_collections

    from netlab.errors import UserError
    from netlab.graph import continuous_task, digrac_task, recsys_task

    cfg = _with_data_dir_key(node_config(dict(name="gcn", hidden=4)))
    with pytest.raises(UserError, match=r"'data.dir'.*did you mean 'data.data_dir'"):
        T.NodeClassification(cfg)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(name="grand", hidden_dim=4),
            data=dict(name="karate", data_dir="", dir="/x"),
            loss=dict(weight_decay=0.0),
        )
    )
    with pytest.raises(UserError, match="data.data_dir"):
        continuous_task.DiffusionNodeClassification(cfg)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(name="lightgcn"),
            train=dict(batch_size=8),
            data=dict(name="lastfm", data_dir=str(shared_data_dir), dir="/x"),
        )
    )
    with pytest.raises(UserError, match="data.data_dir"):
        recsys_task.Recommendation(cfg)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(hidden=4, hops=1, dropout=0.0),
            loss=dict(beta=0),
            data=dict(n=30, k=2, p=0.3, eta=0.1, style="cyclic", graph_seed=0, nodes=30),
        )
    )
    with pytest.raises(UserError, match="'data.nodes'"):
        digrac_task.DigraphClustering(cfg)
    cfg = _with_data_dir_key(graph_config())
    with pytest.raises(UserError, match="data.dir"):
        T.GraphClassification(cfg)


# -- model choice errors and the precision policy -------------------------------------------------


@pytest.mark.parametrize(
    "model,key,match",
    [
        (dict(name="lightgcn"), "model.name", "graph.recommendation.*choose one of .*gcn"),
        (dict(name="gcnn"), "model.name", "did you mean 'gcn'"),
        (dict(name="gcn", hiden=4), "model.hiden", "did you mean 'model.hidden'"),
        (dict(name="gat", heads=0), "model.heads", ">= 1"),
        (dict(name="nsd", map_type="diagonal"), "model.map_type", "did you mean 'diag'"),
        (dict(name="grand", hidden_dim=4, method="rk45"), "model.method", "euler, rk4, dopri5"),
    ],
)
def test_bad_model_values_are_one_line_errors_before_data_loads(model, key, match):
    from netlab.errors import UserError

    cfg = node_config(model, name="no_such_dataset")  # the model is checked before the data
    with pytest.raises(UserError, match=match) as e:
        T.NodeClassification(cfg)
    assert "\n" not in str(e.value) and key in str(e.value)


@pytest.mark.slow
def test_remat_is_refused_for_models_without_it_and_exact_for_the_others():
    from netlab.errors import UserError
    from netlab.nn import precision

    with pytest.raises(UserError, match="train.remat='full'.*model.name='sgc'.*gcn"):
        T.NodeClassification(node_config(dict(name="sgc", k=2)), precision.Policy(remat="full"))
    grads, params = {}, None
    for remat in ("none", "full"):
        task = T.NodeClassification(
            node_config(dict(name="gat", hidden=4, heads=2, dropout=0.3)),
            precision.Policy(remat=remat),
        )
        assert (task.model.remat_policy is None) == (remat == "none")
        if params is None:  # one init program: remat changes the gradient's program, not params
            params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
        batch = jax.tree.map(jnp.asarray, task.train_batch(0))
        fn = jax.jit(jax.grad(lambda p: task.loss_fn(p, {}, batch, jax.random.key(1), True)[0]))
        grads[remat] = fn(params)
        if remat == "full":
            assert "remat" in str(jax.make_jaxpr(fn)(params))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        grads["none"],
        grads["full"],
    )


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.py")))
def test_every_graph_preset_fits_a_multi_device_host(name):
    """On an 8-device host every preset of every graph config builds its mesh (full-batch graphs
    replicate over the data axis, or shard edges) and, for mini-batched tasks, splits its batch
    evenly over the data-parallel devices."""
    from netlab import configlib
    from netlab.sharding import mesh as meshlib

    path = CONFIG_DIR / name
    for arg in configlib.presets(path):
        cfg = configlib.load(str(path), arg)
        shape = dict(zip(MESH_AXES, meshlib.mesh_shape(cfg.mesh, 8)))
        dp = shape["data"] * shape["fsdp"] * shape["expert"]
        assert shape["data"] == 8, (name, arg, shape)
        if "gpu" in arg or "pod" in arg:  # cpu presets are for one (CPU) device
            assert cfg.train.batch_size % dp == 0, (name, arg, cfg.train.batch_size)
