"""Digits Frechet distance against NFE for every registered sampler, on one trained digits DiT.

The digits half of the NFE table (bench/diffusion_nfe.py is the exact-oracle half). One
checkpoint of `configs/diffusion/digits_dit.py:cpu` (by default runs/adjoint_dit, the model
bench/adjoint_guidance.py trains, with `optimizer.ema_stds=()` so its raw parameters are the
evaluated ones) is sampled by every `registries.SAMPLERS` entry (the registry walk: a new sampler
is benchmarked without touching this file) at a target NFE of 2, 4, 8 and 16, and scored by the
task's own evaluation, `DigitsDiffusion.evaluate` (what `Trainer.evaluate` calls): `--num_samples`
samples (default 500, labels cycling 0..9, the same initial noise for every row) against the
digits test split, through the FD classifier stored in the workdir. The real-data floor at this
sample count (training vs test images) is reported with every row.

NFE: the grid is the config's `uniform_logsnr` grid with `diffusion.grid_final="zero"`, so the last
step lands on sigma = 0 in closed form and `finish` costs nothing; each sampler's own accounting
(`samplers.nfe(..., final_zero=True)`; CFG-PC: predictor + `num_corrector` = 2 calls per step)
picks the most steps whose NFE fits the target, and the row reports the NFE actually spent (EDM
Heun: 2 per step less one at sigma = 0, so 1/3/7/15). A "call" is one guided denoiser evaluation
(`diffusion.guidance` 1.0: conditional only). DC-Solver fits its ratios at sampling time against
a DPM-Solver++ reference on its first `fit_points` rows (`fit_iters` 20 here): those calls are not
counted in its NFE (as the authors, who fit once per setting offline).

Resumable: rows already in the JSON are skipped. CPU: about 10-40 s per row (mostly compiling).

    nice -n 19 python bench/diffusion_nfe_digits.py --workdir runs/adjoint_dit \\
        --gan_workdir runs/digits_gan --distill_workdirs runs/digits_cd runs/digits_ctm \\
        runs/digits_ctm_adaptive --ddgan_workdirs runs/digits_rdgan \\
        > runs/diffusion_nfe_digits.log 2>&1

`--gan_workdir` (optional) adds the one-call row of a Diffusion-GAN generator trained by
`python -m netlab.main --config configs/diffusion/digits_gan.py:cpu --workdir runs/digits_gan`,
scored the same way, with the run's adaptive diffusion length T over training.

`--ddgan_workdirs` (optional) adds the T-call row (T = 4) of each DDGAN / RDGAN generator trained
by `python -m netlab.main --config configs/diffusion/digits_gan.py:method=rdgan --workdir
runs/digits_rdgan` (or method=ddgan), scored the same way (this workdir's FD classifier).

`--distill_workdirs` (optional) adds a row at NFE 1, 2 and 4 for each consistency-distillation or
CTM student of this checkpoint (configs/diffusion/digits_distill.py:method=cd|ctm runs, e.g.
runs/digits_cd, runs/digits_ctm), sampled by its own few-step sampler from the same unit noise
(`DistilledDigits.sample`) and scored the same way (`DigitsDiffusion.evaluate`, this workdir's
FD classifier): one NFE is one student call.

Writes bench/results/diffusion_nfe_digits.{json,md,png}.
"""

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.checkpoint import manager  # noqa: E402
from netlab.diffusion import samplers  # noqa: E402
from netlab.diffusion.registries import SAMPLERS  # noqa: E402
from netlab.diffusion.task import DigitsDiffusion  # noqa: E402
from netlab.train import ema as emalib  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGETS = (2, 4, 8, 16)
STUDENT_NFE = (1, 2, 4)  # the distilled students' rows
COLUMNS = (1,) + TARGETS
OPTIONS = {"cfg_pc": {"num_corrector": 1}, "dc_solver": {"fit_iters": 20}}
EVALS = {"cfg_pc": 2}  # calls per step where the sampler does not declare `evals_per_step`


