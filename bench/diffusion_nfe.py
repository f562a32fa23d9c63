"""Error against NFE for every registered sampler, the few-step models and DBIM's solver orders.

    nice -n 19 python bench/diffusion_nfe.py            # float64; CPU time: see results

All on exact closed-form models, so the only error is the sampler's:
- `samplers`: every `registries.SAMPLERS` entry (the registry walk: a new sampler is benchmarked
  without touching this file; `OPTIONS` below gives a few their bench options) on two oracles,
  the cosine schedule's uniform log-SNR grid from log-SNR -15 to 15 (toy2d's default), no final
  denoiser call: `gauss` (one 2-D Gaussian: the PF-ODE endpoint is closed form,
  `oracle.gaussian_ode_solution`) and `mixture` (toy2d's 8-mode ring, mode std 0.15: the
  endpoint is DPM-Solver++(2M) at 4000 steps, which moves by at most ~1e-4 from 2000
  steps: errors below ~1e-4 are not resolved there). EDM's Heun works in sigma_ve = e^{-logsnr/2},
  from 1808 here (not EDM's 80), so its few-step errors on this grid are large.
- `fewstep`: on the Gaussian between sigma 80 and 0.002 (the consistency models' range),
  consistency distillation fitted to its CD-loss minimum per grid point as in
  tests/diffusion/test_consistency.py (affine network, N = 40 Karras grid) and CTM with affine
  jumps G(x, t, s) fitted by least squares (through `ctm.jump` / `ctm.preconditioned`) to a
  64-step Heun teacher for each jump of the sampling grid; 1, 2 and 4 network calls, against
  DDIM, DPM-Solver++(2M) and EDM Heun on the same end points.
- `bridge`: DBIM orders 1-3 (`dbim.sample_high_order`, deterministic, the authors' order-1 last
  step) on the Gaussian-to-Gaussian bridge of tests/diffusion/test_dbim.py, grid uniform in
  lambda = log(b / c); NFE = steps + 1 (the booting call).
Metrics: `path` = mean |x - x_exact| over 2048 samples for the same initial noise (the ODE
endpoint error; for stochastic samplers (ddpm, cfg_pc, CD at 2 and 4 steps) it is not expected to
vanish); `law` = sliced 1-Wasserstein distance (64 random directions) between the samples and the
exact endpoints, which does vanish for a correct stochastic sampler up to the sample size
(~0.02 here). Writes bench/results/diffusion_nfe.{json,md,png}.
"""

import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from netlab.diffusion import consistency, ctm, dbim, ddbm, samplers, schedules  # noqa: E402
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution  # noqa: E402
from netlab.diffusion.parameterization import edm_scalings  # noqa: E402
from netlab.diffusion.registries import SAMPLERS  # noqa: E402

NFES = (1, 2, 4, 8, 16, 32)
N = 2048
OPTIONS = {"cfg_pc": {"num_corrector": 1}, "dc_solver": {"fit_iters": 20}}
EVALS = {"cfg_pc": 2}  # network calls per step where `samplers.nfe` does not know them
MU, STD = np.array([0.6, -0.4]), np.array([0.5, 1.2])
GAUSS = GaussianMixture(MU[None], STD[None], np.ones(1))
_ANG = np.linspace(0, 2 * np.pi, 8, endpoint=False)
MIXTURE = GaussianMixture(
    np.stack([2 * np.cos(_ANG), 2 * np.sin(_ANG)], 1), np.full((8, 2), 0.15), np.full(8, 1 / 8)
)
DIRS = np.random.default_rng(7).standard_normal((2, 64))
DIRS /= np.linalg.norm(DIRS, axis=0)


def sliced_w1(x, y):
    """Mean over random unit directions of the 1-D W1 between the projections (equal sizes)."""
    return float(np.abs(np.sort(x @ DIRS, 0) - np.sort(y @ DIRS, 0)).mean())


def metrics(x, exact):
    x, exact = np.asarray(x), np.asarray(exact)
    return {"path": float(np.abs(x - exact).mean()), "law": sliced_w1(x, exact)}


