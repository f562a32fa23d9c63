"""AsyncDiff: a denoiser split into stages that run in parallel on stale inputs (Chen et al. 2024,
"AsyncDiff: Parallelizing Diffusion Models by Asynchronous Denoising", NeurIPS, arXiv 2406.06911).

The denoiser eps_theta = f_N o ... o f_1 is cut into N stages of consecutive blocks, one per device.
Sequentially, step i costs N stage latencies. AsyncDiff's asynchronous denoising (Sec. 3.2) feeds
stage n at step i the output stage n-1 produced at step i-1, which the devices exchanged at the end
of the previous step, so all stages run at once and a step costs one stage latency:

    h_1^i = f_1(x_i, t_i),   h_n^i = f_n(h_{n-1}^{i-1}, t_i)  (n >= 2),   out_i = head(h_N^i),

and the sampler step uses out_i with the fresh x_i. It rests on hidden states of adjacent steps
being close. The first `warmup` steps run sequentially (the paper's warm-up, which fills every
stage with valid inputs). Stride denoising (Sec. 3.3) with stride S: one parallel round covers S
steps; stages 1..N-1 run once per round at the round's last noise level, and the last stage runs
on S devices (N + S - 1 devices in all), device N-1+s at step i+s's noise level, all on the same
stale input; the S sampler steps of the round then use those S outputs in turn (every stage input
is S steps old). With S = 1 this is the plain scheme above; N = 1 or warmup >= steps is the
sequential sampler.

Implementation: one `jax.shard_map` over a 1-D mesh axis "stage" of N + S - 1 devices. Each
device holds only its stage's stacked block parameters (sharded on the axis); the input
projection, the noise embedding and the output head are small and replicated. A round is: every
device runs its stage; the activations go to the next stage with `ppermute` (the last stage's
replicas receive stage N-1's output by their own `ppermute`s); the heads' outputs are
`all_gather`ed so every device takes the same sampler steps (the official code broadcasts the
last stage's output likewise). A sequential (warm-up) step is N such rounds: after round n, stage
n's output is the sequential one. The sampler is DDIM (eta = 0) on the task's log-SNR grid, with
the network output mapped to x0 by the task's parameterisation.

Deliberate differences from the authors' code (czg1225/AsyncDiff): stages are equal groups of a
homogeneous block stack (they hand-pick UNet cut points); each stage computes its own noise
embedding (their UNet's skip connections and embeddings read cached values); `time_shift` is not
implemented (off by default there).

`mlp_stages` splits the toy backbone (`mlp.MlpDenoiser`) by calling its own submodules on its
parameters, so a trained toy model runs unchanged.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.diffusion import parameterization, schedules
from netlab.nn import layers
from netlab.sharding import axes

AXIS = "stage"


@dataclasses.dataclass(frozen=True)
class Staged:
    """A denoiser as `embed -> blocks -> head`, blocks homogeneous (stackable).

    embed(shared, x_in) -> h;  cond(shared, noise_cond) -> c;  block(p, h, c) -> h;
    head(shared, h) -> network output. `shared` / `blocks` are the parameters (blocks stacked on a
    leading axis of length `depth`)."""

    embed: Callable
    cond: Callable
    block: Callable
    head: Callable
    shared: Any
    blocks: Any
    depth: int

    def stage_blocks(self, num_stages: int):
        """(N, depth / N, ...) block parameters: stage n holds blocks n*L/N .. (n+1)*L/N - 1."""
        if num_stages < 1 or self.depth % num_stages:
            raise ValueError(f"{self.depth} blocks do not split into {num_stages} equal stages")
        per = self.depth // num_stages
        return jax.tree.map(lambda a: a.reshape((num_stages, per) + a.shape[1:]), self.blocks)

    def run_blocks(self, blocks, h, c):
        return jax.lax.scan(lambda h, p: (self.block(p, h, c), None), h, blocks)[0]

    def apply(self, x_in, noise_cond):
        """The whole network (the sequential reference)."""
        c = self.cond(self.shared, noise_cond)
        return self.head(
            self.shared, self.run_blocks(self.blocks, self.embed(self.shared, x_in), c)
        )


def mlp_stages(model, params) -> Staged:
    """`Staged` view of a `mlp.MlpDenoiser` (unconditional) with its parameters."""
    if model.num_classes:
        raise ValueError("mlp_stages: class-conditional MLPs are not supported")
    dt, w = model.dtype, model.width
    fdt = jnp.float64 if dt == jnp.float64 else jnp.float32
    inp = layers.dense(w, None, axes.EMBED, dt)
    out = layers.dense(model.dim, axes.EMBED, None, dt)
    ln, mlp, temb = layers.layer_norm(dt), layers.Mlp(2 * w, dt), layers.TimestepEmbedder(w)

    def block(p, h, c):
        z = ln.apply({"params": p["ln"]}, h) + c.astype(dt)
        return h + mlp.apply({"params": p["mlp"]}, jax.nn.silu(z)[:, None])[:, 0]

    blocks = [{"ln": params[f"ln{i}"], "mlp": params[f"mlp{i}"]} for i in range(model.depth)]
    return Staged(
        embed=lambda s, x: inp.apply({"params": s["inp"]}, x.astype(dt)),
        cond=lambda s, nc: temb.apply({"params": s["t_embed"]}, nc),
        block=block,
        head=lambda s, h: out.apply({"params": s["out"]}, h).astype(fdt),
        shared={k: params[k] for k in ("inp", "out", "t_embed")},
        blocks=jax.tree.map(lambda *a: jnp.stack(a), *blocks),
        depth=model.depth,
    )


def _ddim(x, out, l_t, l_s, kind):
    """One deterministic DDIM step from log-SNR l_t to l_s with the network output `out`."""
    a_t, s_t = schedules.alpha_sigma(l_t)
    a_s, s_s = schedules.alpha_sigma(l_s)
    x0 = parameterization.denoised(x, out, a_t, s_t, kind)
    return a_s * x0 + s_s * (x - a_t * x0) / s_t


def _inputs(x, logsnr, kind, noise_cond):
    a, s = schedules.alpha_sigma(logsnr)
    return parameterization.network_input(x, a, s, kind), noise_cond(jnp.full(x.shape[:1], logsnr))


def plan(steps: int, warmup: int, stride: int):
    """(sequential steps, parallel rounds) for `steps` sampler steps."""
    warm = min(max(warmup, 0), steps)
    return warm, math.ceil((steps - warm) / stride)


def sample(staged: Staged, x_T, grid, **kwargs):
    """AsyncDiff sampling of x_T (B, D) over the log-SNR `grid` (`sampler`'s keywords)."""
    return sampler(staged, **kwargs)(x_T, grid)


def sampler(
    staged: Staged,
    *,
    num_stages: int,
    warmup: int,
    stride: int = 1,
    kind: str = "v",
    noise_cond: Callable,
    devices=None,
):
    """-> run(x_T, grid): AsyncDiff on N + S - 1 devices (module doc), compiled once per shape,
    each stage's block parameters placed on its device. warmup >= len(grid) - 1 is the
    sequential sampler."""
    n, s = int(num_stages), int(stride)
    if n < 1 or s < 1:
        raise ValueError(f"num_stages={n}, stride={s}: expected both >= 1")
    if n > 1 and warmup < 1:
        raise ValueError(f"warmup={warmup}: the stages need one sequential step for inputs")
    d = n + s - 1
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) < d:
        raise ValueError(f"{n} stages with stride {s} need {d} devices; {len(devices)} given")
    mesh = Mesh(np.asarray(devices[:d]), (AXIS,))
    stage_of = np.minimum(np.arange(d), n - 1)
    blocks = jax.tree.map(lambda a: a[stage_of], staged.stage_blocks(n))
    blocks = jax.device_put(blocks, NamedSharding(mesh, P(AXIS)))
    shared = jax.device_put(staged.shared, NamedSharding(mesh, P()))
    perm = [(i, i + 1) for i in range(n - 1)]
    extra = [[(n - 2, n - 1 + r)] for r in range(1, s)] if n > 1 else []

    def body(blocks, shared, x, grid):
        steps = grid.shape[0] - 1
        warm, rounds = plan(steps, warmup, s)
        blocks = jax.tree.map(lambda a: a[0], blocks)
        me = jax.lax.axis_index(AXIS)
        first = me == 0 if n > 1 else jnp.bool_(True)  # stage 0 reads x itself
        last = jnp.minimum(jnp.maximum(me - (n - 1), 0), s - 1)  # replica index of a last stage

        def stage(h_in, x, logsnr):
            inp, nc = _inputs(x, logsnr, kind, noise_cond)
            h0 = jnp.where(first, staged.embed(shared, inp), h_in)
            h = staged.run_blocks(blocks, h0, staged.cond(shared, nc))
            return h, staged.head(shared, h)

        def handoff(h):
            recv = jax.lax.ppermute(h, AXIS, perm) if perm else h
            for r, pairs in enumerate(extra, start=1):
                recv = jnp.where(me == n - 1 + r, jax.lax.ppermute(h, AXIS, pairs), recv)
            return recv

        def warm_step(carry, i):  # sequential: N rounds, stage n valid after round n
            x, h_in = carry

            def sub(_, hc):
                h, _ = stage(hc[0], x, grid[i])
                return handoff(h), h

            h_in, h = jax.lax.fori_loop(0, n, sub, (h_in, h_in))
            out = jax.lax.all_gather(staged.head(shared, h), AXIS)[n - 1]
            return (_ddim(x, out, grid[i], grid[i + 1], kind), h_in), None

        def async_round(carry, r):  # one parallel round: steps i .. i+S-1
            x, h_in = carry
            i = warm + r * s
            mine = jnp.where(me >= n - 1, i + last, i + s - 1)
            h, out = stage(h_in, x, grid[jnp.minimum(mine, steps - 1)])
            outs = jax.lax.all_gather(out, AXIS)
            for k in range(s):
                j = jnp.minimum(i + k, steps - 1)
                x_next = _ddim(x, outs[n - 1 + k], grid[j], grid[j + 1], kind)
                x = jnp.where(i + k < steps, x_next, x)
            return (x, handoff(h)), None

        hidden = jax.eval_shape(lambda: staged.embed(shared, x))
        carry = (x, jnp.zeros(hidden.shape, hidden.dtype))  # the stage inputs, filled in warm-up
        if warm:
            carry = jax.lax.scan(warm_step, carry, jnp.arange(warm))[0]
        if rounds:
            carry = jax.lax.scan(async_round, carry, jnp.arange(rounds))[0]
        return carry[0]

    fn = jax.jit(
        jax.shard_map(
            body, mesh=mesh, in_specs=(P(AXIS), P(), P(), P()), out_specs=P(), check_vma=False
        )
    )
    replicated = NamedSharding(mesh, P())

    def run(x_T, grid):
        return fn(blocks, shared, jax.device_put(x_T, replicated), jax.device_put(grid, replicated))

    return run


