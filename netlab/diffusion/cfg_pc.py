"""Classifier-free guidance as a predictor-corrector (Bradley & Nakkiran 2024, "Classifier-Free
Guidance is a Predictor-Corrector", arXiv 2408.09000, Sec. 4, "PCG").

CFG does not sample the tilted distribution p(x|c)^gamma p(x)^(1-gamma). PCG is the sampler the
paper uses to explain what it does: at each level, a DDIM (eta = 0) predictor step to the next noise
level (with the conditional model, or CFG-DDIM with `predictor_scale` != 1), then K Langevin
corrector steps on the tilted marginal
p_t(x|c)^gamma p_t(x)^(1-gamma) of that level,
    x <- x + eps s_gamma(x) + sqrt(2 eps) z,   s_gamma = gamma s_c + (1 - gamma) s_u,
with scores from the denoisers, s(x) = (alpha x0_hat(x) - x) / sigma^2 (Tweedie), and step size
eps = delta sigma_t^2. In the SDE limit CFG-DDPM with guidance w equals PCG with one corrector step
and gamma = 2w - 1 (`gamma_for_cfg_ddpm`). The paper presents PCG as an analysis tool, not a
production sampler. gamma and delta are traced arrays (no recompiles); K is static.

As the sampler `diffusion.sampler="cfg_pc"` (`cfg_pc`), options from `diffusion.sampler_kwargs`,
the conditional and unconditional denoisers are the two halves of the task's classifier-free
guidance (`guidance.ClassifierFree`), and gamma defaults to 2w - 1 with w = `diffusion.guidance`:
the PCG that matches CFG-DDPM at that scale. At w = 1 (gamma = 1, predictor_scale = 1) the
unconditional model is not evaluated at all (`lax.cond` on traced scales), and no corrector runs
at sigma = 0 (a grid that ends there takes the DDIM step x0_hat last).
"""

import jax
import jax.numpy as jnp

from netlab.diffusion.registries import SAMPLERS
from netlab.diffusion.schedules import alpha_sigma


def gamma_for_cfg_ddpm(w):
    """Corrector exponent that matches CFG-DDPM with guidance w in the SDE limit: 2w - 1."""
    return 2.0 * w - 1.0


def unless_one(w, if_one, otherwise):
    """`if_one()` when the weight w is 1, else `otherwise()`: a Python branch for a concrete w, a
    `lax.cond` (only the taken branch runs) for a traced one."""
    try:
        one = bool(w == 1)
    except jax.errors.ConcretizationTypeError:
        return jax.lax.cond(w == 1, if_one, otherwise)
    return if_one() if one else otherwise()


def guided(denoise_cond, denoise_uncond, x, logsnr, w):
    """D_u + w (D_c - D_u) = D_c + (w - 1)(D_c - D_u); at w = 1 D_c alone (no D_u call)."""
    x0_c = denoise_cond(x, logsnr)
    return unless_one(
        w, lambda: x0_c, lambda: x0_c + (w - 1.0) * (x0_c - denoise_uncond(x, logsnr))
    )


def tilted_score(denoise_cond, denoise_uncond, x, logsnr, gamma):
    """gamma s_c + (1 - gamma) s_u = (alpha D_gamma - x) / sigma^2 with D_gamma the guided
    denoiser at weight gamma (Tweedie is linear in the denoiser)."""
    alpha, sigma = alpha_sigma(logsnr)
    return (alpha * guided(denoise_cond, denoise_uncond, x, logsnr, gamma) - x) / sigma**2


def pcg(
    denoise_cond,
    denoise_uncond,
    x,
    grid,
    key,
    gamma,
    num_corrector: int = 1,
    delta=0.1,
    predictor_scale=1.0,
):
    """Predictor (DDIM, conditional at predictor_scale 1) + `num_corrector` Langevin steps per
    interval (none into sigma = 0)."""
    gamma, delta = jnp.asarray(gamma, x.dtype), jnp.asarray(delta, x.dtype)
    w = jnp.asarray(predictor_scale, x.dtype)
    keys = jax.random.split(key, grid.shape[0] - 1)

    def step(x, inputs):
        l_t, l_s, k = inputs
        a_t, s_t = alpha_sigma(l_t)
        a_s, s_s = alpha_sigma(l_s)
        x0 = guided(denoise_cond, denoise_uncond, x, l_t, w)
        x = a_s * x0 + s_s * (x - a_t * x0) / s_t
        eps = delta * s_s**2

        def langevin(j, x):
            z = jax.random.normal(jax.random.fold_in(k, j), x.shape, x.dtype)
            return (
                x
                + eps * tilted_score(denoise_cond, denoise_uncond, x, l_s, gamma)
                + jnp.sqrt(2.0 * eps) * z
            )

        def correct(x):
            return jax.lax.fori_loop(0, num_corrector, langevin, x)

        return jax.lax.cond(s_s > 0, correct, lambda x: x, x), None

    x, _ = jax.lax.scan(step, x, (grid[:-1], grid[1:], keys))
    return x


@SAMPLERS.register("cfg_pc")
def cfg_pc(
    denoise, x, grid, key=None, *, gamma=None, num_corrector=1, delta=0.1, predictor_scale=1.0
):
    """`pcg` on the task's guided denoiser: its `cond` / `uncond` halves (both `denoise` itself
    for an unconditional model) and gamma = 2w - 1 (w = its guidance scale) unless given."""
    cond, uncond = getattr(denoise, "cond", denoise), getattr(denoise, "uncond", denoise)
    if gamma is None:
        gamma = gamma_for_cfg_ddpm(getattr(denoise, "scale", 1.0))
    key = jax.random.key(0) if key is None else key
    return pcg(cond, uncond, x, grid, key, gamma, int(num_corrector), delta, predictor_scale)