def run_sampler(name, oracle, x, grid, **kw):
    fn = jax.jit(lambda x, g, k: samplers.sample(oracle.denoise, x, g, name, k, finish=False, **kw))
    return fn(x, jnp.asarray(grid), jax.random.key(1))


def sampler_section():
    sched = schedules.Schedule("cosine")
    x = jax.random.normal(jax.random.key(0), (N, 2), jnp.float64)
    ref_grid = schedules.sampling_grid(sched, 1, "uniform_logsnr")
    exact = {
        "gauss": gaussian_ode_solution(np.asarray(x), *ref_grid, MU, STD),
        "mixture": run_sampler(
            "dpmpp_2m", MIXTURE, x, schedules.sampling_grid(sched, 4000, "uniform_logsnr")
        ),
    }
    check = run_sampler(
        "dpmpp_2m", MIXTURE, x, schedules.sampling_grid(sched, 2000, "uniform_logsnr")
    )
    ref_err = float(np.abs(np.asarray(check) - np.asarray(exact["mixture"])).max())
    rows = []
    for name in SAMPLERS.names():
        per_step = EVALS.get(name, getattr(SAMPLERS.get(name), "evals_per_step", 1))
        for nfe in NFES:
            if nfe % per_step:
                continue
            grid = schedules.sampling_grid(sched, nfe // per_step, "uniform_logsnr")
            for oracle_name, oracle in (("gauss", GAUSS), ("mixture", MIXTURE)):
                out = run_sampler(name, oracle, x, grid, **OPTIONS.get(name, {}))
                m = metrics(out, exact[oracle_name])
                rows.append(dict(section="samplers", oracle=oracle_name, method=name, nfe=nfe, **m))
    return rows, ref_err


def cd_fit(sig):
    """Consistency distillation's fixed point, grid point by grid point (test_consistency.py);
    also used by notebooks/diffusion_fewstep.ipynb."""
    f = consistency.consistency_fn(_cd_net, 0.5, sig[0])
    rng = np.random.default_rng(0)
    x0 = MU + STD * rng.standard_normal((len(sig) - 1, 256, 2))
    z = rng.standard_normal(x0.shape)
    x_next = x0 + sig[1:, None, None] * z
    step = jax.jit(jax.vmap(consistency.teacher_step, (None, 0, 0, 0)), static_argnums=0)
    x_hat = np.asarray(step(GAUSS.denoise, x_next, sig[1:, None, None], sig[:-1, None, None]))
    c_noise = 0.25 * np.log(sig)
    ws, bs = np.zeros((len(sig), 2)), np.zeros((len(sig), 2))
    for n in range(len(sig) - 1):
        target = np.asarray(f((ws, bs, c_noise), x_hat[n], sig[n]))
        c_skip, c_out, c_in, _ = consistency.scalings(sig[n + 1], 0.5, sig[0])
        for d in range(2):
            design = np.stack([x_next[n, :, d], np.ones(x_next.shape[1])], 1)
            coef = np.linalg.lstsq(design, target[:, d] - c_skip * x_next[n, :, d])[0]
            ws[n + 1, d], bs[n + 1, d] = coef[0] / (c_out * c_in), coef[1] / c_out
    return f, (ws, bs, c_noise)


def _cd_net(params, xin, c_noise):
    w, b, grid = params
    i = jnp.argmin(jnp.abs(grid - c_noise))
    return w[i] * xin + b[i]


def _ctm_net(params, xin, c_t, c_s):
    w, b, c_ts = params
    i = jnp.argmin(jnp.abs(c_ts - c_t))
    return w[i] * xin + b[i]


def ctm_fit(sigmas, teacher_steps=64):
    """Per jump t -> s of `sigmas`: F affine with G(x_t) = the teacher's Heun solution x_s."""
    g = ctm.preconditioned(_ctm_net)
    x = sigmas[0] * np.random.default_rng(1).standard_normal((512, 2))
    heun = jax.jit(consistency.teacher_step, static_argnums=0)
    ws, bs = np.zeros((len(sigmas) - 1, 2)), np.zeros((len(sigmas) - 1, 2))
    for j, (t, s) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        x_s = jnp.asarray(x)
        path = np.geomspace(t, s, teacher_steps + 1)
        for a, b in zip(path[:-1], path[1:]):
            x_s = heun(GAUSS.denoise, x_s, a, b)
        x_s = np.asarray(x_s)
        c_skip, c_out, c_in, _ = (np.asarray(v) for v in edm_scalings(t, 0.5))
        r = s / t
        target = (x_s - r * x) / (1 - r) - c_skip * x  # = c_out (w c_in x + b)
        for d in range(2):
            design = np.stack([x[:, d], np.ones(len(x))], 1)
            coef = np.linalg.lstsq(design, target[:, d])[0]
            ws[j, d], bs[j, d] = coef[0] / (c_out * c_in), coef[1] / c_out
        x = x_s  # the next jump starts on the (teacher's) trajectory
    return g, (ws, bs, 0.25 * np.log(sigmas[:-1]))


def fewstep_section():
    eps, smax = 0.002, 80.0
    z = np.random.default_rng(2).standard_normal((N, 2))
    l0, l1 = -2 * np.log(smax), -2 * np.log(eps)
    a0, a1 = (1 / np.sqrt(1 + np.exp(-lv)) for lv in (l0, l1))
    exact = gaussian_ode_solution(a0 * smax * z, l0, l1, MU, STD) / a1  # VE coordinates
    rows = []
    sig = consistency.karras_sigmas(40, eps, smax)
    f, cd_params = cd_fit(sig)
    taus = {1: [smax], 2: [smax, sig[20]], 4: [smax, sig[30], sig[20], sig[10]]}
    for nfe, tau in taus.items():
        out = jax.jit(lambda p, z: consistency.sample(f, p, z, tau, jax.random.key(3), eps))(
            cd_params, jnp.asarray(z)
        )
        rows.append(
            dict(section="fewstep", oracle="gauss", method="cd", nfe=nfe, **metrics(out, exact))
        )
    for nfe in (1, 2, 4):
        sigmas = consistency.karras_sigmas(nfe + 1, eps, smax)[::-1].copy()
        g, params = ctm_fit(sigmas)
        out = jax.jit(lambda p, z: ctm.sample(g, p, z, sigmas, 0.0, sigma_min=eps))(
            params, jnp.asarray(z)
        )
        rows.append(
            dict(section="fewstep", oracle="gauss", method="ctm", nfe=nfe, **metrics(out, exact))
        )
    x_vp = jnp.asarray(a0 * smax * z)
    for name in ("ddim", "dpmpp_2m", "heun"):
        per_step = getattr(SAMPLERS.get(name), "evals_per_step", 1)
        for nfe in (1, 2, 4):
            if nfe % per_step:
                continue
            grid = -2 * np.log(consistency.karras_sigmas(nfe // per_step + 1, eps, smax)[::-1])
            out = np.asarray(run_sampler(name, GAUSS, x_vp, grid)) / a1
            rows.append(
                dict(section="fewstep", oracle="gauss", method=name, nfe=nfe, **metrics(out, exact))
            )
    return rows


def bridge_section():
    m, beta, v, l_T, l_end = (
        np.array([1.0, -0.5]),
        np.array([0.8, -0.3]),
        np.array([0.09, 0.25]),
        -3.0,
        5.0,
    )
    x_T = jnp.asarray(np.random.default_rng(1).standard_normal((N, 2)))

    def denoise(x, logsnr, x_T):
        a, b, c = ddbm.bridge_abc(logsnr, l_T)
        mu = m + beta * x_T
        return mu + b * v / (b**2 * v + c**2) * (x - a * x_T - b * mu)

    @jax.jit
    def run(x_T, grid):
        key = jax.random.key(0)
        out = jax.vmap(lambda o: dbim.sample_high_order(denoise, x_T, grid, l_T, key, order=o))(
            jnp.array([1, 2, 3])
        )
        a0, b0, c0 = ddbm.bridge_abc(grid[0], l_T)
        a1, b1, c1 = ddbm.bridge_abc(grid[-1], l_T)
        z = jax.random.normal(jax.random.split(key, grid.shape[0])[0], x_T.shape, x_T.dtype)
        scale = jnp.sqrt((b1**2 * v + c1**2) / (b0**2 * v + c0**2))
        return out, a1 * x_T + b1 * (m + beta * x_T) + scale * c0 * z

    rows = []
    for steps in (2, 4, 8, 16, 32):
        out, exact = run(x_T, dbim.lambda_grid(steps, l_T + 1e-3, l_end, l_T))
        for order in (1, 2, 3):
            m_ = metrics(out[order - 1], exact)
            rows.append(
                dict(
                    section="bridge",
                    oracle="gauss_bridge",
                    method=f"dbim_order{order}",
                    nfe=steps + 1,
                    **m_,
                )
            )
    return rows


def table(rows, section, oracle):
    sel = [r for r in rows if r["section"] == section and r["oracle"] == oracle]
    nfes = sorted({r["nfe"] for r in sel})
    methods = list(dict.fromkeys(r["method"] for r in sel))
    lines = [f"| {section} / {oracle}: path (law) | " + " | ".join(map(str, nfes)) + " |"]
    lines.append("|---" * (len(nfes) + 1) + "|")
    for mth in methods:
        cells = {r["nfe"]: f"{r['path']:.3g} ({r['law']:.3g})" for r in sel if r["method"] == mth}
        lines.append(f"| {mth} | " + " | ".join(cells.get(n, "") for n in nfes) + " |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("samplers", "gauss"),
        ("samplers", "mixture"),
        ("fewstep", "gauss"),
        ("bridge", "gauss_bridge"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for ax, (section, oracle) in zip(axes, panels):
        sel = [r for r in rows if r["section"] == section and r["oracle"] == oracle]
        for mth in dict.fromkeys(r["method"] for r in sel):
            pts = sorted((r["nfe"], max(r["law"], 1e-12)) for r in sel if r["method"] == mth)
            ax.loglog(*zip(*pts), marker="o", label=mth)
        ax.set(
            title=f"{section} / {oracle}",
            xlabel="NFE",
            ylabel="sliced W1 to the exact ODE endpoints",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    t0, c0 = time.time(), time.process_time()
    rows, ref_err = sampler_section()
    rows += fewstep_section()
    rows += bridge_section()
    out = ROOT / "bench" / "results"
    meta = {
        "samples": N,
        "mixture_reference_2000_vs_4000_steps_max_abs": ref_err,
        "seconds": time.time() - t0,
        "cpu_seconds": time.process_time() - c0,
    }
    (out / "diffusion_nfe.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = ["# Error against NFE on exact oracles (bench/diffusion_nfe.py)", ""]
    md += [
        "Command: `nice -n 19 .venv/bin/python bench/diffusion_nfe.py` (float64, 2048 samples).",
        "`path`: mean |x - exact ODE endpoint| (same noise); `law`: sliced W1 to the endpoints",
        "(~0.02 is the sampling floor). ddpm, cfg_pc and CD at 2-4 steps are stochastic: read",
        "`law` for them. Setups, references and fits: the docstring of bench/diffusion_nfe.py.",
        "",
    ]
    for section, oracle in (
        ("samplers", "gauss"),
        ("samplers", "mixture"),
        ("fewstep", "gauss"),
        ("bridge", "gauss_bridge"),
    ):
        md += [table(rows, section, oracle), ""]
    md += [
        f"Mixture reference (4000 vs 2000 steps, max abs): {ref_err:.2g}. Run time "
        f"{meta['seconds']:.0f} s wall, {meta['cpu_seconds']:.0f} s CPU.",
        "",
    ]
    (out / "diffusion_nfe.md").write_text("\n".join(md))
    plot(rows, out / "diffusion_nfe.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
