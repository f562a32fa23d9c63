"""The Trainer's islands mode (netlab/train/islands.py) and the HLO byte counter
(netlab/tools/hlo_comm.py): DiLoCo with H = 1 is data-parallel SGD, H > 1 moves H times fewer
bytes per step, the island state survives a checkpoint exactly, bad configs fail at build."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from netlab.checkpoint import manager as ckptlib
from netlab.errors import UserError
from netlab.tools import hlo_comm
from netlab.train import islands
from netlab.train.trainer import Trainer
from tests.train.helpers import tiny_config

SGD = {
    "optimizer.name": "sgd",
    "optimizer.momentum": "0.0",
    "optimizer.schedule": "constant",
    "optimizer.warmup_steps": "0",
    "optimizer.lr": "0.1",
    "optimizer.weight_decay": "0.0",
}


class Regression:
    """A two-layer tanh MLP on random regression batches of 32 rows: a task (netlab/train/task.py
    protocol) that compiles in a fraction of the digits ConvNet's time; a config can name it as
    task "tests.train.test_islands:Regression" (tests/distributed/test_islands_multiprocess.py)."""

    def __init__(self, config=None, policy=None):
        self.config = config

    def init_variables(self, rng):
        k1, k2 = jax.random.split(rng)
        w1 = jax.random.normal(k1, (16, 32)) / 4
        return {"params": {"w1": w1, "b1": jnp.zeros(32), "w2": jax.random.normal(k2, (32,)) / 6}}

    def batch_axes(self):
        return {"x": ("batch", None), "y": ("batch",)}

    def global_batch_size(self):
        return 32

    def train_batch(self, step):
        rng = np.random.default_rng(step)
        x = rng.normal(size=(32, 16)).astype(np.float32)
        return {"x": x, "y": np.sin(x.sum(1)).astype(np.float32)}

    def loss_fn(self, params, model_state, batch, rng, train):
        h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
        loss = jnp.mean((h @ params["w2"] - batch["y"]) ** 2)
        return loss, ({}, model_state)

    def evaluate(self, params, model_state, step, workdir):
        return {}, {}


def trainer(mesh, **extra):
    over = {f"mesh.{k}": str(v) for k, v in mesh.items()}
    return Trainer(tiny_config(**SGD, **over, **extra), task=Regression())


@pytest.fixture(scope="module")
def dp():
    return trainer({"data": 8})


@pytest.fixture(scope="module")
def islands8():
    """8 islands of one device each, H = 4, the paper's outer Nesterov SGD (lr 0.7, m 0.9)."""
    return trainer({"island": 8, "data": 1}, **{"islands.sync_every": "4", "train.steps": "6"})


def _run(trainer, state, start, stop):
    for step in range(start, stop):
        state, _ = trainer.train_step(state, trainer.global_batch(step), step)
    return state


def test_h1_outer_sgd_lr1_equals_data_parallel(dp):
    """4 islands x data 2, H = 1, inner SGD, outer SGD lr 1 without momentum: every step is the
    data-parallel SGD step of the 8-device mesh on the same global batch (to rounding): the island
    mean of theta - (theta - lr g_k) is lr times the mean gradient of the global batch."""
    isl = trainer(
        {"island": 4, "data": 2},
        **{"islands.sync_every": "1", "islands.outer_lr": "1.0", "islands.outer_momentum": "0.0"},
    )
    assert isl.islands.syncs == frozenset(range(1, isl.total_steps + 1))
    a, b = _run(dp, dp.init_state(), 0, 2), _run(isl, isl.init_state(), 0, 2)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a.params, b.params
    )
    local = jax.device_get(b.opt_state.local)  # every island restarts from the outer params
    jax.tree.map(
        lambda p, q: np.testing.assert_array_equal(q, np.broadcast_to(p, q.shape)),
        jax.device_get(b.params),
        local,
    )


def test_islands_communicate_h_times_less_per_step(dp, islands8):
    """Bytes per device from the compiled HLO: data-parallel training all-reduces |theta| every
    step; 8 islands of H = 4 move nothing but the scalar metrics on an inner step and |theta| on
    the sync step, so H times less per step (up to the metrics' few bytes)."""
    theta = sum(a.size * 4 for a in jax.tree.leaves(dp.abstract_state.params))
    ref, got = hlo_comm.trainer_comm(dp), hlo_comm.trainer_comm(islands8)
    assert 0 <= ref["step"]["total"] - theta < 64  # the gradients + a few float32 metrics
    assert ref["step"]["unknown_trip_counts"] == 0
    assert got["step"]["total"] < 64  # the metrics only
    assert got["sync_step"]["total"] - got["step"]["total"] == theta
    assert got["per_step"] - got["step"]["total"] == theta / 4


