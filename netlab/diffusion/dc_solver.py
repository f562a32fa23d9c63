"""DC-Solver: UniPC with dynamic compensation (Zhao et al. 2024, "DC-Solver: Improving
Predictor-Corrector Diffusion Sampler via Dynamic Compensation", arXiv 2409.03755, Sec. 3.2-3.3).

In UniPC the model output m_{i+1} is evaluated at the *predicted* point x^P but then used by the
corrector and the next predictor as if it belonged to the corrected point. DC-Solver replaces it by
the Lagrange interpolant of the last three outputs at a shifted time: with nodes (lambda_{i-1},
lambda_i, lambda_{i+1}), m* = sum_j m_j prod_{k != j} (lambda* - lambda_k)/(lambda_j - lambda_k) at
lambda* = rho_i lambda_{i+1} + (1 - rho_i) lambda_i (the paper interpolates in its timestep
variable; here the grid variable is lambda = logsnr/2). rho = 1 is the identity, so all ratios 1
give UniPC-bh2 exactly; as in the paper the first two steps always use rho = 1.

- `dc_unipc`: the sampler; `ratios` (one per grid interval) is a traced array, so new ratios do
  not recompile.
- `fit_ratios`: the ratios fitted on ~10 starting points against a many-step reference solution of
  the same starting points (the paper fits step by step against the reference trajectory with
  AdamW; here all ratios are fitted jointly on the final-state error with Adam).
- Cascade polynomial regression (Sec. 3.3): rho(i) = sum_k c_k(g, n) (i/N)^k with every c_k a
  quadratic polynomial in (g/12) whose coefficients are quadratic in (n/50), g the guidance scale
  and n the NFE: 9 numbers per k. `cpr_fit` solves for them by least squares from ratios fitted at
  a few (g, n) settings; `cpr_predict` returns ratios for an unseen setting.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax


def _alpha_sigma(logsnr):
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def lagrange3(nodes, values, at):
    """Quadratic Lagrange interpolant through (nodes[j], values[j]), j = 0..2, evaluated at `at`."""
    out = 0.0
    for j in range(3):
        w = 1.0
        for k in range(3):
            if k != j:
                w = w * (at - nodes[k]) / (nodes[j] - nodes[k])
        out = out + w * values[j]
    return out


def dc_unipc(denoise, x, grid, ratios):
    """UniPC-bh2 (order-2 UniP + UniC) with dynamic compensation; `denoise(x, logsnr) -> x0_hat`."""
    lam = 0.5 * grid
    ratios = jnp.asarray(ratios, jnp.float32)
    m0 = denoise(x, grid[0])

    def predictor(x, m0, m_prev, lam_prev, l_t, l_s, i):
        a_s, s_s = _alpha_sigma(l_s)
        _, s_t = _alpha_sigma(l_t)
        hh = -(0.5 * l_s - 0.5 * l_t)
        b_h = jnp.expm1(hh)
        x_tilde = (s_s / s_t) * x - a_s * b_h * m0
        r1 = jnp.where(i > 0, (lam_prev - 0.5 * l_t) / -hh, 1.0)
        d1 = (m_prev - m0) / r1
        return x_tilde - jnp.where(i > 0, 1.0, 0.0) * a_s * b_h * 0.5 * d1, x_tilde, a_s, b_h, hh, r1, d1

    def step(carry, inputs):
        x, m0, m_prev, lam_prev, i = carry
        l_t, l_s, rho = inputs
        x_p, x_tilde, a_s, b_h, hh, r1, d1 = predictor(x, m0, m_prev, lam_prev, l_t, l_s, i)
        m_s = denoise(x_p, l_s)
        lam_t, lam_s = 0.5 * l_t, 0.5 * l_s
        rho = jnp.where(i > 1, rho, 1.0)                            # first two steps: rho = 1
        safe_prev = jnp.where(i > 0, lam_prev, lam_t - 1.0)         # any distinct node when unused
        m_s = lagrange3((safe_prev, lam_t, lam_s), (m_prev, m0, m_s), rho * lam_s + (1.0 - rho) * lam_t)
        d_new = m_s - m0
        g1 = jnp.expm1(hh) / hh - 1.0
        g2 = g1 / hh - 0.5
        b1, b2 = g1 / b_h, 2.0 * g2 / b_h
        det = jnp.where(i > 0, 1.0 - r1, 1.0)
        corr2 = (b1 - b2) / det * d1 + (b2 - r1 * b1) / det * d_new
        x_c = x_tilde - a_s * b_h * jnp.where(i > 0, corr2, 0.5 * d_new)
        return (x_c, m_s, m0, lam_t, i + 1), None

    n = grid.shape[0] - 1
    carry = (x, m0, jnp.zeros_like(x), lam[0], 0)
    carry, _ = jax.lax.scan(step, carry, (grid[:-2], grid[1:-1], ratios[:n - 1]))
    x, m0, m_prev, lam_prev, _ = carry
    x_last, *_ = predictor(x, m0, m_prev, lam_prev, grid[-2], grid[-1], jnp.asarray(n - 1))
    return x_last


def fit_ratios(denoise, x_T, grid, reference, iters=100, lr=0.02):
    """Ratios minimising ||dc_unipc(x_T) - reference||^2 over a handful of starting points x_T."""
    grid = jnp.asarray(grid, jnp.float32)

    def loss(r):
        return jnp.mean((dc_unipc(denoise, x_T, grid, r) - reference) ** 2)

    opt = optax.adam(lr)

    @jax.jit
    def update(r, o):
        val, g = jax.value_and_grad(loss)(r)
        u, o = opt.update(g, o)
        return optax.apply_updates(r, u), o, val

    r = jnp.ones((grid.shape[0] - 1,), jnp.float32)
    o = opt.init(r)
    for _ in range(iters):
        r, o, _ = update(r, o)
    return r


def _cpr_features(guidance, nfe, num_steps, degree):
    """Design row per step i: (i/N)^k (g/12)^a (n/50)^b for k < degree, a, b <= 2."""
    i = np.arange(num_steps, dtype=np.float64) / num_steps
    g, n = guidance / 12.0, nfe / 50.0
    cols = [i ** k * g ** a * n ** b for k in range(degree) for a in range(3) for b in range(3)]
    return np.stack(cols, axis=1)


def cpr_fit(settings, ratios, degree=3):
    """settings: [(guidance, nfe)], ratios: matching 1-D arrays -> coefficients (degree, 3, 3)."""
    rows = [_cpr_features(g, n, len(r), degree) for (g, n), r in zip(settings, ratios)]
    a, b = np.concatenate(rows), np.concatenate([np.asarray(r, np.float64) for r in ratios])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return coef.reshape(degree, 3, 3)


def cpr_predict(coef, guidance, nfe, num_steps):
    """Ratios for an unseen (guidance, NFE) setting from `cpr_fit` coefficients."""
    return _cpr_features(guidance, nfe, num_steps, coef.shape[0]) @ coef.reshape(-1)
