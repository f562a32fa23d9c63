"""Deterministic and stochastic samplers as `lax.scan` loops over a log-SNR grid.

Every sampler takes `denoise(x, logsnr) -> x0_hat` (the model in data-prediction form, guidance
already applied, see `guidance.py`), a starting point x_T ~ N(0, I) (variance-preserving
coordinates), and `grid`: a float array of log-SNR values from noise to data (built on the host in
float64 by `schedules.sampling_grid`, passed as a traced array, so a new grid or guidance scale of the
same length does not recompile). They return the sample at the grid's last point; `finish=True`
adds one last denoiser call to return x0_hat there (one more NFE).

Update rules (lambda = logsnr / 2, h = lambda_s - lambda_t, alpha/sigma from the grid):
- DDIM(eta) (Song et al. 2021, Eq. 12 and 16); eta = 1 is DDPM's ancestral sampler with the
  posterior variance beta-tilde (Ho et al. 2020, Eq. 6-7).
- EDM Heun with optional churn (Karras et al. 2022, Algorithm 2), in the VE view x/alpha.
- DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2, data prediction), order 1 on the first step.
- UniPC-bh2 (Zhao et al. 2023, Algorithms 1-2, B(h) = expm1(-h)): order-2 predictor UniP plus the
  UniC corrector, which reuses the next model evaluation and raises the order by one; no corrector
  after the last step.
"""
import functools

import jax
import jax.numpy as jnp

SAMPLERS = ("ddim", "ddpm", "heun", "dpmpp_2m", "unipc")


def _alpha_sigma(logsnr):
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def nfe(method: str, num_steps: int, finish: bool = False) -> int:
    """Denoiser evaluations a sampler spends for `num_steps` grid intervals."""
    per = {"ddim": num_steps, "ddpm": num_steps, "dpmpp_2m": num_steps, "unipc": num_steps,
           "heun": 2 * num_steps}[method]
    return per + int(finish)


def ddim(denoise, x, grid, key=None, eta=0.0):
    eta = jnp.asarray(eta, jnp.float32)
    keys = jax.random.split(key if key is not None else jax.random.key(0), grid.shape[0] - 1)

    def step(x, inputs):
        l_t, l_s, k = inputs
        a_t, s_t = _alpha_sigma(l_t)
        a_s, s_s = _alpha_sigma(l_s)
        x0 = denoise(x, l_t)
        eps = (x - a_t * x0) / s_t
        # sigma_eta^2 = eta^2 (1 - abar_s)/(1 - abar_t) (1 - abar_t/abar_s)
        var = eta ** 2 * (s_s ** 2 / s_t ** 2) * (1.0 - (a_t ** 2) / (a_s ** 2))
        var = jnp.clip(var, 0.0, s_s ** 2)
        noise = jax.random.normal(k, x.shape, x.dtype)
        return a_s * x0 + jnp.sqrt(s_s ** 2 - var) * eps + jnp.sqrt(var) * noise, None

    x, _ = jax.lax.scan(step, x, (grid[:-1], grid[1:], keys))
    return x


def ddpm(denoise, x, grid, key=None):
    return ddim(denoise, x, grid, key, eta=1.0)


def heun(denoise, x, grid, key=None, churn=0.0, s_noise=1.0, s_tmin=0.0, s_tmax=float("inf")):
    """EDM Algorithm 2 on sigma_ve = exp(-logsnr/2); churn = S_churn (0: deterministic, order 2)."""
    n = grid.shape[0] - 1
    keys = jax.random.split(key if key is not None else jax.random.key(0), n)
    sig = jnp.exp(-0.5 * grid)
    alpha0, _ = _alpha_sigma(grid[0])
    y = x / alpha0                                                   # VE coordinates

    def d_ve(y, sigma):
        logsnr = -2.0 * jnp.log(sigma)
        a, _ = _alpha_sigma(logsnr)
        return denoise(a * y, logsnr)

    def step(y, inputs):
        s_cur, s_next, k = inputs
        gamma = jnp.where((s_cur >= s_tmin) & (s_cur <= s_tmax), jnp.minimum(churn / n, jnp.sqrt(2.0) - 1), 0.0)
        s_hat = s_cur * (1 + gamma)
        y_hat = y + jnp.sqrt(jnp.maximum(s_hat ** 2 - s_cur ** 2, 0.0)) * s_noise * jax.random.normal(k, y.shape)
        d = (y_hat - d_ve(y_hat, s_hat)) / s_hat
        y_euler = y_hat + (s_next - s_hat) * d
        d2 = (y_euler - d_ve(y_euler, s_next)) / s_next
        return y_hat + (s_next - s_hat) * 0.5 * (d + d2), None

    y, _ = jax.lax.scan(step, y, (sig[:-1], sig[1:], keys))
    a_last, _ = _alpha_sigma(grid[-1])
    return a_last * y


