"""Pipeline parallelism over the `stage` mesh axis: GPipe and 1F1B schedules.

A stack of L identical layers whose parameters are stacked on a leading layer axis is cut into S
stages of L/S consecutive layers (the leading axis sharded on mesh axis `stage`, S its size); a
batch is cut into M >= S microbatches that flow through the stages, activations moving from
stage s to s + 1 by a circular `jax.lax.ppermute` inside `jax.shard_map`.

- GPipe (Huang et al. 2019, "GPipe: Efficient Training of Giant Neural Networks using Pipeline
  Parallelism", Sec. 2.2): all forwards, then all backwards. `forward` is the classic
  circular-buffer forward pipeline (M + S - 1 ticks; at tick t stage s works on microbatch t - s);
  `jax.grad` through it is GPipe's backward, run in reverse tick order. It composes with any loss,
  so the models (DiT, LM) use it. Autodiff keeps every layer's residuals of all M microbatches
  until the backward starts: peak activation memory grows with M (with `remat`, one stage input
  per microbatch and tick, still O(M)).
- 1F1B (PipeDream-Flush: Narayanan et al. 2021, "Memory-Efficient Pipeline-Parallel DNN
  Training", Sec. 3.1, Fig. 4): stage s runs S - 1 - s warm-up forwards, then alternates one
  forward and one backward, then drains the backwards; one optimizer step per batch (a flush),
  so the gradients are exactly those of the unpipelined model. The backward of microbatch m on a
  stage is an explicit `jax.vjp` of that stage, so the loss head runs on the last stage inside
  the pipeline (`loss` / `value_and_grad` take a `head_fn`). A stage stashes the input of each
  microbatch it has run forward and not yet backward - at most S - s <= S of them, in a ring
  buffer of S slots - and recomputes its forward inside the `jax.vjp` at backward time (as
  GPipe's re-materialisation does): peak activation memory is O(S), independent of M. The
  explicit engine also runs the GPipe order (`schedule="gpipe"`, M stash slots) so the two
  schedules' memory can be compared on one program (bench/pipeline.py).

Both schedules idle (S - 1) / (M + S - 1) of the ticks (the bubble). In `forward` the bubble ticks
compute on placeholder inputs whose results are masked out (so their gradient is exactly zero);
the explicit engine skips them (`lax.switch` on the schedule table). Microbatch i takes the rows
i, i + M, i + 2M, ... of the batch, so a batch sharded over data-parallel devices keeps every
microbatch spread over all of them. Measured memory: bench/results/pipeline_memory.md.

Inside `shard_map` the replicated inputs (the batch, per-example extras, head parameters) are
cast to varying with `jax.lax.pcast` before stage-dependent use. The transpose of that cast is a
psum over the stages (netlab/train/diloco.py explains why that silently synchronises islands):
here it is the right gradient, as each stage contributes the part its layers see and the others
zero. The explicit engine computes its gradients with `jax.vjp` per device and psums the
replicated ones (head, input, extras) itself.

`Stack` is the flax face of `forward`: `depth` copies of a block with their parameters stacked on
a leading axis named `layers` (config rules map it to `stage`); on a mesh with stage > 1 it runs
the blocks through the pipeline, else as a `lax.scan`, the same function either way.

Only `stage` is a manual axis (`axis_names={axis}`): the other mesh axes stay automatic, so a
data-parallel batch stays sharded on them inside the pipeline.
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from netlab.errors import UserError

AXIS = "stage"
LAYERS = "layers"  # logical name of the stacked layer axis (rules map it to the `stage` axis)
SCHEDULES = ("gpipe", "1f1b")


# --------------------------------------------------------------------------------------------------
# Checks


def num_stages(mesh=None, axis: str = AXIS) -> int:
    """The size of mesh axis `axis` in `mesh` (default: the mesh in context; 1 if none)."""
    mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or axis not in mesh.axis_names:
        return 1
    return int(mesh.shape[axis])


def check(num_layers: int, stages: int, microbatches: int, batch: int = None, devices: int = None):
    """One-line UserErrors for a pipeline of `num_layers` layers on `stages` stages."""
    if devices is not None and (stages < 1 or devices % stages):
        raise UserError(
            f"mesh.stage={stages} does not divide the {devices} devices; choose a divisor of "
            f"{devices} for mesh.stage"
        )
    if num_layers % stages:
        raise UserError(
            f"model depth {num_layers} is not divisible by mesh.stage={stages}; every stage holds "
            f"depth / stage layers, so choose a depth that is a multiple of {stages}"
        )
    if microbatches < stages:
        raise UserError(
            f"pipeline microbatches (train.grad_accum)={microbatches} < mesh.stage={stages}; use "
            f"at least {stages} microbatches (more shrink the bubble (S-1)/(M+S-1))"
        )
    if batch is not None and batch % microbatches:
        raise UserError(
            f"batch of {batch} rows does not split into {microbatches} pipeline microbatches "
            f"(train.grad_accum); make the batch size a multiple of {microbatches}"
        )


def _check_call(params, x, microbatches, mesh, axis):
    stages = num_stages(mesh, axis)
    layers = {np.shape(a)[0] for a in jax.tree.leaves(params)}
    if len(layers) != 1:
        raise UserError(f"pipeline params need one leading layer axis, got sizes {layers}")
    b = {np.shape(a)[0] for a in jax.tree.leaves(x)}
    check(layers.pop(), stages, microbatches, b.pop())
    return stages


def stage_apply(layer_fn: Callable, local_params, h, *extras):
    """Run a stage's layers (leading axis of `local_params`) in order: a scan of `layer_fn`."""
    return jax.lax.scan(lambda c, p: (layer_fn(p, c, *extras), None), h, local_params)[0]


