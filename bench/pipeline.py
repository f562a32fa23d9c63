"""Peak memory of GPipe vs 1F1B on 4 pipeline stages, from XLA's compiled memory analysis.

    nice -n 19 python bench/pipeline.py --out bench/results     # ~2 min on 2 CPU cores

Compiles (never runs) the gradient step of a 16-layer residual MLP stack (width 512, microbatch
of 256 rows) split into S = 4 stages on 4 fake CPU devices, for M = 4, 8, 16 microbatches, three
ways (netlab/sharding/pipeline.py): `jax.grad` through the GPipe forward pipeline, the explicit
engine in GPipe order (all forwards, then all backwards: M stashed stage inputs) and in 1F1B
order (at most S stashed). Writes pipeline_memory.json and .md to --out: per-device temporaries
and the peak estimate (arguments + temporaries + outputs not aliased), as in netlab/tools/aot.py.
The microbatch size is fixed, so the batch grows with M: GPipe's memory grows with M, 1F1B's
stays flat (Narayanan et al. 2021, Sec. 3.1). XLA:CPU's temporaries are an estimate of an
accelerator's (aot.py's caveat).
"""

import argparse
import json
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from netlab.sharding import pipeline as pl  # noqa: E402
from netlab.sharding.mesh import make_mesh  # noqa: E402

S, LAYERS, WIDTH, ROWS = 4, 16, 512, 256


def layer(p, h):
    return h + jnp.tanh(h @ p["w"] + p["b"])


def head(hp, out, target):
    return jnp.mean((out @ hp - target) ** 2)


def peak(compiled):
    m = compiled.memory_analysis()
    out = max(m.output_size_in_bytes - m.alias_size_in_bytes, 0)
    return dict(
        temp=int(m.temp_size_in_bytes),
        peak=int(m.argument_size_in_bytes + m.temp_size_in_bytes + out),
    )


def measure(m):
    f32 = jnp.float32
    params = dict(
        w=jax.ShapeDtypeStruct((LAYERS, WIDTH, WIDTH), f32),
        b=jax.ShapeDtypeStruct((LAYERS, WIDTH), f32),
    )
    hp = jax.ShapeDtypeStruct((WIDTH,), f32)
    x = jax.ShapeDtypeStruct((m * ROWS, WIDTH), f32)
    y = jax.ShapeDtypeStruct((m * ROWS,), f32)

    def autodiff(p, hp, x, y):
        def loss(p, hp, x):
            h = pl.forward(layer, p, x, microbatches=m).reshape(m, ROWS, WIDTH)
            return jnp.mean(jax.vmap(head, (None, 0, 0))(hp, h, y.reshape(m, ROWS)))

        return jax.value_and_grad(loss, argnums=(0, 1, 2))(p, hp, x)

    def explicit(schedule):
        def step(p, hp, x, y):
            kw = dict(microbatches=m, schedule=schedule)
            return pl.value_and_grad(layer, head, p, hp, x, y, **kw)

        return step

    out = {}
    for name, fn in (
        ("gpipe_autodiff", autodiff),
        ("gpipe", explicit("gpipe")),
        ("1f1b", explicit("1f1b")),
    ):
        out[name] = peak(jax.jit(fn).lower(params, hp, x, y).compile())
        print(m, name, out[name], flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    mesh = make_mesh(dict(stage=S, data=1))
    results = {}
    with jax.set_mesh(mesh):
        for m in (4, 8, 16):
            results[m] = measure(m)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_memory.json").write_text(json.dumps(results, indent=1))
    mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    lines = [
        "# Pipeline memory: GPipe vs 1F1B (S = 4 stages)",
        "",
        f"Per-device MiB from XLA:CPU's compiled memory analysis of one gradient step of a "
        f"{LAYERS}-layer residual MLP (width {WIDTH}, {ROWS} rows per microbatch, f32) on 4 "
        "fake devices; made by `nice -n 19 python bench/pipeline.py --out bench/results`. "
        "temp = XLA temporaries, peak = arguments + temporaries + unaliased outputs (the "
        "arguments grow with M too: the batch is M microbatches). GPipe (jax.grad) keeps every "
        "layer's residuals of all M microbatches; the explicit engine stashes one stage input "
        "per microbatch in flight (GPipe order: M, 1F1B: S) and recomputes the stage forward in "
        "its backward; what still grows under 1F1B is the M-microbatch input gradient.",
        "",
        "| M | GPipe (jax.grad) temp | GPipe (explicit) temp | 1F1B temp "
        "| GPipe (jax.grad) peak | GPipe (explicit) peak | 1F1B peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        g, e, o = r["gpipe_autodiff"], r["gpipe"], r["1f1b"]
        lines.append(
            f"| {m} | {mib(g['temp'])} | {mib(e['temp'])} | {mib(o['temp'])} "
            f"| {mib(g['peak'])} | {mib(e['peak'])} | {mib(o['peak'])} |"
        )
    (out / "pipeline_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