def reference(staged: Staged, x_T, grid, *, num_stages, warmup, stride=1, kind="v", noise_cond):
    """A plain transcription of the stale-input recursion (no devices, no collectives): the
    specification `sample` is tested against. Python loops over steps and stages."""
    n, s = num_stages, stride
    stages = staged.stage_blocks(n)
    steps = grid.shape[0] - 1
    warm, rounds = plan(steps, warmup, s)

    def f(k, h, x, logsnr):  # stage k on input h (stage 0: on x)
        inp, nc = _inputs(x, logsnr, kind, noise_cond)
        h = staged.embed(staged.shared, inp) if k == 0 else h
        blocks = jax.tree.map(lambda a: a[k], stages)
        return staged.run_blocks(blocks, h, staged.cond(staged.shared, nc))

    x, prev = x_T, [None] * n  # prev[k]: stage k's output in the previous step / round
    for i in range(warm):
        h = None
        for k in range(n):
            h = prev[k] = f(k, h, x, grid[i])
        x = _ddim(x, staged.head(staged.shared, h), grid[i], grid[i + 1], kind)
    for r in range(rounds):
        i = warm + r * s
        late = min(i + s - 1, steps - 1)
        new = [f(k, prev[k - 1] if k else None, x, grid[late]) for k in range(n - 1)]
        lasts = [
            f(n - 1, prev[n - 2] if n > 1 else None, x, grid[min(i + k, steps - 1)])
            for k in range(s)
        ]
        for k in range(s):
            if i + k < steps:
                out = staged.head(staged.shared, lasts[k])
                x = _ddim(x, out, grid[i + k], grid[i + k + 1], kind)
        prev = new + [lasts[-1] if s == 1 else lasts[s - 1]]
    return x
