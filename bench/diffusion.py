"""DiT training-step benchmark: netlab (JAX) vs diffusers' PyTorch DiT at the same size.

    python bench/diffusion.py                                  # CPU defaults: S/2 and B/2, 16x16x4
    python bench/diffusion.py --sizes B/2 --image-size 32 --batch 64 --dtype bfloat16 --no-torch  # GPU

One step = forward + backward of an eps-MSE loss on latents (image-size^2 x 4 channels, 1000
classes) + an AdamW update; forward + backward alone is timed too (`*_fwd_bwd_s`), to separate the
model from the optimizer update. Both libraries run in this one process, alternating round by round,
and the report gives netlab's median step time divided by PyTorch's (below 1 means netlab is
faster). Also: compile time of the jitted step, images/s, FLOPs per step from XLA's cost analysis
and MFU = flops / step time / peak (peak from --peak-tflops, or a table for known accelerators).
On CPU it also times bare float32 matmuls of DiT's shapes in XLA and in torch: on the 2-core dev VM
XLA's dot is 1.2-1.3x slower than torch's oneDNN sgemm, which bounds the DiT ratio from below
there. The dot library is a flag: with oneDNN dots (bench/cpu_dot_flags.py; XLA_FLAGS in
docs/precision.md) the one-thread S/2 step went 1.12x -> 0.94x of diffusers (load ~15); note that
`--xla_cpu_experimental_ynn_fusion_type=-dot` alone keeps YNNPACK (an earlier "flags change
nothing" came from that).
Profile (issue 19, bench/results/cpu_speed.md; `bench.perf.op_profile` of the S/2 step, XLA:CPU
thunk times): dots (`ynn_fusion`, YNNPACK GEMMs) are 72% of the step (backward 44%, forward 28%:
backward dots take 1.55x the forward's time for 2x the FLOPs), forward loop fusions (norms,
modulate, GELU, softmax) 17%, head-split/merge copies 7%. The step runs at 157-178 GFLOP/s against
this Zen 3 host's 157-224 GFLOP/s fp32 peak, so the gap to diffusers is the GEMM kernel, not the
backward pass or the attention (2.7% of the FLOPs at 64 tokens).
Writes bench/results/diffusion_<host>_<platform>.json and prints a markdown table.
"""  # noqa: E501

import argparse
import json
import os
import pathlib
import platform
import sys
import time

if "--threads" in sys.argv:  # pin both libraries to the same thread count
    _n = int(sys.argv[sys.argv.index("--threads") + 1])
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen="
        + ("false intra_op_parallelism_threads=1" if _n == 1 else "true")
    ).strip()

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from netlab.diffusion.dit import DiT, preset  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "v5p": 459.0, "v4": 275.0, "v5e": 197.0}


def device_peak(override):
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for name, peak in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return peak
    return None


def netlab_step(size, args):
    cfg = preset(size)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model = DiT(image_size=args.image_size, channels=4, num_classes=1000, dtype=dtype, **cfg)
    rng = np.random.default_rng(0)
    x = jnp.asarray(
        rng.standard_normal((args.batch, args.image_size, args.image_size, 4)), jnp.float32
    )
    t = jnp.asarray(rng.uniform(0, 999, args.batch), jnp.float32)
    y = jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32)
    eps = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    params = model.init(jax.random.key(0), x, t, y)["params"]
    opt = optax.adamw(1e-4, weight_decay=0.0)
    state = (params, opt.init(params))

    def loss_fn(p):
        return jnp.mean((model.apply({"params": p}, x, t, y) - eps) ** 2)

    def step(state):
        p, o = state
        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, o = opt.update(g, o, p)
        return (optax.apply_updates(p, upd), o), loss

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    holder = {"state": state}
    grad_fn = jax.jit(jax.grad(loss_fn))

    def run():
        holder["state"], loss = compiled(holder["state"])
        jax.block_until_ready(loss)

    def run_grad():  # forward + backward only, no optimizer
        jax.block_until_ready(grad_fn(holder["state"][0]))

    return run, run_grad, dict(compile_s=compile_s, flops_per_step=flops, params=n_params)