STUDENT_NOTES = (
    "Short CPU runs (CD 1500 steps, target = sg(theta); CTM 1000 steps, target EMA 0.99, K = 4 "
    "teacher Heun steps, DSM weight 0.003; batch 64, Adam 1e-4 constant; about 6 and 1.5 "
    "steps/s niced on 2 shared cores), not converged: read them against the teacher's own "
    "few-step rows. The adaptive row balances the DSM term as the authors do "
    "(distill.dsm_balance=adaptive: weight = the ratio of the CTM and DSM losses' gradient norms "
    "at the DiT's output kernel, `ctm.balance_weight`); over the run that weight stayed between "
    "0.001 and 0.012 (0.0035 at the last step), around the fixed row's hand-set 0.003, and its "
    "FD is within the few units this protocol cannot separate. "
    "One CTM call already scores below every sampler at up to 8 NFE and about "
    "at the teacher's own 21-NFE setting; CTM's DSM term keeps training the denoiser g(x, t, t) "
    "on data, so the student is not bounded by the teacher's sampler. One CD call beats DDIM "
    "at up to 8 NFE, but CD's multistep samples do not improve on it here (not diagnosed; "
    "each re-noised call adds the student's own error at a smaller sigma)."
)
DDGAN_NOTES = (
    "A 30-minute CPU run (6000 steps of batch 64 at 3-4 steps/s niced on 2 shared cores) of a "
    "small conv generator and discriminator (netlab/diffusion/ddgan_digits_task.py), "
    "unconditional, one optimizer on L_D + L_G, lazy R1 every 15 steps (gan.lazy_reg, the "
    "authors' setting), EMA 0.999 of the weights (optimizer.ema_decay; the authors keep an "
    "EMA of G; the raw weights of the same checkpoint score FD 262: the last steps' generator "
    "oscillates, its average does not). The FD still falls at the last evaluation, so longer "
    "runs should do better. "
    "The earlier run of this config with R1 at every step and no EMA (1.5 steps/s) was "
    "stopped at step 1489 with FD 528 (310 at step 1000, partly collapsed). Like the "
    "Diffusion-GAN row, a different model and budget from the DiT."
)
NOTES = (
    "Reading: a one-step row (heun, flow_heun at NFE 1; cfg_pc at 2, its predictor and one "
    "corrector) ends in the closed-form step to sigma = 0, x0_hat(x_T), so they agree; with "
    "two steps the multistep solvers (dpmpp_2m, unipc, dc_solver) are first order and equal "
    "DDIM; flow_euler equals DDIM at every NFE (Euler on the flow ODE in data prediction is "
    "DDIM). EDM Heun steps in sigma_ve = exp(-logsnr / 2), from about 1800 at the grid's "
    "log-SNR -15 (EDM's own range stops at 80), so its few-step FD is poor, as on the oracle "
    "(bench/results/diffusion_nfe.md). FD at 500 samples is biased upwards (the floor above) "
    "and its spread was not measured (one noise seed), so do not read differences of a few "
    "units; the checkpoint is a short CPU run (FD ~95, not a converged model)."
)


def spent(name: str, steps: int) -> int:
    """Denoiser calls for `steps` intervals of a grid ending at sigma = 0."""
    if name in EVALS:
        return EVALS[name] * steps
    return samplers.nfe(name, steps, final_zero=True)


def steps_for(name: str, target: int) -> int:
    """The most grid intervals whose NFE is at most `target` (at least one)."""
    steps = 1
    while spent(name, steps + 1) <= target:
        steps += 1
    return steps


def build(args, overrides, workdir=None, config=None, groups=("model", "diffusion")):
    """The config with the workdir's own `groups` (a preset may have changed since it was
    trained), then `--set` (the DiT's only), then `overrides`."""
    saved = json.loads((pathlib.Path(workdir or args.workdir) / "config.json").read_text())
    own = {f"{g}.{k}": v for g in groups for k, v in saved[g].items()}
    sets = {} if workdir else dict(s.split("=", 1) for s in args.set)
    return configlib.load(config or args.config, None, {**own, **sets, **overrides})


