"""One-command accelerator check: the numbers netlab's issues promise for one GPU or TPU chip.

    python bench/accelerator.py --out bench/results            # on the chip: at most ~8 minutes
    python bench/accelerator.py --out DIR --sections dit moe   # some sections only
    python bench/accelerator.py --tiny --out /tmp/acc          # every section at toy sizes on CPU

Writes DIR/accelerator_<platform>_<chip>.json (or accelerator_tiny_<platform>.json with --tiny),
saved after every case. A section already complete in that file is skipped and, in one that is
not, the cases already measured are kept (--force measures everything again), so a run that was
cut short resumes where it stopped; each case prints its numbers as it finishes.
Sections, all on one chip (the first device), each with a time guard that stops starting new cases
once its share of the budget is spent (the case in flight finishes; skipped cases say so):

- env: chip, memory, platform, library versions, XLA_FLAGS.
- dit: DiT-B/2 and DiT-XL/2 train step (configs/diffusion/imagenet_latent_dit.py:gpu, i.e. bf16
  compute, 32x32x4 latents as for 256px images, synthetic latents): the largest batch of a short
  list whose compiled per-device peak fits in 90% of the chip's memory; step time, images/s,
  FLOPs per step from XLA's cost analysis, TFLOP/s and MFU against the chip's dense bf16 peak
  (bench/perf.py). Rematerialisation (train.remat) is chosen with the batch and reported.
- attention: `jax.nn.dot_product_attention` forward + backward at DiT shapes (256 and 1024
  tokens, 16 heads of 72), bf16, with implementation="cudnn" (cuDNN flash attention), "xla" and
  None (JAX's choice); "unavailable" where the backend has no cuDNN (CPU, TPU). TFLOP/s counts
  the attention matmuls analytically (4*B*H*L^2*D forward, 2.5x that backward), since XLA's cost
  analysis does not see inside cuDNN's fused kernel.
- moe: the MoE LM (configs/moe/lm_tiny.py:gpu, widened to 1024 x 8 layers, 1024 tokens) and
  DiT-MoE-B/2 (8 SwiGLU experts, 2 shared, top-2, dropless) steps with the grouped matmul as
  `ragged_dot` and as the MegaBlocks-style `tiled` layout (netlab/moe/grouped.py); tokens/s, MFU.
- graph: GCN (3 x 256) and GAT (8 heads x 8) full-batch train step on a synthetic graph of
  ogbn-arxiv's size (170k nodes, 1.2M edges, 128 features, 40 classes), through
  configs/graph/planetoid.py; PyTorch Geometric on the same device when torch (with CUDA, on a
  GPU) is importable, with the ratio netlab / PyG.
- sampler: DiT-B/2 images/s at 20 network evaluations (dpmpp_2m, classifier-free guidance, so each
  evaluation runs the conditional and unconditional halves in one batch).

MFU in the dit and moe sections is hardware MFU: rematerialised forward passes count. On GPUs, XLA
keeps JAX's default memory pool (75% of the chip); PyG allocates from the rest.
"""

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import pathlib
import platform
import re
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench import perf  # noqa: E402
from netlab import configlib  # noqa: E402

SECTIONS = ("env", "dit", "attention", "moe", "graph", "sampler")
# Seconds each section may start new cases in (a full run: ~7 minutes plus start-up).
BUDGET = dict(env=15, dit=160, attention=30, moe=110, graph=60, sampler=45)
VERSIONS = (
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    "jax-cuda12-plugin",
    "libtpu",
    "flax",
    "optax",
    "orbax-checkpoint",
    "chex",
    "jraph",
    "ml-collections",
    "numpy",
    "torch",
    "torch-geometric",
)
DIT_CONFIG = ROOT / "configs" / "diffusion" / "imagenet_latent_dit.py"
LM_CONFIG = ROOT / "configs" / "moe" / "lm_tiny.py"
GRAPH_CONFIG = ROOT / "configs" / "graph" / "planetoid.py"