def torch_step(size, args):
    import torch
    from diffusers import DiTTransformer2DModel

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(size)
    model = DiTTransformer2DModel(
        num_attention_heads=cfg["num_heads"],
        attention_head_dim=cfg["width"] // cfg["num_heads"],
        in_channels=4,
        num_layers=cfg["depth"],
        sample_size=args.image_size,
        patch_size=cfg["patch"],
        num_embeds_ada_norm=1000,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x = torch.randn(args.batch, 4, args.image_size, args.image_size)
    t = torch.randint(0, 1000, (args.batch,))
    y = torch.randint(0, 1000, (args.batch,))
    eps = torch.randn_like(x)
    n_params = sum(p.numel() for p in model.parameters())

    def run_grad():
        opt.zero_grad(set_to_none=True)
        out = model(x, timestep=t, class_labels=y).sample
        torch.mean((out - eps) ** 2).backward()

    def run():
        run_grad()
        opt.step()

    return run, run_grad, dict(params=n_params, torch_threads=torch.get_num_threads())


def matmul_probe(shapes=((512, 384, 1536), (512, 1536, 384), (2048, 768, 3072)), n=20):
    """Float32 (m, k) @ (k, n) time in XLA vs torch on this machine: the floor under any DiT ratio,
    since a DiT step is mostly these matmuls."""
    import torch

    rows = []
    for m, k, nn_ in shapes:
        a, b = jnp.ones((m, k)), jnp.ones((k, nn_))
        f = jax.jit(lambda a, b: a @ b)
        ta, tb = torch.ones(m, k), torch.ones(k, nn_)
        jax.block_until_ready(f(a, b))
        jt = float(np.median(timed(lambda: jax.block_until_ready(f(a, b)), n)))
        tt = float(np.median(timed(lambda: ta @ tb, n)))
        rows.append(dict(m=m, k=k, n=nn_, xla_ms=1e3 * jt, torch_ms=1e3 * tt, ratio=jt / tt))
        print(
            f"matmul {m}x{k} @ {k}x{nn_}: XLA {1e3 * jt:.2f} ms, torch {1e3 * tt:.2f} ms, ratio {jt / tt:.2f}",  # noqa: E501
            flush=True,
        )
    return rows


def timed(run, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["S/2", "B/2"])
    ap.add_argument("--image-size", type=int, default=16, help="latent side (32 = 256px images)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="1: single-threaded XLA and torch")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    peak = device_peak(args.peak_tflops)
    rows = []
    for size in args.sizes:
        jrun, jgrad, info = netlab_step(size, args)
        jrun()  # warm-up
        jgrad()
        trun, tgrad, tinfo = (None, None, {}) if args.no_torch else torch_step(size, args)
        if trun:
            trun()
        jt, tt, jg, tg = [], [], [], []
        for _ in range(args.rounds):  # alternate so both see the same load
            jt += timed(jrun, args.steps)
            jg += timed(jgrad, 1)
            if trun:
                tt += timed(trun, args.steps)
                tg += timed(tgrad, 1)
        j_med = float(np.median(jt))
        row = dict(
            size=size,
            image_size=args.image_size,
            batch=args.batch,
            dtype=args.dtype,
            netlab_step_s=j_med,
            netlab_steps_per_s=1 / j_med,
            netlab_images_per_s=args.batch / j_med,
            netlab_params=info["params"],
            compile_s=info["compile_s"],
            netlab_fwd_bwd_s=float(np.median(jg)),
            flops_per_step=info["flops_per_step"],
            achieved_tflops=info["flops_per_step"] / j_med / 1e12,
            mfu=(info["flops_per_step"] / j_med / 1e12 / peak) if peak else None,
        )
        if trun:
            t_med = float(np.median(tt))
            row.update(
                torch_step_s=t_med,
                torch_fwd_bwd_s=float(np.median(tg)),
                torch_params=tinfo["params"],
                torch_threads=tinfo["torch_threads"],
                ratio_netlab_over_torch=j_med / t_med,
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    dev = jax.devices()[0]
    result = dict(
        device=dev.device_kind,
        platform=dev.platform,
        host=platform.node(),
        jax=jax.__version__,
        cpu_count=os.cpu_count(),
        peak_tflops=peak,
        rows=rows,
    )
    if not args.no_torch and dev.platform == "cpu":
        result["matmul_probe"] = matmul_probe()
    out = pathlib.Path(
        args.out or ROOT / "bench" / "results" / f"diffusion_{platform.node()}_{dev.platform}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        "\n| size | batch x side | dtype | netlab s/step | img/s | compile s | TFLOP/s | MFU | torch s/step | ratio |"  # noqa: E501
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        ts = f"{r['torch_step_s']:.3f}" if "torch_step_s" in r else "n/a"
        ratio = f"{r['ratio_netlab_over_torch']:.2f}" if "ratio_netlab_over_torch" in r else "n/a"
        print(
            f"| {r['size']} | {r['batch']} x {r['image_size']} | {r['dtype']} | {r['netlab_step_s']:.3f} | "  # noqa: E501
            f"{r['netlab_images_per_s']:.1f} | {r['compile_s']:.1f} | {r['achieved_tflops']:.3f} | {mfu} | {ts} | {ratio} |"  # noqa: E501
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
