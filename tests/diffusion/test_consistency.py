"""Consistency distillation from the exact Gaussian oracle. For x0 ~ N(mu, s^2) (per dimension)
the PF-ODE is linear, so the exact consistency map f*(x, sigma) = mu + (x - mu) sqrt((s^2 + eps^2)
/ (s^2 + sigma^2)) is affine, and so is the distillation target of every grid pair: a per-grid-
point affine network F(c_in x) = w c_in x + b then reaches the CD loss's minimum exactly, solved
point by point from the boundary up by least squares (what CD's EMA-target fixed point is)."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import consistency
from netlab.diffusion.oracle import GaussianMixture, gaussian_ode_solution

EPS, SIGMA_MAX, TAU = 0.002, 80.0, 20  # TAU: index of the 2-step sampler's middle sigma


def net(params, xin, c_noise):
    """The tiny model: one affine map per grid point, looked up by the noise input ln(sigma)/4."""
    w, b, c_noise_grid = params
    xp = np if isinstance(xin, np.ndarray) else jnp
    i = xp.argmin(xp.abs(c_noise_grid - c_noise))
    return w[i] * xin + b[i]


def test_boundary_condition_is_exact():
    f = consistency.consistency_fn(lambda p, x, c: np.sin(3 * x) + p + c, 0.5, EPS)
    x = np.linspace(-3.0, 3.0, 7, dtype=np.float32)
    np.testing.assert_array_equal(f(1.0, x, np.float32(EPS)), x)  # numpy: host-side, no compile


def test_distilled_from_the_oracle_beats_ddim_at_one_and_two_steps():
    mu, s = np.array([0.6, -0.4]), np.array([0.5, 1.2])
    gm = GaussianMixture(mu[None], s[None], np.ones(1))
    sig = consistency.karras_sigmas(40, EPS, SIGMA_MAX)  # N = 40 (the paper's ImageNet-64 grid)
    f = consistency.consistency_fn(net, 0.5, EPS)
    rng = np.random.default_rng(0)
    x0 = mu + s * rng.standard_normal((len(sig) - 1, 64, 2))
    z = rng.standard_normal(x0.shape)
    sig_next, sig_cur = sig[1:, None, None], sig[:-1, None, None]
    with jax.enable_x64(True):
        step = jax.vmap(consistency.teacher_step, (None, 0, 0, 0))
        x_next = x0 + sig_next * z
        x_hat = np.asarray(jax.jit(step, static_argnums=0)(gm.denoise, x_next, sig_next, sig_cur))
        c_noise = 0.25 * np.log(sig)
        ws, bs = np.zeros((len(sig), 2)), np.zeros((len(sig), 2))  # row 0 (eps): f = x anyway
        for n in range(len(sig) - 1):
            target = np.asarray(f((ws, bs, c_noise), x_hat[n], sig[n]))
            c_skip, c_out, c_in, _ = consistency.scalings(sig[n + 1], 0.5, EPS)
            for d in range(2):  # target - c_skip x = (c_out c_in w) x + c_out b
                design = np.stack([x_next[n, :, d], np.ones(64)], 1)
                coef = np.linalg.lstsq(design, target[:, d] - c_skip * x_next[n, :, d])[0]
                ws[n + 1, d], bs[n + 1, d] = coef[0] / (c_out * c_in), coef[1] / c_out
        params = (ws, bs, c_noise)
        zs = rng.standard_normal((4096, 2))

        def ddim(x, s_from, s_to):  # DDIM (eta = 0) in VE coordinates: x0_hat + (s'/s) eps_hat
            logsnr = -2 * jnp.log(s_from)
            d = gm.denoise(x * jnp.sqrt(jax.nn.sigmoid(logsnr)), logsnr)
            return d + (s_to / s_from) * (x - d)

        @jax.jit
        def run(params, x0, z, zs):  # all the jax work in one compile
            k = 9  # the fitted model zeroes the CD loss (d = squared L2, target = same params)
            cd = consistency.distillation_loss(
                f, params, params, gm.denoise, x0, z, *sig[k + 1 : k - 1 : -1]
            )
            one = consistency.sample(f, params, zs, sig[-1:])
            two = consistency.sample(f, params, zs, [sig[-1], sig[TAU]])
            x_T = SIGMA_MAX * zs
            return (
                cd,
                one,
                two,
                ddim(x_T, SIGMA_MAX, EPS),
                ddim(ddim(x_T, SIGMA_MAX, sig[TAU]), sig[TAU], EPS),
            )

        cd, one, two, ddim1, ddim2 = map(np.asarray, run(params, x0[9], z[9], zs))
    assert cd.max() < 1e-18
    # exact ODE endpoint at eps (the oracle's closed form, VP coordinates)
    x_T = SIGMA_MAX * zs
    l_max, l_min = -2 * np.log(SIGMA_MAX), -2 * np.log(EPS)
    a_max, a_min = (np.sqrt(1 / (1 + np.exp(-lv))) for lv in (l_max, l_min))
    exact = gaussian_ode_solution(a_max * x_T, l_max, l_min, mu, s) / a_min
    err_cm1, err_ddim1 = np.abs(one - exact).mean(), np.abs(ddim1 - exact).mean()
    print(f"1 NFE mean |x - exact ODE endpoint|: CD {err_cm1:.3g}, DDIM {err_ddim1:.3g}")
    assert err_cm1 < 0.1 * err_ddim1, (err_cm1, err_ddim1)
    # two steps: CD's sample is stochastic, so compare laws: the output's std against the
    # endpoint's sqrt(s^2 + eps^2) (sampling error ~1/sqrt(2 n) = 1.1%); DDIM's is deterministic,
    # A x_T + B, with std |A| std(x_T) exactly
    err_cm2 = np.abs(two.std(0) / np.sqrt(s**2 + EPS**2) - 1).max()
    err_ddim2 = np.abs(ddim2.std(0) / exact.std(0) - 1).max()
    print(f"2 NFE max relative std error: CD {err_cm2:.3g}, DDIM {err_ddim2:.3g}")
    assert err_cm2 < 0.1 * err_ddim2, (err_cm2, err_ddim2)