def gan_row(args):
    """The Diffusion-GAN generator of `--gan_workdir` (configs/diffusion/digits_gan.py:cpu run):
    one call per sample, scored by the digits task's evaluation (`DigitsDiffusion.evaluate`)."""
    from netlab.diffusion.gan_digits_task import DiffusionGANDigits

    n = {"eval.num_samples": str(args.num_samples)}
    cfg = build(args, n, args.gan_workdir, "configs/diffusion/digits_gan.py:cpu", ("gan",))
    task = DiffusionGANDigits(cfg)
    abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    params, step = manager.restore_params(args.gan_workdir, abstract)
    scalars, _ = DigitsDiffusion.evaluate(task, params, None, int(step), args.gan_workdir)
    log = pathlib.Path(args.gan_workdir) / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    big_t = [(r["step"], r["train/T"]) for r in rows if "train/T" in r]
    row = dict(method="diffusion_gan", workdir=args.gan_workdir, step=int(step), nfe=1)
    return dict(row, **scalars, T_log=big_t)


def ddgan_row(args, workdir):
    """The DDGAN / RDGAN generator of a digits_gan.py:method=ddgan|rdgan run: its T-step chain,
    scored by the digits task's evaluation with this workdir's FD classifier."""
    from netlab.diffusion.ddgan_digits_task import DDGANDigits

    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    method = saved["gan"]["method"]
    config = f"configs/diffusion/digits_gan.py:method={method}"
    n = {"eval.num_samples": str(args.num_samples)}
    task = DDGANDigits(build(args, n, workdir, config, ("gan",)))
    abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    params, step = manager.restore_params(workdir, abstract)
    # the weights the trainer evaluates (Trainer.eval_params): the first EMA slot, if any
    slot = next(iter(emalib.names(ml_collections.ConfigDict(saved["optimizer"]))), None)
    ema = slot is not None
    if ema:  # read from the checkpoint's "rest" item (restore_params reads parameters only)
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckpt:
            rest = ckpt.restore(pathlib.Path(workdir).resolve() / "ckpt" / str(step) / "rest")
        params = jax.tree.map(jax.numpy.asarray, rest["ema"][slot])
    scalars, _ = task.evaluate(params, None, int(step), args.workdir)
    log = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    fd_log = [
        (r["step"], r["eval/digits_fd"]) for r in map(json.loads, log) if "eval/digits_fd" in r
    ]
    row = dict(method=method, workdir=workdir, step=int(step), steps=saved["train"]["steps"])
    row["weights"] = "EMA" if ema else "raw"
    return dict(row, **{k: float(v) for k, v in scalars.items()}, fd_log=fd_log)


