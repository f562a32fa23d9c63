"""Pipeline parallelism (netlab/sharding/pipeline.py): GPipe and 1F1B over 4 fake devices give the
loss and gradients of the unpipelined model; a stage-sharded checkpoint restores on 2 stages."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError
from netlab.sharding import pipeline as pl
from netlab.sharding.mesh import make_mesh

L, D, B, M = 8, 8, 16, 8


def layer(p, h, c=0.0):  # a residual MLP layer; c: a per-example input every layer sees
    return h + jnp.tanh(h @ p["w"] + p["b"] + c)


def head(hp, out, target):  # per-microbatch squared error of a linear read-out
    return jnp.mean((out @ hp["v"] - target) ** 2)


def problem():
    k = jax.random.split(jax.random.key(0), 5)
    params = dict(
        w=jax.random.normal(k[0], (L, D, D)) / D**0.5, b=0.1 * jax.random.normal(k[1], (L, D))
    )
    hp = dict(v=jax.random.normal(k[2], (D,)))
    x = jax.random.normal(k[3], (B, D))
    y = jax.random.normal(k[4], (B,))
    return params, hp, x, y


def mean_head(hp, h, y):
    return jnp.mean(jax.vmap(head, (None, 0, 0))(hp, h.reshape(M, -1, D), y.reshape(M, -1)))


def mesh4():
    return make_mesh(dict(stage=4, data=1), devices=jax.devices()[:4])


def test_gpipe_and_1f1b_equal_the_unpipelined_model():
    with jax.enable_x64(True):  # float64: the orders of summation differ, rtol 1e-5 is then tight
        params, hp, x, y = jax.tree.map(lambda a: a.astype(jnp.float64), problem())
        c = 0.3 * jax.random.normal(jax.random.key(1), (B, D), jnp.float64)
        check_equal(params, hp, x, y, c)


def check_equal(params, hp, x, y, c):
    """Loss and gradients w.r.t. the layers, the head, the input and the per-example input c."""

    def ref(p, hp, x, c):
        return mean_head(hp, pl.stage_apply(layer, p, x, c), y)

    def gpipe(p, hp, x, c):  # the forward pipeline differentiated by jax.grad
        return mean_head(hp, pl.forward(layer, p, x, (c,), microbatches=M), y)

    def explicit(schedule):
        def f(p, hp, x, c):
            return pl.loss(layer, head, p, hp, x, y, (c,), microbatches=M, schedule=schedule)

        return f

    def all_four(p, hp, x, c):
        vg = lambda f: jax.value_and_grad(f, argnums=(0, 1, 2, 3))(p, hp, x, c)  # noqa: E731
        return [vg(f) for f in (ref, gpipe, explicit("1f1b"), explicit("gpipe"))]

    with jax.set_mesh(mesh4()):
        out = jax.jit(all_four)(params, hp, x, c)
    (l0, g0), *rest = out
    assert np.isfinite(float(l0)) and float(jnp.abs(g0[0]["w"]).max()) > 0
    assert float(jnp.abs(g0[3]).max()) > 0
    for l1, g1 in rest:
        np.testing.assert_allclose(l1, l0, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("s,m", [(4, 8), (4, 4), (2, 5)])
def test_schedule_tables(s, m):
    """1F1B holds at most S - s microbatches on stage s (GPipe: M); both take 2(M + S - 1) ticks
    and run every microbatch forward and backward once per stage."""
    for schedule, bound in (("1f1b", lambda st: s - st), ("gpipe", lambda st: m)):
        kind, mb, slots = pl.schedule_table(s, m, schedule)
        assert kind.shape[0] == 2 * (m + s - 1)
        assert slots == (s if schedule == "1f1b" else m)
        for st in range(s):
            for k in (1, 2):
                assert sorted(mb[kind[:, st] == k, st]) == list(range(m))
            live = np.cumsum(np.where(kind[:, st] == 1, 1, np.where(kind[:, st] == 2, -1, 0)))
            assert live.max() == min(bound(st), m) and live[-1] == 0


def test_checkpoint_on_4_stages_restores_on_2(tmp_path):
    params, hp, x, y = problem()

    h = np.asarray(x, np.float64)  # the unpipelined loss, in numpy
    for w, b in zip(np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)):
        h = h + np.tanh(h @ w + b)
    loss = np.mean((h @ np.asarray(hp["v"], np.float64) - np.asarray(y)) ** 2)
    saved = jax.device_put(params, NamedSharding(mesh4(), P("stage")))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "state", saved)
    mesh2 = make_mesh(dict(stage=2, data=-1))
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh2, P("stage"))),
        params,
    )
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(tmp_path / "state", target)
    assert (
        restored["w"].sharding.spec == P("stage")
        and restored["w"].sharding.mesh.shape["stage"] == 2
    )
    assert restored["w"].addressable_shards[0].data.shape[0] == L // 2
    with jax.set_mesh(mesh2):
        loss2 = jax.jit(lambda p: mean_head(hp, pl.forward(layer, p, x, microbatches=M), y))(
            restored
        )
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)


def test_bad_input_is_one_line_user_error():
    params, hp, x, y = problem()
    cases = [
        (lambda: pl.check(6, 4, 8), "not divisible by mesh.stage=4"),
        (lambda: pl.check(8, 4, 2), "microbatches (train.grad_accum)=2 < mesh.stage=4"),
        (lambda: pl.check(8, 3, 8, devices=8), "mesh.stage=3 does not divide the 8 devices"),
        (lambda: pl.check(8, 4, 8, batch=12), "multiple of 8"),
        (lambda: pl.schedule_table(4, 8, "zb"), "choose one of gpipe, 1f1b"),
        (lambda: make_mesh(dict(stage=3, data=1)), "needs 3 devices"),
    ]
    cases.append((lambda: pl.forward(layer, params, x, microbatches=2), "< mesh.stage=4"))
    for fn, text in cases:
        with jax.set_mesh(mesh4()), pytest.raises(UserError) as e:
            fn()
        assert text in str(e.value) and "\n" not in str(e.value), str(e.value)