class Run:
    """Shared state of one invocation: sizes, the device, the JSON file and the time guard."""

    def __init__(self, args):
        self.args, self.tiny = args, args.tiny
        self.device = jax.devices()[0]
        self.devices = [self.device]
        self.peak = perf.peak_tflops(self.device.device_kind)
        stats = self.device.memory_stats() or {}
        self.bytes_limit = stats.get("bytes_limit")
        self.steps = args.steps or (2 if self.tiny else 10)
        self.tmp = tempfile.TemporaryDirectory(prefix="netlab_accel_")
        chip = re.sub(r"[^a-z0-9]+", "_", self.device.device_kind.lower()).strip("_")
        name = f"tiny_{self.device.platform}" if self.tiny else f"{self.device.platform}_{chip}"
        self.path = pathlib.Path(args.out) / f"accelerator_{name}.json"
        self.result = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.deadline = 0.0
        self.kept = {}

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=_jsonable))
        tmp.replace(self.path)

    def case(self, section, name, fn):
        """Run one case (fn() -> dict) unless the section's time is spent; record and print it."""
        rows = self.result[section]["rows"]
        if name in self.kept:  # measured by an earlier, interrupted run
            rows.append(self.kept[name])
            self.save()
            print(f"  {section}/{name}: kept from the earlier run", flush=True)
            return self.kept[name]
        if time.monotonic() > self.deadline:
            row = dict(case=name, skipped="time guard: section budget spent")
        else:
            try:
                row = dict(case=name, **fn())
            except Exception as e:  # noqa: BLE001 - a failed case is recorded; the run goes on
                if self.tiny:
                    raise
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                row = dict(case=name, error=f"{type(e).__name__}: {msg}")
        rows.append(row)
        self.save()
        print(f"  {section}/{name}: " + _line(row), flush=True)
        return row


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def _line(row):
    parts = []
    for k, v in row.items():
        if k == "case":
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _gib(n):
    return None if n is None else round(n / 2**30, 3)


def _unlocked(cfg, **values):
    """Set dotted keys on a locked config, adding the ones it lacks (model.mlp_kwargs, ...)."""
    with cfg.unlocked():
        for key, value in values.items():
            *head, last = key.split(".")
            node = cfg
            for h in head:
                node = node[h]
            node[last] = value
    return cfg


# --- train steps through the Trainer ----------------------------------------------------------
def compile_step(cfg, task=None):
    """The trainer and its train step compiled for abstract inputs (nothing allocated yet)."""
    from netlab.train.trainer import Trainer

    trainer = Trainer(cfg, devices=RUN.devices, task=task)
    local = trainer.task.train_batch(0)
    batch = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        local,
        trainer.batch_shardings,
    )
    t0 = time.perf_counter()
    with trainer.context():
        compiled = trainer._step.lower(trainer.abstract_state, batch).compile()
    return trainer, compiled, time.perf_counter() - t0


def built(cfg):
    """The Trainer for `cfg` constructed (config checks, task, abstract state), nothing compiled."""
    from netlab.train.trainer import Trainer

    trainer = Trainer(cfg, devices=RUN.devices)
    return dict(params=trainer.num_params(), batch=int(cfg.train.batch_size))


def fits(compiled) -> bool:
    need = perf.peak_bytes(compiled)
    return RUN.bytes_limit is None or need is None or need <= 0.9 * RUN.bytes_limit


def time_step(trainer, compiled, compile_s, examples, tokens_per_example):
    """Median step time of a compiled train step on real arrays, with MFU and throughput."""
    state = trainer.init_state()
    batch = trainer.global_batch(0)
    box = {"state": state}

    def run():
        box["state"], metrics = compiled(box["state"], batch)
        box["loss"] = float(jax.block_until_ready(metrics["loss"]))

    sec = perf.median_seconds(run, RUN.steps, warmup=2)
    flops = perf.compiled_flops(compiled)
    tflops = flops / sec / 1e12
    row = dict(
        params=trainer.num_params(),
        batch=examples,
        step_ms=1e3 * sec,
        examples_per_s=examples / sec,
        tokens_per_s=examples * tokens_per_example / sec,
        compile_s=compile_s,
        flops_per_step=flops,
        tflops=tflops,
        mfu=tflops / RUN.peak if RUN.peak else None,
        peak_gib=_gib(perf.peak_bytes(compiled)),
        loss=box["loss"],
    )
    return row


