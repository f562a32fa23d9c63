"""XLA:CPU's float32 dot under its library flags, against torch's oneDNN sgemm (issue 19 item 4).

    python bench/cpu_dot_flags.py                      # every flag set, DiT-S/2 and B/2 shapes
    python bench/cpu_dot_flags.py --flags default onednn_dot --rounds 30

XLA:CPU hands dots to a kernel library chosen by flags: YNNPACK by default in jaxlib 0.10
(`--xla_cpu_experimental_ynn_fusion_type`), oneDNN (`--xla_cpu_use_onednn`,
`--xla_cpu_experimental_onednn_fusion_type=dot`) or XLA's own Eigen path (YNN's `dot` *and*
`individual_dot` fusion types removed: removing `dot` alone leaves the YNN custom call in place).
XNNPACK's dot fusion did not apply to these dots in jaxlib 0.10.2 (no custom call), so it is left
out. The `library` column is read from the compiled HLO, so a flag that silently does nothing shows.
XLA_FLAGS are read once per process,
so each flag set runs in its own subprocess; inside it, XLA and torch alternate call by call on the
same shapes (the matmuls of a DiT training step at 16x16x4 latents, batch 8: 512 token rows,
forward and the two backward products), and the report is the ratio of the *minimum* times over
rounds (a minimum is what a loaded host perturbs least). Below 1 means XLA is faster.
Writes bench/results/cpu_dot_flags.{json,md}.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAG_SETS = {
    "default": "",
    "onednn_dot": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot"
    " --xla_cpu_experimental_ynn_fusion_type=-dot,-individual_dot",
    "eigen": "--xla_cpu_experimental_ynn_fusion_type=-dot,-individual_dot",
}

# (rows, in, out) of DiT's dense layers at width w: qkv, attention out, MLP in, MLP out.
WIDTHS = {"S/2": 384, "B/2": 768}


def shapes(width, rows=512):
    for k, n in ((width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)):
        yield f"{rows}x{k}x{n}", (rows, k), (k, n)  # forward x @ W
        yield f"{rows}x{n}x{k}", (rows, n), (n, k)  # backward dL/dx = g @ W^T
        yield f"{k}x{rows}x{n}", (k, rows), (rows, n)  # backward dL/dW = x^T @ g


def _worker(rounds, reps, threads):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    # one thread: process CPU time, which a loaded host barely moves; else wall time
    clock = time.process_time if threads == 1 else time.perf_counter
    out = {}
    rng = np.random.default_rng(0)
    for size, width in WIDTHS.items():
        for name, sa, sb in shapes(width):
            a = rng.standard_normal(sa, dtype=np.float32)
            b = rng.standard_normal(sb, dtype=np.float32)
            ja, jb = jnp.asarray(a), jnp.asarray(b)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            f = jax.jit(jnp.matmul)
            hlo = f.lower(ja, jb).compile().as_text()
            lib = next((x for x in ("onednn", "ynn", "xnn") if x in hlo), "eigen")
            np.testing.assert_allclose(
                np.asarray(f(ja, jb)), (ta @ tb).numpy(), rtol=2e-3, atol=2e-3
            )
            tx, tt = [], []
            for _ in range(rounds):
                t0 = clock()
                for _ in range(reps):
                    r = f(ja, jb)
                r.block_until_ready()
                tx.append((clock() - t0) / reps)
                t0 = clock()
                for _ in range(reps):
                    torch.matmul(ta, tb)
                tt.append((clock() - t0) / reps)
            flops = 2 * sa[0] * sa[1] * sb[1]
            out[f"{size} {name}"] = dict(xla_s=min(tx), torch_s=min(tt), flops=flops, library=lib)
    total_x = sum(v["xla_s"] for v in out.values())
    total_t = sum(v["torch_s"] for v in out.values())
    libs = sorted({v["library"] for v in out.values()})
    print(json.dumps(dict(shapes=out, ratio=total_x / total_t, xla_total_s=total_x, library=libs)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flags", nargs="+", default=list(FLAG_SETS), choices=list(FLAG_SETS))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="1: one thread each, CPU time")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.rounds, args.reps, args.threads)
    results = {}
    for name in args.flags:
        flags = FLAG_SETS[name]
        if args.threads == 1:
            flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
        cmd = [sys.executable, __file__, "--worker", "--rounds", str(args.rounds)]
        cmd += ["--reps", str(args.reps), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            results[name] = dict(error=proc.stderr.strip().splitlines()[-1][:300])
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[name]
        print(name, f"ratio {r['ratio']:.3f}" if "ratio" in r else r["error"], flush=True)
    load = os.getloadavg()[0]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "_1thread" if args.threads == 1 else ""
    (out / f"cpu_dot_flags{tag}.json").write_text(
        json.dumps(dict(load=load, threads=args.threads, results=results), indent=1)
    )
    lines = [
        f"# XLA:CPU float32 dot vs torch (oneDNN), per XLA flag set (load average {load:.1f}, "
        + (
            "one thread each, process CPU time)" if args.threads == 1 else "all threads, wall time)"
        ),
        "",
        "Sum over DiT-S/2 and B/2 step matmuls (512 token rows; forward + both backward",
        "products) of the minimum time over rounds; ratio = XLA / torch (below 1: XLA faster).",
        f"Command: `python bench/cpu_dot_flags.py --rounds {args.rounds} --reps {args.reps}"
        + (" --threads 1`." if args.threads == 1 else "`."),
        "",
        "| flag set | XLA_FLAGS | library (compiled HLO) | XLA total ms | ratio XLA / torch |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "ratio" in r:
            row = f"{', '.join(r['library'])} | {1e3 * r['xla_total_s']:.2f} | {r['ratio']:.3f}"
        else:
            row = f"- | failed: {r['error']} | -"
        lines.append(f"| {name} | `{FLAG_SETS[name] or '(none)'}` | {row} |")
    (out / f"cpu_dot_flags{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