def test_resume_mid_round_is_exact(islands8, tmp_path):
    """6 steps (syncs after 4 and 6) straight, and 3 steps -> Orbax checkpoint -> restore -> 3
    more: bitwise the same outer params, island params, inner and outer optimizer states."""
    assert islands8.islands.syncs == frozenset({4, 6})
    straight = jax.device_get(_run(islands8, islands8.init_state(), 0, 6))
    ckpt = ckptlib.Checkpointer(str(tmp_path / "ckpt"), every=1, max_to_keep=0, async_save=False)
    try:
        ckpt.save(3, _run(islands8, islands8.init_state(), 0, 3), {"task": "x"}, force=True)
        ckpt.wait()
        restored = ckpt.restore(3, islands8.abstract_state)
    finally:
        ckpt.close()
    assert restored.opt_state.local["w1"].sharding.spec[0] == "island"
    resumed = jax.device_get(_run(islands8, restored, 3, 6))
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
    assert int(resumed.step) == 6
    diff = np.abs(resumed.opt_state.local["w1"] - resumed.params["w1"])
    assert diff.max() == 0  # synced at the last step
    # checkpoint.init_from: every island restarts from the given (outer) parameters
    fresh = islands8.with_params(islands8.init_state(), resumed.params)
    assert fresh.opt_state.local["w1"].sharding == islands8.state_shardings.opt_state.local["w1"]
    np.testing.assert_array_equal(fresh.opt_state.local["w1"][5], resumed.params["w1"])


def test_hlo_comm_counts_each_collective_and_while_trips():
    """One compiled shard_map program on 4 devices: a psum inside a 5-step scan (an HLO while
    with a known trip count), an all-gather, a ppermute and a psum_scatter, against their sizes
    by hand (bytes per device)."""
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("x",))

    def f(a, b):
        c = jax.lax.scan(lambda c, _: (jax.lax.psum(2 * c, "x"), None), a, None, length=5)[0]
        g = jax.lax.all_gather(b, "x", tiled=True)  # (8, 3) from (2, 3) per device
        p = jax.lax.ppermute(b, "x", [(i, (i + 1) % 4) for i in range(4)])
        return c, g, p, jax.lax.psum_scatter(g, "x", tiled=True)

    fn = jax.jit(
        jax.shard_map(
            f,
            mesh=mesh,
            in_specs=(P(), P("x")),
            out_specs=(P(), P(), P("x"), P("x")),
            check_vma=False,
        )
    )
    text = hlo_comm.compiled_text(fn, jnp.ones(16), jnp.ones((8, 3)))
    got = hlo_comm.collective_bytes(text)
    want = dict(all_reduce=5 * 16 * 4, all_gather=8 * 3 * 4, collective_permute=2 * 3 * 4)
    assert got == dict(want, reduce_scatter=8 * 3 * 4, total=536, unknown_trip_counts=0)


def test_sync_points_fixed_h_and_qsr():
    """Fixed H: every H-th step and the last; QSR (alpha > 0): the ends of diloco.qsr_periods."""
    assert islands.sync_points(10, 4, 0.0) == frozenset({4, 8, 10})
    sched = lambda t: 0.1 * (1 + jnp.cos(jnp.pi * t / 40)) / 2  # noqa: E731
    got = islands.sync_points(40, 2, 0.03, sched, warmup_steps=2)
    periods = np.diff([0, *sorted(got)])
    assert sorted(got)[-1] == 40 and periods[0] == 2 and periods.max() > 2


@pytest.mark.parametrize(
    "over, match",
    [
        ({"islands.sync_every": "4"}, "needs mesh.island > 1"),
        ({"mesh.island": "2"}, "mesh.island=2 needs islands"),
        (
            {"mesh.island": "2", "islands.sync_every": "2", "train.batch_size": "36"},
            "multiple of 8",
        ),
        ({"mesh.island": "3", "islands.sync_every": "2"}, "mesh"),
        ({"mesh.island": "2", "islands.sync_every": "2", "islands.outer_lr": "0.0"}, "outer lr"),
        ({"mesh.island": "2", "islands.sync_every": "2", "mesh.tensor": "2"}, "tensor=2 and"),
        ({"mesh.island": "2", "islands.sync_every": "2", "mesh.expert": "4"}, "mesh.expert=4"),
    ],
)
def test_bad_islands_configs_fail_at_build(over, match):
    with pytest.raises(UserError, match=match):
        Trainer(tiny_config(**{"mesh.data": "-1", **over}))
