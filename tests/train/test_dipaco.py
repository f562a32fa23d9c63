"""DiPaCo (netlab/train/dipaco.py): the per-module outer gradient against a numpy transcription,
document-level routing, path-wise Orbax checkpoints, and the reduction to DiLoCo."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from netlab.errors import UserError
from netlab.train import diloco, dipaco

D, B, H = 3, 4, 2
PATHS = [(0, 0), (0, 1), (1, 1)]  # module (level 1, index 2) is in no path


def grid(shape, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        {
            "w": jnp.asarray(rng.normal(size=(m, D, D)) * 0.5, jnp.float32),
            "b": jnp.asarray(rng.normal(size=(m, D)) * 0.1, jnp.float32),
        }
        for m in shape
    )


def loss_fn(path_params, batch):
    h = batch["x"]
    for level in path_params:
        h = jnp.tanh(h @ level["w"] + level["b"])
    return jnp.mean((h - batch["y"]) ** 2)


def data(k, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(k, H, B, D)).astype(np.float32),
        "y": rng.normal(size=(k, H, B, D)).astype(np.float32),
    }


def mesh_of(k):
    return Mesh(np.asarray(jax.devices()[:k]), ("data",))


@pytest.fixture(scope="module")
def one_round():
    """Three islands on paths PATHS of a (2, 3) grid, inner SGD, outer SGD lr 1 (new = old -
    Delta), one round."""
    modules = grid((2, 3))
    algo = dipaco.DiPaCo(
        loss_fn, optax.sgd(0.1), mesh_of(3), PATHS, outer=diloco.outer_optimizer(1.0, 0.0)
    )
    batches = data(3)
    state = algo.round(algo.init(modules), batches)
    return modules, batches, state


def test_module_outer_delta_is_mean_over_exactly_its_paths(one_round):
    modules, batches, state = one_round

    @jax.jit
    def local(pp, b):  # one island's H inner SGD steps, alone
        def step(p, x):
            return jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(loss_fn)(p, x)), None

        return jax.lax.scan(step, pp, b)[0]

    deltas = []
    for k, path in enumerate(PATHS):
        start = dipaco.path_params(modules, path)
        end = local(start, jax.tree.map(lambda a: a[k], batches))
        deltas.append(jax.tree.map(lambda s, e: np.asarray(s) - np.asarray(e), start, end))
    for l, m in enumerate((2, 3)):
        for j in range(m):
            users = [k for k, p in enumerate(PATHS) if p[l] == j]
            for name in ("w", "b"):
                old = np.asarray(modules[l][name][j])
                want = old - np.mean([deltas[k][l][name] for k in users], 0) if users else old
                got = np.asarray(state.modules[l][name][j])
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state.modules[1]["w"][2], modules[1]["w"][2])  # unused


def test_routing_is_per_document_and_fixed_before_training():
    rng = np.random.default_rng(0)
    embedding = np.concatenate([np.eye(2)[[0] * 5 + [1] * 5] * 5, rng.normal(size=(10, 2))])
    docs = np.concatenate([rng.integers(0, 5, (6, 12)), rng.integers(5, 10, (6, 12))])
    docs[:, 4:] = rng.integers(10, 20, (12, 8))  # past the prefix: tokens of no cluster
    router = dipaco.DocumentRouter.fit(dipaco.prefix_features(docs, embedding, 4), 2)
    doc_paths = router.route(dipaco.prefix_features(docs, embedding, 4))
    assert len(set(doc_paths[:6])) == 1 and len(set(doc_paths[6:])) == 1
    assert doc_paths[0] != doc_paths[6]
    # documents of different lengths packed into rows of 10 tokens; document 3 spans two rows
    lengths = [3, 4, 2, 7, 4, 5, 5]
    segment_ids = np.repeat(np.arange(7), lengths).reshape(3, 10)
    tokens = dipaco.token_paths(doc_paths[:7], segment_ids)
    for doc in range(7):
        assert set(tokens[segment_ids == doc]) == {doc_paths[doc]}
    shards = dipaco.shard_documents(doc_paths, 2)
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(12))


def test_path_checkpoints_round_trip_and_reassemble(one_round, tmp_path):
    modules, _, state = one_round
    dirs = dipaco.save_islands(tmp_path, state.modules, PATHS)
    path, params = dipaco.restore_path(dirs[1], state.modules)
    assert path == PATHS[1]
    for got, want in zip(params, dipaco.path_params(state.modules, PATHS[1])):
        for name in ("w", "b"):
            np.testing.assert_array_equal(got[name], want[name])
    full = dipaco.reassemble(dirs, state.modules, fill=modules)
    for got, want in zip(jax.tree.leaves(full), jax.tree.leaves(state.modules)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(UserError, match=r"\(1, 2\)"):
        dipaco.reassemble(dirs, state.modules)


def test_one_module_grid_is_diloco():
    """One level of one module, two islands on that path: DiPaCo rounds are DiLoCo rounds
    (AdamW inner, Nesterov outer, inner moments carried over)."""
    k, inner = 2, optax.adamw(1e-2, weight_decay=0.1)
    modules = grid((1,))
    single = lambda p, batch: loss_fn((p,), batch)
    ref = diloco.DiLoCo(single, inner, mesh_of(k))
    algo = dipaco.DiPaCo(loss_fn, inner, mesh_of(k), [(0,), (0,)])
    s_ref = ref.init(jax.tree.map(lambda a: a[0], modules[0]))
    s = algo.init(modules)
    for seed in range(2):
        b = data(k, seed)
        s_ref, s = ref.round(s_ref, b), algo.round(s, b)
    for got, want in zip(jax.tree.leaves(s.modules[0]), jax.tree.leaves(s_ref.params)):
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def test_bad_paths_are_user_errors():
    with pytest.raises(UserError, match="one path"):
        dipaco.DiPaCo(loss_fn, optax.sgd(0.1), mesh_of(2), [(0, 0)])
    algo = dipaco.DiPaCo(loss_fn, optax.sgd(0.1), mesh_of(2), [(0, 0), (0, 3)])
    with pytest.raises(UserError, match="module count"):
        algo.init(grid((2, 3)))
