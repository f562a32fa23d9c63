"""Every entry of the graph registries, walked.

MODELS: each model is built from a config (`config.model.name`, the task's short name) on tiny
synthetic data and takes one Trainer step (finite loss, parameters move); under 64-bit JAX with
`train.compute_dtype=float64` its loss and gradient hold no float32 value. LAYERS: each layer is
built as `cls(features, dtype=..., param_dtype=...)` and applied to a tiny graph: output width
`features`, padding rows with garbage change no real row, and float64 in gives float64 throughout.
The tables must name exactly the registered entries, so a new model or layer joins the walk.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from netlab.graph import datasets as D
from netlab.graph import generators, padding, recsys_data
from netlab.graph.registries import LAYERS, MODELS
from netlab.nn import precision

# Small hyperparameters per model (its config's model.* besides the name).
MODEL_CONFIGS = {
    "gcn": dict(hidden=4),
    "cognn": dict(hidden=4, num_layers=2, dropout=0.1),
    "drew": dict(hidden=4, num_layers=2, nu=1, dropout=0.1),
    "pathnn": dict(hidden=4, cutoff=2, variant="ap", dropout=0.1),
    "laser": dict(hidden=4, num_layers=1, max_hop=2, rho=0.5, dropout=0.1),
    "omega": dict(hidden=4, num_layers=2, dropout=0.1),
    "omega_gat": dict(hidden=4, num_layers=1, heads=2, dropout=0.1),
    "gkedm": dict(hidden=4, num_layers=1, conv="gcn", heads=2, dropout=0.1),
    "dcm": dict(hidden=4, num_layers=1, max_cycle_len=3, max_cells=512, dropout=0.1),
    "tide": dict(hidden=4, num_blocks=1, k=4, dropout=0.1, input_dropout=0.1),
    "lfgcn": dict(hidden=4, num_layers=2, gamma=0.5, drop_rate=0.2, dropout=0.1),
    "catgcn": dict(hidden=4, embed_dim=3, max_fields=3, hops=1, dropout=0.1),
    "sgc": dict(k=2),
    "gat": dict(hidden=2, heads=2, dropout=0.2),
    "gatv2": dict(hidden=2, heads=2, dropout=0.2),
    "appnp": dict(hidden=4, k=3, alpha=0.2),
    "deepergcn": dict(hidden=4, num_layers=2),
    "grand": dict(hidden_dim=4, time=1.0, num_steps=2, heads=2, key_dim=2, input_dropout=0.1),
    "nsd": dict(d=2, hidden_channels=2, num_layers=2, dropout=0.1),
    "graph_classifier": dict(hidden=4, num_layers=2, conv="gin"),
    "gpn": dict(hidden=4, levels=2),
    "graph_mixer": dict(hidden=4, num_patches=2, gnn_layers=1, mixer_layers=1, rw_steps=2),
    "graph_vit": dict(hidden=4, num_patches=2, gnn_layers=1, mixer_layers=1, rw_steps=2, heads=2),
    "klgnn": dict(hidden=4, k=2, num_layers=1, num_tuples=6),
    "spen": dict(hidden=4, hops=1, num_layers=1),
    "ngn": dict(hidden=4, num_layers=1, num_kernels=4),
    "link_predictor": dict(hidden=4, out=4),
    "ncn": dict(hidden=4, out=4, num_layers=1, predictor_hidden=4, dropout=0.1),
    "digrac": dict(hidden=4, hops=1, dropout=0.1, tau=0.5),
    "gcrn": dict(hidden=4, K=2, peephole=True),
    "rnar": dict(hidden=4, aggregator="lstm"),
    "digress": dict(dx=4, de=2, dy=2, num_layers=1, heads=2, features="none"),
    "nat": dict(self_dim=4, ngh_dim=2, time_dim=2, cache_sizes=(2, 2), pos_dim=2, heads=1),
    "tgn": dict(memory_dim=4, time_dim=2, embedding="identity"),
    "pres": dict(memory_dim=4, time_dim=2, embedding="identity", gamma=0.5, beta=0.1),
    "lightgcn": dict(
        dim=4,
        num_layers=2,
        init_std=0.1,
        reg=1e-4,
        lam=0.0,
        gamma=0.0,
        neg_weight=1.0,
        num_negatives=1,
        num_neighbors=3,
    ),
    "ultragcn": dict(
        dim=4,
        num_layers=0,
        init_std=0.1,
        reg=1e-4,
        lam=1.0,
        gamma=0.5,
        neg_weight=2.0,
        num_negatives=3,
        num_neighbors=3,
    ),
}
TASK_NAMES = {
    "node": "graph.node_classification",
    "graph": "graph.graph_classification",
    "link": "graph.link_prediction",
    "digraph": "graph.digraph_clustering",
    "recsys": "graph.recommendation",
    "snapshot": "graph.snapshot_forecasting",
    "generation": "graph.generation",
    "temporal": "graph.temporal_link",
    "nar": "graph.algorithmic_reasoning",
}


def test_walk_tables_name_every_registered_entry():
    assert sorted(MODEL_CONFIGS) == MODELS.names()
    assert sorted(LAYER_KW) == LAYERS.names()


def tiny_nodes():
    """A 2-class contextual SBM of 24 nodes (6 features) with train/val/test masks."""
    s, r, y, x = generators.contextual_sbm((12, 12), 0.4, 0.05, feature_dim=6, mu=1.0, rng=0)
    part = np.arange(24) % 3
    return D.NodeDataset("csbm", x.astype(np.float32), y, s, r, 2, part == 0, part == 1, part == 2)


def tiny_interactions():
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(10), 4)
    i = np.unique(u * 12 + rng.integers(0, 12, len(u)))
    u, i = (i // 12).astype(np.int32), (i % 12).astype(np.int32)
    test = np.arange(len(u)) % 4 == 0
    return recsys_data.Interactions("tiny", 10, 12, u[~test], i[~test], u[test], i[test])


def make_config(name):
    kind = MODELS.get(name).TASK
    c = common.base_config()
    c.task = TASK_NAMES[kind]
    c.model = ml_collections.ConfigDict(dict(name=name, **MODEL_CONFIGS[name]))
    c.train.batch_size = 0
    c.mesh.data = 1
    c.optimizer.lr = 0.05
    if kind == "node":
        c.data = ml_collections.ConfigDict(
            dict(
                name="csbm",
                data_dir="",
                split=0,
                row_normalize=False,
                edge_sharded=False,
                precompute=True,
            )
        )
    elif kind == "link":
        c.data = ml_collections.ConfigDict(
            dict(name="csbm", data_dir="", val_fraction=0.1, test_fraction=0.1, edge_sharded=False)
        )
    elif kind == "graph":
        c.data = ml_collections.ConfigDict(
            dict(
                num_graphs=8,
                graphs_per_batch=2,
                max_nodes=32,
                max_edges=128,
                num_buckets=1,
                test_fraction=0.25,
            )
        )
        c.train.batch_size = 2
    elif kind == "digraph":
        c.data = ml_collections.ConfigDict(
            dict(
                n=24,
                k=2,
                p=0.3,
                eta=0.1,
                style="cyclic",
                ambient=False,
                size_ratio=1.0,
                graph_seed=0,
            )
        )
        c.loss = ml_collections.ConfigDict(dict(beta=1, normalisation="vol_sum"))
    elif kind == "generation":
        c.data = ml_collections.ConfigDict(dict(name="planar", num_graphs=10, num_nodes=6, seed=0))
        c.diffusion = ml_collections.ConfigDict(dict(T=4, lam=5.0, eval_samples=2))
        c.train.batch_size = 2
    elif kind == "temporal":
        c.data = ml_collections.ConfigDict(
            dict(name="synthetic", num_nodes=6, num_events=40, batch_size=4, chunk=2, seed=0)
        )
    elif kind == "nar":
        c.data = ml_collections.ConfigDict(
            dict(n_train=4, n_ood=5, steps_per_node=2, num_eval=2, eval_batch=2)
        )
        c.train.batch_size = 2
    elif kind == "snapshot":
        c.data = ml_collections.ConfigDict(
            dict(num_nodes=6, num_sequences=3, seq_len=2, feature_dim=1, noise=0.1, seed=0)
        )
    else:
        c.data = ml_collections.ConfigDict(
            dict(name="tiny", data_dir="", k=5, eval_users_per_chunk=8)
        )
        c.train.batch_size = 8
    return c


def make_task(config, policy=None):
    """The configured task, on tiny synthetic data where a dataset would be read."""
    from netlab.graph import task as T
    from netlab.train.task import TASKS

    cls = TASKS.get(config.task)
    policy = policy or precision.from_config(config.train)
    kind = MODELS.get(config.model.name).TASK
    if kind in ("node", "link"):
        return cls(config, policy, dataset=tiny_nodes())
    if kind == "graph":
        return cls(config, policy, graphs=T.synthetic_graph_dataset(8, 0, 4, 8))
    if kind == "recsys":
        return cls(config, policy, data=tiny_interactions())
    return cls(config, policy)


# The costliest compiles (5-11 s each on 2 cores) are traced, not run: their files test the model's
# forward (and, where the paper gives one, its gradient) property by property.
TRACE_ONLY = (
    "catgcn",
    "dcm",
    "digress",
    "gkedm",
    "gpn",
    "graph_mixer",
    "graph_vit",
    "nat",
    "ngn",
    "omega",
    "omega_gat",
    "pres",
    "rnar",
    "spen",
    "tgn",
    "tide",
)


@pytest.mark.slow  # one Trainer compile per model: a few seconds each on 2 cores
@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_model_trains_one_step_from_its_config(name):
    from netlab.train.trainer import Trainer

    config = make_config(name)
    task = make_task(config)
    assert type(task.model) is MODELS.get(name)
    trainer = Trainer(config, devices=jax.devices()[:1], task=task)
    if name in TRACE_ONLY:  # init and step build and trace; their compiles are the costly part
        with trainer.context():
            state = jax.eval_shape(trainer._init, jax.random.key(config.seed))
        _, metrics = jax.eval_shape(trainer._train_step, state, trainer.global_batch(0))
        assert metrics["loss"].shape == () and metrics["grad_norm"].shape == ()
        return
    state = trainer.init_state()
    before = jax.device_get(state.params)
    state, metrics = trainer.train_step(state, trainer.global_batch(0))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, jax.device_get(state.params))
    assert any(jax.tree.leaves(moved))


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_model_float64_loss_and_gradient_hold_no_float32(name):
    config = make_config(name)
    config.train.compute_dtype = "float64"
    with jax.enable_x64(True):
        task = make_task(config)
        params = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
        batch = jax.tree.map(jnp.asarray, task.train_batch(0))
        loss = lambda p: task.loss_fn(p, {}, batch, jax.random.key(1), True)[0]
        text = str(jax.make_jaxpr(jax.value_and_grad(loss))(params))
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(params))
    assert "f64" in text and "f32" not in text


# Non-default layer hyperparameters for the walk (none needed so far: every layer is built as
# `cls(features, dtype=..., param_dtype=...)`).
LAYER_KW = {
    name: {}
    for name in (
        "appnp",
        "cognn",
        "dimpa",
        "gat",
        "gatv2",
        "gcn",
        "genconv",
        "gin",
        "gkedm",
        "gnp",
        "grand",
        "lightgcn",
        "omega",
        "omega_gat",
        "rnar",
        "sgc",
        "sheaf",
    )
}
NL, FL, OUT = 10, 6, 4


def layer_graph(budget=None, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NL, FL)).astype(dtype)
    return padding.from_edges(
        rng.integers(0, NL, 24),
        rng.integers(0, NL, 24),
        NL,
        nodes=x,
        symmetrize=True,
        budget=budget,
        dtype=dtype,
    )


@pytest.mark.parametrize("name", sorted(LAYER_KW))
def test_layer_applies_and_ignores_padding_rows(name):
    layer = LAYERS.get(name)(OUT, **LAYER_KW[name])
    g = padding.to_device(layer_graph(padding.Budget(NL + 6, 96, 3)))
    garbage = 100.0 * np.random.default_rng(1).normal(size=(6, FL)).astype(np.float32)
    nodes = jnp.stack([g.nodes, g.nodes.at[NL:].set(garbage)])  # clean / poisoned padding
    params = nn.unbox(jax.jit(layer.init)(jax.random.key(0), g, g.nodes))
    out = np.asarray(jax.jit(jax.vmap(lambda x: layer.apply(params, g.replace(nodes=x), x)))(nodes))
    assert out.shape == (2, NL + 6, OUT) and np.all(np.isfinite(out[0]))
    np.testing.assert_allclose(out[1, :NL], out[0, :NL], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYER_KW))
def test_layer_float64_in_float64_throughout(name):
    with jax.enable_x64(True):
        layer = LAYERS.get(name)(OUT, dtype=jnp.float64, param_dtype=jnp.float64, **LAYER_KW[name])
        g = padding.to_device(layer_graph(dtype=np.float64))
        params = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), g, g.nodes))
        text = str(jax.make_jaxpr(lambda p: layer.apply(p, g, g.nodes))(params))
        out = jax.eval_shape(lambda p: layer.apply(p, g, g.nodes), params)
    assert out.dtype == jnp.float64 and "f64" in text and "f32" not in text
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(params))
