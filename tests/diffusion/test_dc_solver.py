"""DC-Solver: the authors' update (compensation after the corrector, interpolation in t, UniPC
order 3 bh1 with lower_order_final) against an independent numpy transcription of
`DCSolver.sample` / `multistep_uni_pc_bh_update` / `dynamic_compensation`; identity with UniPC
at rho = 1, exact Lagrange interpolation, fitted ratios (per step and joint) beat UniPC against a
many-step reference, and the cascade polynomial regression recovers its coefficients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import dc_solver, samplers, schedules
from netlab.diffusion.oracle import GaussianMixture

GMM = GaussianMixture(
    np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0.4, 0.6])
)
SCHED = schedules.Schedule("cosine_shifted", logsnr_min=-10.0, logsnr_max=4.0)
run_dc = jax.jit(lambda x, grid, r: dc_solver.dc_unipc(GMM.denoise, x, grid, r))


def authors_sample(x, t, lam, ratios, order=3, variant="bh1", denoise=None):
    """numpy transcription of the authors' multistep loop (lower_order_final=True): t, lam the
    time and half-log-SNR of each grid point, one ratio per step; `denoise(x, logsnr)` in numpy
    (default: the oracle evaluated eagerly)."""
    alpha, sigma = np.sqrt(1 / (1 + np.exp(-2 * lam))), np.sqrt(1 / (1 + np.exp(2 * lam)))

    def model(x, j):
        if denoise is not None:
            return denoise(x, 2 * lam[j])
        return np.asarray(GMM.denoise(jnp.asarray(x), jnp.asarray(2 * lam[j])), np.float64)

    def update(x, ms, ts, j, p, use_corrector):
        h = lam[j] - lam[ts[-1]]
        rks = [(lam[ts[-(i + 1)]] - lam[ts[-1]]) / h for i in range(1, p)]
        d1s = [(ms[-(i + 1)] - ms[-1]) / rk for i, rk in zip(range(1, p), rks)]
        hh = -h
        h_phi_1 = np.expm1(hh)
        h_phi_k, fact = h_phi_1 / hh - 1, 1
        b_h = hh if variant == "bh1" else np.expm1(hh)
        r_rows, b = [], []
        for i in range(1, p + 1):
            r_rows.append(np.power(np.array(rks + [1.0]), i - 1))
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        r_mat, b = np.array(r_rows), np.array(b)
        x_t_ = sigma[j] / sigma[ts[-1]] * x - alpha[j] * h_phi_1 * ms[-1]
        pred = 0.0
        if d1s:
            rhos_p = [0.5] if p == 2 else np.linalg.solve(r_mat[:-1, :-1], b[:-1])
            pred = sum(r * d for r, d in zip(rhos_p, d1s))
        x_t = x_t_ - alpha[j] * b_h * pred
        if not use_corrector:
            return x_t, None
        rhos_c = [0.5] if p == 1 else np.linalg.solve(r_mat, b)
        m_t = model(x_t, j)
        corr = sum(r * d for r, d in zip(rhos_c[:-1], d1s)) + rhos_c[-1] * (m_t - ms[-1])
        return x_t_ - alpha[j] * b_h * corr, m_t

    def dynamic_compensation(ms, ts, ratio):
        at = t[ts[-1]] * ratio + t[ts[-2]] * (1 - ratio)
        out = 0.0
        for i in range(3):
            term = ms[-(i + 1)]
            for k in range(3):
                if i != k:
                    term = term * (at - t[ts[-(k + 1)]]) / (t[ts[-(i + 1)]] - t[ts[-(k + 1)]])
            out = out + term
        return out

    steps, ratios = len(t) - 1, list(ratios)
    ms, ts = [model(x, 0)], [0]
    for init_order in range(1, order):
        assert ratios.pop(0) == 1.0  # fewer than three nodes: the authors' search keeps 1
        x, m_x = update(x, ms, ts, init_order, init_order, True)
        ms.append(m_x)
        ts.append(init_order)
    for step in range(order, steps + 1):
        ratio = ratios.pop(0)
        if ratio != 1.0:
            ms[-1] = dynamic_compensation(ms, ts, ratio)
        x, m_x = update(x, ms, ts, step, min(order, steps + 1 - step), step < steps)
        ms, ts = ms[1:] + [ms[-1]], ts[1:] + [step]
        if step < steps:
            ms[-1] = m_x
    return x


def test_update_equals_the_authors_transcription():
    """Random ratios on a uniform-t grid, in float64: the sampler equals the transcription (so
    the corrector of each step uses the raw output, the next predictor the compensated one)."""
    n = 7
    ratios = np.concatenate([[1.0, 1.0], np.random.default_rng(0).uniform(0.7, 1.3, n - 2)])
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.key(0), (16, 2), jnp.float64))
        t = np.linspace(1.0, 0.0, n + 1)
        grid = schedules.sampling_grid(SCHED, n, "uniform_t")
        got = jax.jit(  # one program (eager calls re-trace op by op)
            lambda x, grid: samplers.sample(
                GMM.denoise, x, grid, "dc_solver", finish=False, schedule=SCHED, ratios=ratios
            )
        )(jnp.asarray(x), jnp.asarray(grid))
        want = authors_sample(x, t, grid / 2, ratios)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-10)
        assert np.abs(want - authors_sample(x, t, grid / 2, np.ones(n))).max() > 1e-3


def test_all_ratios_one_is_unipc_and_nfe():
    calls = []

    def denoise(x, logsnr):
        jax.debug.callback(lambda: calls.append(1))
        return GMM.denoise(x, logsnr)

    x = jax.random.normal(jax.random.key(0), (32, 2))
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 8, "uniform_logsnr"), jnp.float32)
    base = jax.jit(
        lambda x: samplers.sample(
            GMM.denoise, x, grid, "unipc", finish=False, order=3, variant="bh1"
        )
    )(x)
    out = jax.jit(
        lambda x: samplers.sample(denoise, x, grid, "dc_solver", ratios=jnp.ones(8), finish=True)
    )(x)
    jax.effects_barrier()
    assert len(calls) == 9 == samplers.nfe("dc_solver", 8, finish=True)
    np.testing.assert_allclose(out, jax.jit(GMM.denoise)(base, grid[-1]), rtol=1e-5, atol=1e-6)
    moved = run_dc(x, grid, jnp.full(8, 0.8))
    assert float(jnp.abs(moved - base).max()) > 1e-4  # the ratios do act


def test_lagrange3_is_exact_on_quadratics():
    nodes = (jnp.float32(-1.3), jnp.float32(0.2), jnp.float32(1.1))
    q = np.poly1d([0.7, -2.0, 0.5])
    vals = tuple(jnp.asarray(q(float(n)), jnp.float32) for n in nodes)
    for at in (-2.0, 0.2, 0.5, 3.0):
        np.testing.assert_allclose(
            float(dc_solver.lagrange3(nodes, vals, jnp.float32(at))), q(at), rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
def test_fitted_ratios_reduce_error_on_held_out_points():
    """Per-step (the authors' search, the default) and joint fits on 10 points, to sigma = 0."""
    grid = jnp.asarray(schedules.sampling_grid(SCHED, 6, "uniform_t", final="zero"), jnp.float32)
    x_fit = jax.random.normal(jax.random.key(1), (10, 2))
    x_test = jax.random.normal(jax.random.key(2), (256, 2))
    x_all = jnp.concatenate([x_fit, x_test])
    ref = dc_solver.reference_states(GMM.denoise, x_test, grid, 600)[-1]
    base = jax.jit(
        lambda x: samplers.sample(GMM.denoise, x, grid, "dc_solver", ratios=jnp.ones(6))
    )(x_test)
    err_unipc = float(jnp.mean((base - ref) ** 2))
    for fit in ("per_step", "joint"):
        kw = dict(fit=fit, fit_iters=40, reference_steps=600, schedule=SCHED)
        out = jax.jit(lambda x: samplers.sample(GMM.denoise, x, grid, "dc_solver", **kw))(x_all)
        err_dc = float(jnp.mean((out[10:] - ref) ** 2))
        assert err_dc < 0.7 * err_unipc, (fit, err_dc, err_unipc)


def test_cascade_polynomial_regression_recovers_coefficients():
    rng = np.random.default_rng(0)
    coef = rng.normal(0, 0.3, (3, 3, 3))
    settings = [(g, n) for g in (1.0, 4.0, 7.5, 12.0) for n in (5, 10, 20)]
    ratios = [dc_solver.cpr_predict(coef, g, n, n) for g, n in settings]
    fitted = dc_solver.cpr_fit(settings, ratios, degree=3)
    np.testing.assert_allclose(fitted, coef, rtol=1e-6, atol=1e-8)
    # Independent evaluation of the model at an unseen setting: sum_k c_k(g, n) (i/N)^k.
    g, n = 6.0, 8
    ck = np.einsum("kab,a,b->k", coef, (g / 12) ** np.arange(3), (n / 50) ** np.arange(3))
    expect = np.polynomial.polynomial.polyval(np.arange(n) / n, ck)
    np.testing.assert_allclose(dc_solver.cpr_predict(fitted, g, n, n), expect, rtol=1e-6, atol=1e-8)