def dpmpp_2m(denoise, x, grid, key=None):
    lam = 0.5 * grid

    def step(carry, inputs):
        x, x0_prev, i = carry
        l_t, l_s, lam_prev = inputs
        a_s, s_s = _alpha_sigma(l_s)
        _, s_t = _alpha_sigma(l_t)
        lam_t, lam_s = 0.5 * l_t, 0.5 * l_s
        h = lam_s - lam_t
        x0 = denoise(x, l_t)
        r0 = (lam_t - lam_prev) / h
        corrected = x0 + (x0 - x0_prev) / (2.0 * jnp.where(i > 0, r0, 1.0))
        d = jnp.where(i > 0, corrected, x0)
        x = (s_s / s_t) * x - a_s * jnp.expm1(-h) * d
        return (x, x0, i + 1), None

    lam_prev = jnp.concatenate([lam[:1], lam[:-2]])
    (x, _, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x), 0), (grid[:-1], grid[1:], lam_prev))
    return x


def unipc(denoise, x, grid, key=None):
    n = grid.shape[0] - 1
    lam = 0.5 * grid
    m0 = denoise(x, grid[0])

    def tilde(x, m0, l_t, l_s):
        a_s, s_s = _alpha_sigma(l_s)
        _, s_t = _alpha_sigma(l_t)
        hh = -(0.5 * l_s - 0.5 * l_t)
        return (s_s / s_t) * x - a_s * jnp.expm1(hh) * m0, a_s, hh

    def predictor(x, m0, m_prev, lam_prev, l_t, l_s, i):
        x_t, a_s, hh = tilde(x, m0, l_t, l_s)
        b_h = jnp.expm1(hh)
        h = -hh
        r1 = jnp.where(i > 0, (lam_prev - 0.5 * l_t) / h, 1.0)
        d1 = (m_prev - m0) / r1
        return x_t - jnp.where(i > 0, 1.0, 0.0) * a_s * b_h * 0.5 * d1, x_t, a_s, b_h, hh, r1, d1

    def step(carry, inputs):
        x, m0, m_prev, lam_prev, i = carry
        l_t, l_s = inputs
        x_p, x_t, a_s, b_h, hh, r1, d1 = predictor(x, m0, m_prev, lam_prev, l_t, l_s, i)
        m_s = denoise(x_p, l_s)
        d_new = m_s - m0
        # UniC weights: order 1 -> rho = 1/2; order 2 -> solve [[1, 1], [r1, 1]] rho = b.
        hphi1 = jnp.expm1(hh)
        g1 = hphi1 / hh - 1.0
        g2 = g1 / hh - 0.5
        b1, b2 = g1 / b_h, 2.0 * g2 / b_h
        det = 1.0 - r1
        rho0 = (b1 - b2) / jnp.where(i > 0, det, 1.0)
        rho1 = (b2 - r1 * b1) / jnp.where(i > 0, det, 1.0)
        corr2 = rho0 * d1 + rho1 * d_new
        corr1 = 0.5 * d_new
        x_c = x_t - a_s * b_h * jnp.where(i > 0, corr2, corr1)
        return (x_c, m_s, m0, 0.5 * l_t, i + 1), None

    carry = (x, m0, jnp.zeros_like(x), lam[0], 0)
    carry, _ = jax.lax.scan(step, carry, (grid[:-2], grid[1:-1]))
    x, m0, m_prev, lam_prev, i = carry
    x_last, *_ = predictor(x, m0, m_prev, lam_prev, grid[-2], grid[-1], jnp.asarray(n - 1))
    return x_last


def get(method: str):
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {', '.join(SAMPLERS)}")
    return {"ddim": ddim, "ddpm": ddpm, "heun": heun, "dpmpp_2m": dpmpp_2m, "unipc": unipc}[method]


def sample(denoise, x, grid, method="dpmpp_2m", key=None, finish=True, **kwargs):
    """Run `method` over `grid`; with `finish`, return denoise(x, grid[-1]) at the end."""
    if grid.shape[0] < 2:
        raise ValueError(f"a sampling grid needs at least 2 points (NFE >= 1), got {grid.shape[0]}")
    x = get(method)(denoise, x, grid, key, **kwargs)
    return denoise(x, grid[-1]) if finish else x


@functools.partial(jax.jit, static_argnames=("method", "finish", "denoise"))
def jit_sample(denoise, x, grid, method="dpmpp_2m", key=None, finish=True):
    return sample(denoise, x, grid, method, key, finish)