def dit_tokens(cfg):
    """Patches per image: (image size / patch)^2."""
    from netlab.diffusion.dit import sizes

    return (int(cfg.data.image_size) // sizes(cfg.model)["patch"]) ** 2


def sized_step(make_cfg, candidates, tokens):
    """Compile with each (batch, remat) candidate until the compiled peak fits, then time it;
    `tokens(cfg)` is the number of tokens per example."""
    for i, (batch, remat) in enumerate(candidates):
        cfg = make_cfg(batch, remat)
        trainer, compiled, compile_s = compile_step(cfg)
        if fits(compiled) or i == len(candidates) - 1:
            row = time_step(trainer, compiled, compile_s, batch, tokens(cfg))
            return dict(remat=remat, **row)
        print(
            f"    batch {batch} (remat {remat}) needs {_gib(perf.peak_bytes(compiled))} GiB: "
            "trying the next size",
            flush=True,
        )


# --- sections ---------------------------------------------------------------------------------
def section_env(run):
    def env():
        versions = {}
        for name in VERSIONS:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[name] = importlib.metadata.version(name)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.suppress(Exception):
            jax.print_environment_info()
        return dict(
            platform=run.device.platform,
            device_kind=run.device.device_kind,
            device_count=jax.device_count(),
            memory_gib=_gib(run.bytes_limit),
            peak_bf16_tflops=run.peak,
            python=platform.python_version(),
            host=platform.node(),
            xla_flags=os.environ.get("XLA_FLAGS", ""),
            versions=versions,
            environment_info=buf.getvalue()[-4000:],
        )

    run.case("env", "env", env)


def latents_npz(size, n=64):
    """A file of n synthetic latents (size, size, 4) and ImageNet labels: the step's speed does
    not depend on the pixels, and netlab downloads no VAE."""
    path = pathlib.Path(RUN.tmp.name) / f"latents_{size}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, size, size, 4)).astype(np.float32)
        np.savez(path, x=x, label=rng.integers(0, 1000, n).astype(np.int32))
    return str(path)


def dit_config(variant, batch, remat, **extra):
    """imagenet_latent_dit:gpu (bf16, DiT-XL/2 recipe) with `variant`, batch and remat; --tiny:
    one block of width 32 on 8x8x4 latents in float32."""
    size = 8 if RUN.tiny else 32
    cfg = configlib.load(
        str(DIT_CONFIG),
        "cpu" if RUN.tiny else "gpu",
        {
            "data.source": "npz",
            "data.path": latents_npz(size),
            "data.image_size": size,
            # --tiny computes in float32: XLA:CPU emulates bf16, which only slows the compile
            "train.compute_dtype": "float32" if RUN.tiny else "bfloat16",
        },
    )
    return _unlocked(
        cfg,
        **{
            "model.variant": "" if RUN.tiny else variant,
            **(
                {"model.depth": 1, "model.width": 32, "optimizer.ema_decay": 0.0}
                if RUN.tiny
                else {}
            ),
            "train.batch_size": batch,
            "train.remat": remat,
            **extra,
        },
    )


def section_dit(run):
    cases = {
        "B/2": [(256, "none"), (128, "none"), (64, "dots")],
        "XL/2": [(256, "dots"), (128, "dots"), (64, "full")],
    }
    for variant, cands in cases.items():
        if run.tiny and variant != "B/2":  # --tiny: one compile per code path
            continue
        if run.tiny:
            cands = [(4, "none")]
        run.case(
            "dit",
            f"DiT-{variant}",
            lambda v=variant, c=cands: sized_step(lambda b, r: dit_config(v, b, r), c, dit_tokens),
        )


def section_attention(run):
    shapes = [(4, 16, 2, 8)] if run.tiny else [(256, 256, 16, 72), (64, 1024, 16, 72)]
    for b, length, heads, dim in shapes:
        for impl in ("cudnn", "xla") if run.tiny else ("cudnn", "xla", None):

            def case(b=b, length=length, heads=heads, dim=dim, impl=impl):
                key = jax.random.split(jax.random.key(0), 3)
                q, k, v = (jax.random.normal(r, (b, length, heads, dim), jnp.bfloat16) for r in key)

                def loss(q, k, v):
                    out = jax.nn.dot_product_attention(q, k, v, implementation=impl)
                    return out.astype(jnp.float32).sum()

                try:
                    fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()
                except Exception as e:  # noqa: BLE001 - no cuDNN here: say so
                    if impl is None:
                        raise
                    return dict(available=False, reason=f"{type(e).__name__}")
                sec = perf.median_seconds(
                    lambda: jax.block_until_ready(fn(q, k, v)), run.steps, warmup=1
                )
                flops = 3.5 * 4 * b * heads * length**2 * dim
                return dict(
                    available=True,
                    shape=[b, length, heads, dim],
                    ms=1e3 * sec,
                    tflops=flops / sec / 1e12,
                    mfu=flops / sec / 1e12 / run.peak if run.peak else None,
                )

            run.case("attention", f"L{length}_{impl or 'default'}", case)


def lm_config(impl, batch):
    over = {"model.moe.backend": "dropless", "model.moe.grouped_matmul": impl}
    if RUN.tiny:
        over.update({"train.compute_dtype": "float32", "model.moe.num_experts": 4})
    width, depth, heads, seq = (32, 1, 2, 16) if RUN.tiny else (1024, 8, 16, 1024)
    over.update(
        {
            "model.width": width,
            "model.depth": depth,
            "model.num_heads": heads,
            "model.mlp_hidden": 4 * width,
            "model.moe.hidden": 2 * width,
            "data.seq_len": seq,
            "train.batch_size": batch,
        }
    )
    return configlib.load(str(LM_CONFIG), "gpu", over)


def dit_moe_config(impl, batch, remat):
    width = 32 if RUN.tiny else 768
    return dit_config(
        "B/2",
        batch,
        remat,
        **{
            "model.mlp": "dit_moe",
            "model.mlp_every": 1,
            "model.mlp_kwargs": dict(
                num_experts=4 if RUN.tiny else 8,
                hidden=2 * width,
                k=2,
                num_shared=1 if RUN.tiny else 2,
                backend="dropless",
                grouped_matmul=impl,
                load_balance_weight=0.01,
            ),
        },
    )


def section_moe(run):
    # --tiny: one compile per code path (the LM with ragged_dot, DiT-MoE with the tiled layout)
    for impl in ("ragged_dot",) if run.tiny else ("ragged_dot", "tiled"):
        cands = [(4, "none")] if run.tiny else [(32, "none"), (16, "none"), (16, "full")]
        run.case(
            "moe",
            f"MoE-LM_{impl}",
            lambda impl=impl, c=cands: sized_step(
                lambda b, r: _unlocked(lm_config(impl, b), **{"train.remat": r}),
                c,
                lambda cfg: int(cfg.data.seq_len),
            ),
        )
    if run.tiny:  # --tiny: DiT-MoE is only built (config, task, shapes): its compile is the slowest
        run.case("moe", "DiT-MoE-B/2_built", lambda: built(dit_moe_config("tiled", 4, "none")))
        return
    for impl in ("ragged_dot", "tiled"):
        cands = [(128, "none"), (64, "none"), (64, "dots")]
        run.case(
            "moe",
            f"DiT-MoE-B/2_{impl}",
            lambda impl=impl, c=cands: sized_step(
                lambda b, r: dit_moe_config(impl, b, r), c, dit_tokens
            ),
        )


GRAPH_MODELS = {
    "gcn": {"model.hidden": 256, "model.num_layers": 3},
    "gat": {},  # the paper's 8 heads x 8
}


def section_graph(run):
    from bench.graph import synthetic
    from netlab.graph.task import NodeClassification

    n, e = (300, 2000) if run.tiny else (170_000, 1_200_000)
    ds = synthetic(n, e, 16 if run.tiny else 128, 40)
    for name, over in GRAPH_MODELS.items():
        if run.tiny and name != "gcn":
            continue
        cfg = configlib.load(str(GRAPH_CONFIG), f"model={name},gpu", over)

        def case(cfg=cfg, name=name):
            trainer, compiled, compile_s = compile_step(
                cfg, NodeClassification(cfg, dataset=ds, policy=None)
            )
            row = time_step(trainer, compiled, compile_s, 1, 0)
            for k in ("batch", "examples_per_s", "tokens_per_s", "mfu"):
                row.pop(k)
            row.update(nodes=ds.num_nodes, edges=ds.num_edges)
            if not run.args.no_pyg:
                try:
                    row.update(pyg(cfg, ds, name))
                except Exception as e:  # noqa: BLE001 - keep netlab's numbers when PyG fails
                    if run.tiny:
                        raise
                    row["pyg"] = f"error: {type(e).__name__}: {str(e)[:200]}"
            if isinstance(row.get("pyg_ms"), float):
                row["ratio_netlab_over_pyg"] = row["step_ms"] / row["pyg_ms"]
            return row

        run.case("graph", name, case)


def pyg(cfg, ds, name):
    """The same model, data, dropout and Adam step in PyTorch Geometric on JAX's device kind."""
    try:
        import torch
        import torch.nn.functional as F
        from torch_geometric.nn import GATConv, GCNConv
    except ImportError as e:
        return dict(pyg=f"unavailable ({type(e).__name__})")
    if RUN.device.platform == "gpu" and torch.cuda.is_available():
        dev = torch.device("cuda")
    elif RUN.device.platform == "cpu":
        dev = torch.device("cpu")
    else:
        return dict(pyg=f"unavailable (no torch device for {RUN.device.platform})")
    m = cfg.model
    f, c = ds.x.shape[1], ds.num_classes
    if name == "gcn":
        dims = [f] + [m.hidden] * (m.num_layers - 1) + [c]
        convs = [GCNConv(a, b, cached=True) for a, b in zip(dims[:-1], dims[1:])]
        act = F.relu
    else:
        convs = [
            GATConv(f, m.hidden, heads=m.heads, dropout=m.dropout),
            GATConv(m.hidden * m.heads, c, heads=m.out_heads, concat=False, dropout=m.dropout),
        ]
        act = F.elu
    net = torch.nn.ModuleList(convs).to(dev)
    x = torch.from_numpy(ds.x).to(dev)
    ei = torch.from_numpy(np.stack([ds.senders, ds.receivers]).astype(np.int64)).to(dev)
    y = torch.from_numpy(ds.y.astype(np.int64)).to(dev)
    train = torch.from_numpy(ds.train_mask).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg.optimizer.lr))
    net.train()

    def step():
        opt.zero_grad()
        h = x
        for i, conv in enumerate(net):
            h = conv(F.dropout(h, float(m.dropout), True), ei)
            if i < len(net) - 1:
                h = act(h)
        F.cross_entropy(h[train], y[train]).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    sec = perf.median_seconds(step, RUN.steps, warmup=2)
    return dict(pyg_ms=1e3 * sec, pyg_device=str(dev), torch=torch.__version__)