def student_rows(args, have):
    """Rows at STUDENT_NFE for every `--distill_workdirs` run not yet in `have`."""
    from netlab.diffusion.distill_task import DistilledDigits

    out = []
    for workdir in args.distill_workdirs:
        saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
        method = saved["distill"]["method"]
        config = f"configs/diffusion/digits_distill.py:method={method}"
        task = None
        adaptive = saved["distill"].get("dsm_balance", "fixed") == "adaptive"
        for nfe in STUDENT_NFE:
            name = f"{method}{', adaptive DSM weight' if adaptive else ''} (student)"
            if (name, nfe) in have:
                continue
            over = {"distill.sample_steps": str(nfe), "eval.num_samples": str(args.num_samples)}
            t0 = time.time()
            task = DistilledDigits(build(args, over, workdir, config, ("distill",)))
            abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
            params, step = manager.restore_params(workdir, abstract)
            scalars, _ = task.evaluate(params, None, int(step), args.workdir)
            row = dict(method=name, target=nfe, steps=nfe, workdir=workdir, step=int(step))
            row.update({k: float(v) for k, v in scalars.items()}, seconds=time.time() - t0)
            row["nfe"] = nfe
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def write_md(rows, path, meta):
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["target"]] = r
    ref = meta["reference"]
    head = "| sampler | " + " | ".join(f"NFE~{t}" for t in COLUMNS) + " |"
    lines = [
        "# Digits FD vs NFE (bench/diffusion_nfe_digits.py)",
        "",
        f"Checkpoint {meta['workdir']} (step {meta['step']}, {meta['model']}), "
        f"{meta['num_samples']} samples per row against the digits test split through "
        "`DigitsDiffusion.evaluate`; real-data floor at this sample count "
        f"{meta['floor']:.2f}; the checkpoint's own setting ({ref['method']}, {ref['steps']} "
        f"steps + final denoise, NFE {ref['nfe']}, grid ending at the schedule's last point) "
        f"gives {ref['digits_fd']:.2f}. Cells: FD (NFE actually spent). Grid: uniform log-SNR "
        "ending at sigma = 0; lower is better.",
        "",
        head,
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, cells in by.items():
        out = []
        for t in COLUMNS:
            r = cells.get(t)
            out.append("-" if r is None else f"{r['digits_fd']:.1f} ({r['nfe']})")
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    lines += ["", NOTES]
    students = [r for r in rows if r["method"].endswith("(student)")]
    if students:
        runs = sorted({(r["method"], r["workdir"], r["step"]) for r in students})
        lines += [
            "",
            "Distilled students (`(student)` rows; configs/diffusion/digits_distill.py, "
            "netlab/diffusion/distill_task.py): "
            + "; ".join(f"{m[: -len(' (student)')]}: {w} (step {s})" for m, w, s in runs)
            + f". All are distilled from the checkpoint above ({meta['workdir']}) and start "
            "from its weights; one NFE is one student call from sigma_max = 80 (the same unit "
            "noise as the sampler rows), at NFE 2 and 4 along the descending Karras grid of "
            "NFE + 1 points (CD: Alg. 1, re-noising between calls; CTM: gamma = 0, "
            "deterministic jumps). " + STUDENT_NOTES,
        ]
    gan = meta.get("gan")
    if gan:
        lines += [
            "",
            f"Few-step model: Diffusion-GAN (configs/diffusion/digits_gan.py:cpu, {gan['workdir']}"
            f", step {gan['step']}), one generator call per sample: FD {gan['digits_fd']:.1f}.",
            "Its adaptive diffusion length T at the logged steps (step: T): "
            + ", ".join(f"{s}: {t:g}" for s, t in gan["T_log"])
            + ". T only grows while the discriminator is too sure of the diffused real data "
            "(r_d above 0.6); where T stays near 0 the run is the plain non-saturating GAN. "
            "The GAN and the DiT above are different models trained for different budgets: "
            "this row is not a like-for-like comparison of the methods.",
        ]
    for r in meta.get("ddgan", {}).values():
        name = {"ddgan": "DDGAN", "rdgan": "RDGAN (softplus SUOT, tau 1e-3)"}[r["method"]]
        lines += [
            "",
            f"Few-step model: {name} (configs/diffusion/digits_gan.py:method={r['method']}, "
            f"{r['workdir']}, step {r['step']}), the T = {r['nfe']:g} step posterior-sampling "
            f"chain, {r['nfe']:g} generator calls per sample: FD {r['digits_fd']:.1f} with the "
            f"{r.get('weights', 'raw')} weights (the DiT workdir's FD classifier, as every row). "
            f"The run's own evaluations (step: FD): "
            + ", ".join(f"{a}: {b:.1f}" for a, b in r["fd_log"])
            + f"; stopped at step {r['step']} of train.steps {r['steps']}. {DDGAN_NOTES}",
        ]
    path.write_text("\n".join(lines) + "\n")


def plot(rows, path, floor, gan=None, ddgan=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["nfe"], r["digits_fd"]) for r in rows if r["method"] == name)
        style = dict(marker="s", lw=2.5) if name.endswith("(student)") else dict(marker="o")
        ax.plot(*zip(*pts), label=name, **style)
    if gan:
        ax.plot([1], [gan["digits_fd"]], "k*", ms=10, label="diffusion_gan (G)")
    for r in (ddgan or {}).values():
        ax.plot([r["nfe"]], [r["digits_fd"]], "kP", ms=9, label=f"{r['method']} (G, T = 4)")
    ax.axhline(floor, color="k", ls=":", label="real floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="digits FD")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/adjoint_dit")
    ap.add_argument("--config", default="configs/diffusion/digits_dit.py:cpu", help="its config")
    ap.add_argument("--set", nargs="*", default=[], help="its config overrides key=value")
    ap.add_argument("--num_samples", type=int, default=500)
    ap.add_argument("--gan_workdir", default="", help="a digits_gan.py run: its 1-call row")
    ap.add_argument(
        "--ddgan_workdirs", nargs="*", default=[], help="digits_gan.py:method=ddgan|rdgan"
    )
    ap.add_argument(
        "--distill_workdirs", nargs="*", default=[], help="digits_distill.py runs: NFE 1/2/4 rows"
    )
    ap.add_argument("--out", default=str(RESULTS / "diffusion_nfe_digits"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    json_path = out.with_suffix(".json")
    done = json.loads(json_path.read_text()) if json_path.exists() else {"rows": []}
    have = {(r["method"], r["target"]) for r in done["rows"]}

    cfg = build(args, {})
    task = DigitsDiffusion(cfg)
    abstract = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    params, step = manager.restore_params(args.workdir, abstract)
    meta = {
        "workdir": args.workdir,
        "step": int(step),
        "model": f"dit width {cfg.model.width} depth {cfg.model.depth}",
        "num_samples": args.num_samples,
    }
    for name in SAMPLERS.names():
        for target in TARGETS:
            if (name, target) in have:
                continue
            steps = steps_for(name, target)
            overrides = {
                "diffusion.sampler": name,
                "diffusion.sample_steps": str(steps),
                "diffusion.grid_final": "zero",
                "diffusion.sampler_kwargs": repr(OPTIONS.get(name, {})),
                "eval.num_samples": str(args.num_samples),
            }
            t0 = time.time()
            task = DigitsDiffusion(build(args, overrides))
            scalars, _ = task.evaluate(params, None, int(step), args.workdir)
            row = dict(method=name, target=target, steps=steps, nfe=spent(name, steps))
            row.update({k: float(v) for k, v in scalars.items()}, seconds=time.time() - t0)
            print(json.dumps(row), flush=True)
            done["rows"].append(row)
            done["meta"] = meta
            json_path.write_text(json.dumps(done, indent=1))
    if "reference" not in done:  # the checkpoint's own evaluation setting: its logged FD
        task = DigitsDiffusion(build(args, {"eval.num_samples": str(args.num_samples)}))
        scalars, _ = task.evaluate(params, None, int(step), args.workdir)
        d = task.config.diffusion
        done["reference"] = dict(
            method=d.sampler, steps=int(d.sample_steps), nfe=int(d.sample_steps) + 1, **scalars
        )
        json_path.write_text(json.dumps(done, indent=1))
    for row in student_rows(args, have):
        done["rows"].append(row)
        json_path.write_text(json.dumps(done, indent=1))
    if args.gan_workdir and "gan" not in done:
        done["gan"] = gan_row(args)
        json_path.write_text(json.dumps(done, indent=1))
    for workdir in args.ddgan_workdirs:
        if workdir not in done.setdefault("ddgan", {}):
            done["ddgan"][workdir] = ddgan_row(args, workdir)
            print(json.dumps(done["ddgan"][workdir]), flush=True)
            json_path.write_text(json.dumps(done, indent=1))
    meta["ddgan"] = done.get("ddgan", {})
    meta["floor"] = done["rows"][0]["digits_fd_real_floor"]
    meta["gan"] = done.get("gan")
    meta["reference"] = done["reference"]
    write_md(done["rows"], out.with_suffix(".md"), meta)
    plot(done["rows"], out.with_suffix(".png"), meta["floor"], meta["gan"], meta["ddgan"])


if __name__ == "__main__":
    main()