def _micro(x, m):
    """(B, ...) -> (M, B/M, ...), microbatch i = rows i, i + M, ...: a batch sharded on its
    leading axis (data parallel) keeps every microbatch spread over the same devices."""
    return jax.tree.map(lambda a: a.reshape((a.shape[0] // m, m) + a.shape[1:]).swapaxes(0, 1), x)


def _unmicro(x):
    return jax.tree.map(
        lambda a: a.swapaxes(0, 1).reshape((a.shape[0] * a.shape[1],) + a.shape[2:]), x
    )


def _vary(tree, axis):
    """Cast to varying over `axis` (the leaves not varying yet)."""

    def one(a):
        return (
            a
            if axis in jax.typeof(a).manual_axis_type.varying
            else jax.lax.pcast(a, (axis,), to="varying")
        )

    return jax.tree.map(one, tree)


def _shift(tree, stages, axis, step=1):
    perm = [(i, (i + step) % stages) for i in range(stages)]
    return jax.tree.map(lambda a: jax.lax.ppermute(a, axis, perm), tree)


def _take(tree, i):
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), tree)


def _put(tree, i, value, pred):
    def one(a, v):
        return jnp.where(pred, jax.lax.dynamic_update_index_in_dim(a, v, i, 0), a)

    return jax.tree.map(one, tree, value)


# --------------------------------------------------------------------------------------------------
# GPipe: the forward pipeline, differentiated by jax.grad


def forward(
    layer_fn: Callable,
    params,
    x,
    extras=(),
    *,
    microbatches: int,
    mesh=None,
    axis: str = AXIS,
    remat: bool = False,
):
    """y = layers(x) through the pipeline (GPipe under `jax.grad`).

    `layer_fn(layer_params, h, *extras) -> h` is one layer; `params` its parameters stacked on a
    leading axis of L layers (sharded on `axis`); `x` (B, ...) the input; `extras` per-example
    inputs every layer sees (e.g. a DiT's conditioning (B, D)), microbatched with `x`.
    """
    stages = _check_call(params, x, microbatches, mesh, axis)
    body_fn = functools.partial(stage_apply, layer_fn)
    if remat:
        body_fn = jax.checkpoint(body_fn)
    if stages == 1:  # nothing to overlap: the stack on the whole batch
        return body_fn(params, x, *extras)
    m, ticks = microbatches, microbatches + stages - 1

    def run(local, xs, es):
        s = jax.lax.axis_index(axis)
        xs, es = _vary(xs, axis), _vary(es, axis)
        state = jnp.zeros_like(xs[0])
        out = jnp.zeros_like(xs)

        def tick(carry, t):
            state, out = carry
            mine = jnp.clip(t - s, 0, m - 1)  # the microbatch this stage works on
            inp = jnp.where(s == 0, _take(xs, jnp.minimum(t, m - 1)), state)
            y = body_fn(local, inp, *_take(es, mine))
            done = (s == stages - 1) & (t >= stages - 1)
            out = _put(out, jnp.clip(t - stages + 1, 0, m - 1), y, done)
            return (_shift(y, stages, axis), out), None

        (_, out), _ = jax.lax.scan(tick, (state, out), jnp.arange(ticks))
        return jax.lax.psum(jnp.where(s == stages - 1, out, 0), axis)

    run = jax.shard_map(
        run,
        mesh=mesh,
        in_specs=(P(axis), P(), P()),
        out_specs=P(),
        axis_names={axis},
    )
    return _unmicro(run(params, _micro(x, m), _micro(tuple(extras), m)))


# --------------------------------------------------------------------------------------------------
# The explicit schedules (1F1B and GPipe order) with per-microbatch jax.vjp


def schedule_table(stages: int, microbatches: int, schedule: str = "1f1b"):
    """Simulate the schedule with unit-time ops: returns (kind, mb, slots) where kind[t, s] is 0
    (idle), 1 (forward) or 2 (backward) of microbatch mb[t, s] at tick t on stage s, and `slots`
    the stash ring size (the most microbatches in flight on a stage: S for 1F1B, M for GPipe).

    A stage takes its next op at tick t once its input arrived: a forward's activation from stage
    s - 1, a backward's cotangent from stage s + 1 (the last stage: its own forward), each sent at
    the end of an earlier tick."""
    if schedule not in SCHEDULES:
        raise UserError(f"pipeline schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")
    s_, m_ = stages, microbatches
    orders = []
    for s in range(s_):
        if schedule == "gpipe":
            ops = [(1, i) for i in range(m_)] + [(2, i) for i in range(m_)]
        else:  # PipeDream-Flush: S - 1 - s warm-up forwards, 1F1B, then drain (Narayanan Fig. 4)
            warm = min(s_ - 1 - s, m_)
            ops = [(1, i) for i in range(warm)]
            for i in range(m_ - warm):
                ops += [(1, warm + i), (2, i)]
            ops += [(2, i) for i in range(m_ - warm, m_)]
        orders.append(ops)
    done = {}  # (kind, m, s) -> tick
    pos, rows, t = [0] * s_, [], 0
    while any(p < len(o) for p, o in zip(pos, orders)):
        row = []
        for s in range(s_):
            if pos[s] == len(orders[s]):
                row.append((0, 0))
                continue
            k, i = orders[s][pos[s]]
            if k == 1:
                dep = (1, i, s - 1) if s > 0 else None
            else:
                dep = (2, i, s + 1) if s < s_ - 1 else (1, i, s)
            if dep is None or done.get(dep, t) < t:
                row.append((k, i))
                pos[s] += 1
            else:
                row.append((0, 0))
        for s, (k, i) in enumerate(row):
            if k:
                done[(k, i, s)] = t
        rows.append(row)
        t += 1
    table = np.asarray(rows, np.int32)  # (T, S, 2)
    inflight = 0
    for s in range(s_):
        n = 0
        for k, _ in table[:, s]:
            n += 1 if k == 1 else -1 if k == 2 else 0
            inflight = max(inflight, n)
    return table[..., 0], table[..., 1], inflight


def value_and_grad(
    layer_fn: Callable,
    head_fn: Callable,
    params,
    head_params,
    x,
    targets,
    extras=(),
    *,
    microbatches: int,
    schedule: str = "1f1b",
    mesh=None,
    axis: str = AXIS,
):
    """(loss, (d params, d head_params, d x, d extras)) of loss = mean_m head_fn(head_params,
    layers(x_m, extras_m), targets_m) over the M microbatches, by the explicit schedule (`1f1b`
    or `gpipe`). `head_fn` is the loss head on the last stage (returns a scalar per microbatch);
    `extras` as in `forward`."""
    stages = _check_call(params, x, microbatches, mesh, axis)
    stages = max(stages, 1)
    kind, mbs, slots = schedule_table(stages, microbatches, schedule)
    m = microbatches
    apply = functools.partial(stage_apply, layer_fn)

    def run(local, hp, xs, ys, es, kind, mbs):
        s = jax.lax.axis_index(axis) if stages > 1 else 0
        if stages > 1:
            hp, xs, ys, es = _vary((hp, xs, ys, es), axis)
        zx = jnp.zeros_like(xs[0])
        ring = lambda: jnp.zeros((slots,) + zx.shape, zx.dtype)  # noqa: E731
        zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
        carry = dict(
            stash=ring(),  # stage inputs of microbatches in flight
            fin=ring(),  # activations received from stage s - 1
            bin=ring(),  # cotangents received from stage s + 1 (the last stage: its own)
            g=zeros(local),
            gh=zeros(hp),
            dx=jnp.zeros_like(xs),
            de=zeros(es),
            loss=jnp.zeros((), zx.dtype),
            fsend=(zx, jnp.int32(-1)),
            bsend=(zx, jnp.int32(-1)),
        )
        if stages > 1:
            carry = _vary(carry, axis)

        def fwd(c, i):
            inp = jnp.where(s == 0, _take(xs, i), _take(c["fin"], i % slots))
            c = dict(c, stash=_put(c["stash"], i % slots, inp, True))
            out = apply(local, inp, *_take(es, i))
            # The last stage runs the head now and keeps the cotangent of its output.
            loss_i, head_vjp = jax.vjp(lambda hp_, o: head_fn(hp_, o, _take(ys, i)), hp, out)
            dh, dout = head_vjp(jnp.ones_like(loss_i) / m)
            last = s == stages - 1
            c["bin"] = _put(c["bin"], i % slots, dout.astype(zx.dtype), last)
            c["gh"] = jax.tree.map(lambda a, d: a + jnp.where(last, d, 0), c["gh"], dh)
            c["loss"] = c["loss"] + jnp.where(last, loss_i.astype(zx.dtype) / m, 0)
            c["fsend"] = (out.astype(zx.dtype), i)
            return c

        def bwd(c, i):
            stage = lambda p, h, e: apply(p, h, *e)  # noqa: E731
            _, vjp = jax.vjp(stage, local, _take(c["stash"], i % slots), _take(es, i))
            gp, gx, ge = vjp(_take(c["bin"], i % slots))
            c = dict(c, g=jax.tree.map(jnp.add, c["g"], gp))
            c["de"] = jax.tree.map(lambda a, v: a.at[i].add(v), c["de"], ge)
            c["dx"] = _put(c["dx"], i, gx, s == 0)
            c["bsend"] = (gx, i)
            return c

        def tick(c, row):
            k, i = row
            c = dict(c, fsend=(zx, jnp.int32(-1)), bsend=(zx, jnp.int32(-1)))
            if stages > 1:
                c["fsend"], c["bsend"] = _vary(c["fsend"], axis), _vary(c["bsend"], axis)
            c = jax.lax.switch(k, (lambda c, i: c, fwd, bwd), c, i)
            if stages > 1:  # activations go to stage s + 1, cotangents to stage s - 1
                fa, fi = _shift(c["fsend"], stages, axis, 1)
                ba, bi = _shift(c["bsend"], stages, axis, -1)
                c["fin"] = _put(c["fin"], fi % slots, fa, (fi >= 0) & (s > 0))
                c["bin"] = _put(c["bin"], bi % slots, ba, (bi >= 0) & (s < stages - 1))
            return c, None

        my = lambda a: a[:, s] if stages == 1 else _take(a.T, s)  # noqa: E731
        c, _ = jax.lax.scan(tick, carry, (my(kind), my(mbs)))
        if stages == 1:
            return c["loss"], c["g"], c["gh"], c["dx"], c["de"]
        red = lambda t: jax.lax.psum(t, axis)  # noqa: E731
        return red(c["loss"]), c["g"], red(c["gh"]), red(c["dx"]), red(c["de"])

    args = (
        params,
        head_params,
        _micro(x, m),
        _micro(targets, m),
        _micro(tuple(extras), m),
        jnp.asarray(kind),
        jnp.asarray(mbs),
    )
    if stages > 1:
        run = jax.shard_map(
            run,
            mesh=mesh,
            in_specs=(P(axis), P(), P(), P(), P(), P(), P()),
            out_specs=(P(), P(axis), P(), P(), P()),
            axis_names={axis},
        )
    loss, g, gh, dx, de = run(*args)
    return loss, (g, gh, _unmicro(dx), _unmicro(de))


def loss(layer_fn, head_fn, params, head_params, x, targets, extras=(), **kw):
    """The pipelined loss as a function `jax.grad` can differentiate (w.r.t. params, head_params,
    x and extras): the whole schedule runs in the forward pass and the backward only scales the
    gradients it computed by the incoming cotangent."""

    def vg(params, head_params, x, extras):
        return value_and_grad(layer_fn, head_fn, params, head_params, x, targets, extras, **kw)

    @jax.custom_vjp
    def f(params, head_params, x, extras):
        return vg(params, head_params, x, extras)[0]

    def f_fwd(params, head_params, x, extras):
        return vg(params, head_params, x, extras)

    def f_bwd(grads, ct):
        return jax.tree.map(lambda g: (g * ct).astype(g.dtype), grads)

    f.defvjp(f_fwd, f_bwd)
    return f(params, head_params, x, tuple(extras))


# --------------------------------------------------------------------------------------------------
# Flax: a stack of identical blocks with stacked parameters


def _add_layer_axis(tree):
    is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    add = lambda x: x.add_axis(0, {nn.PARTITION_NAME: LAYERS}) if is_box(x) else x  # noqa: E731
    return jax.tree.map(add, tree, is_leaf=is_box)


class Stack(nn.Module):
    """`depth` blocks `block()` called as `block(h, *extras, *static)`, parameters stacked under
    `layers` with a leading layer axis (logical name `layers`). On a mesh whose `stage` axis has
    S > 1 devices the blocks run through `forward` with `microbatches` microbatches (GPipe under
    `jax.grad`); otherwise as a scan. The blocks' own collections (e.g. an MoE layer's aux
    losses) are not collected: stack dense blocks only. `remat_policy`: rematerialise each
    block (a `jax.checkpoint_policies` policy)."""

    block: Callable[..., nn.Module]
    depth: int
    microbatches: int = 1
    static: tuple = ()  # trailing hashable arguments (a `train` flag)
    remat_policy: object = None

    @nn.compact
    def __call__(self, h, *extras):
        stages = num_stages()
        if stages > 1:  # at init too: the trainer's abstract init fails before anything runs
            check(self.depth, stages, self.microbatches)

        def init(rng):
            keys = jax.random.split(rng, self.depth)
            one = lambda k: self.block(parent=None).init(k, h, *extras, *self.static)  # noqa: E731
            return _add_layer_axis(jax.vmap(one)(keys)["params"])

        params = self.param("layers", init)

        def layer(p, h, *extras):
            return self.block(parent=None).apply({"params": p}, h, *extras, *self.static)

        if self.remat_policy is not None:
            layer = jax.checkpoint(layer, policy=self.remat_policy)
        if self.is_initializing() or stages == 1:
            return stage_apply(layer, params, h, *extras)
        return forward(layer, params, h, tuple(extras), microbatches=self.microbatches)