def section_sampler(run):
    from netlab.train.trainer import build_task

    n = 2 if run.tiny else 256

    def case():
        cfg = dit_config("B/2", n, "none")
        task = build_task(cfg)
        params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
        t0 = time.perf_counter()
        task.sample(params, n, steps=20)  # compiles the 20-step scan
        compile_s = time.perf_counter() - t0
        sec = perf.median_seconds(lambda: task.sample(params, n, steps=20), 3, warmup=0)
        d = cfg.diffusion
        return dict(
            images=n,
            nfe=20,
            sampler=d.sampler,
            guidance=float(d.guidance),
            seconds=sec,
            images_per_s=n / sec,
            compile_s=compile_s,
        )

    run.case("sampler", "DiT-B/2_nfe20", case)


RUN = None


def main(argv=None):
    global RUN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for accelerator_<chip>.json")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (CPU, under a minute)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--force", action="store_true", help="rerun sections already in the JSON")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per case (default 10)")
    ap.add_argument("--no-pyg", action="store_true", help="graph: skip the PyG comparison")
    ap.add_argument(
        "--budget-scale", type=float, default=1.0, help="multiply every section's time guard"
    )
    args = ap.parse_args(argv)
    RUN = run = Run(args)
    fns = dict(
        env=section_env,
        dit=section_dit,
        attention=section_attention,
        moe=section_moe,
        graph=section_graph,
        sampler=section_sampler,
    )
    print(
        f"accelerator check on {run.device.device_kind} ({run.device.platform}), "
        f"peak {run.peak} TFLOP/s bf16 -> {run.path}",
        flush=True,
    )
    try:
        for name in SECTIONS:
            if name not in args.sections:
                continue
            done = run.result.get(name, {}).get("complete")
            if done and not args.force:
                print(f"{name}: already in {run.path.name}; skipped (--force reruns it)")
                continue
            print(f"{name}:", flush=True)
            t0, c0 = time.monotonic(), time.process_time()
            run.deadline = t0 + BUDGET[name] * args.budget_scale * (100 if run.tiny else 1)
            old = [] if args.force else run.result.get(name, {}).get("rows", [])
            run.kept = {r["case"]: r for r in old if "error" not in r and "skipped" not in r}
            run.result[name] = dict(rows=[], complete=False)
            fns[name](run)
            rows = run.result[name]["rows"]
            run.result[name].update(
                complete=not [r for r in rows if "error" in r or "skipped" in r],
                seconds=time.monotonic() - t0,
                cpu_s=time.process_time() - c0,
            )
            run.save()
    finally:
        run.tmp.cleanup()
    print(summary(run.result))
    print(f"wrote {run.path}")
    return run.path


def summary(result) -> str:
    """A markdown table of the train-step rows (dit, moe, graph)."""
    lines = ["| case | batch | remat | step ms | examples/s | TFLOP/s | MFU |", "|---" * 7 + "|"]
    for section in ("dit", "moe", "graph"):
        for r in result.get(section, {}).get("rows", []):
            if "step_ms" not in r:
                continue
            mfu = r.get("mfu")
            lines.append(
                f"| {r['case']} | {r.get('batch', '')} | {r.get('remat', '')} | "
                f"{r['step_ms']:.1f} | {r.get('examples_per_s', float('nan')):.1f} | "
                f"{r['tflops']:.2f} | {'n/a' if mfu is None else f'{mfu:.1%}'} |"
            )
    return "\n".join(lines)


def finite_numbers(tree):
    """Every float in a JSON tree (for the test): all must be finite."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in finite_numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in finite_numbers(v)]
    return [tree] if isinstance(tree, float) and not isinstance(tree, bool) else []


if __name__ == "__main__":
    main()
