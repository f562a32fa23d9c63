"""CTM: consistency trajectory models (Kim, Lai, Liao, Murata, Takida, Uesaka, He, Mitsufuji &
Ermon, ICLR 2024).

One network jumps between any two times of the probability-flow ODE (VE view x = x0 + sigma n,
times are sigmas, t >= s). With dx/du = (x - D(x, u)) / u, d(x/u)/du = -D/u^2, so the exact
flow map is x_s = (s/t) x_t + (1 - s/t) g(x_t, t, s) with g the average of D(x_u, u) over
u in [s, t] weighted by 1/u^2 (Sec. 3, Eq. 4 and Lemma 1). CTM parameterises

    G(x_t, t, s) = (s/t) x_t + (1 - s/t) g_theta(x_t, t, s),
    g_theta = c_skip(t) x_t + c_out(t) F(c_in(t) x_t, c_noise(t), c_noise(s))

with EDM's scalings at t (Karras et al. 2022, Table 1; `parameterization.edm_scalings`). Then
G(x, t, t) = x exactly, and g(x, t, s) -> D(x, t) as s -> t (x - t dx/dt = D): g_theta(x, t, t)
is a denoiser, trained with DSM alongside the jumps (Sec. 4).

Soft consistency loss (Sec. 4.1; the authors' `karras_diffusion.py`): for t > u >= s, the
student's jump t -> s and the target's jump u -> s from the teacher's ODE solution x_u (Heun
steps t -> u) are both carried on to sigma_min by the stop-gradient target network and compared:
d(G_sg(G_theta(x_t, t, s), s, sigma_min), G_sg(G_sg(x_u, u, s), s, sigma_min)), d = squared L2
here (LPIPS for images in the paper). u = t after zero teacher steps gives no signal; u at the
next grid point is consistency distillation's local target, u = s the global one.

gamma-sampling (Sec. 5, Alg. 2): x <- G(x, sigma_i, s_i) + sqrt(sigma_{i+1}^2 - s_i^2) z with
s_i = sqrt(1 - gamma^2) (sigma_{i+1} - sigma_min) + sigma_min: gamma = 0 is deterministic
anytime-to-anytime jumping along the ODE, gamma = 1 is consistency models' multistep sampler.
The adversarial term is not implemented.

Section, equation and proposition numbers above are recalled, not yet checked against the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from netlab.diffusion.consistency import teacher_step
from netlab.diffusion.parameterization import edm_scalings


def preconditioned(net, sigma_data=0.5):
    """g(params, x, t, s) = c_skip(t) x + c_out(t) net(params, c_in(t) x, c_noise(t),
    c_noise(s)), c_noise = ln(sigma) / 4."""

    def g(params, x, t, s):
        c_skip, c_out, c_in, c_noise = edm_scalings(t, sigma_data)
        return c_skip * x + c_out * net(params, c_in * x, c_noise, 0.25 * jnp.log(s))

    return g


def jump(g):
    """G(params, x, t, s) = (s/t) x + (1 - s/t) g(params, x, t, s) (Eq. 4 form)."""

    def big_g(params, x, t, s):
        r = s / t
        return r * x + (1.0 - r) * g(params, x, t, s)

    return big_g


def soft_consistency_loss(g, params, target_params, denoise, x_t, path, s, sigma_min=0.002):
    """Per-example CTM loss for a teacher `denoise(x, logsnr)` (VP convention) whose Heun steps
    follow the decreasing sigmas `path` from t = path[0] to u = path[-1]; jump target s <= u."""
    big_g = jump(g)
    t, u = path[0], path[-1]
    x_u = x_t
    for a, b in zip(path[:-1], path[1:]):
        x_u = teacher_step(denoise, x_u, a, b)
    sg = jax.lax.stop_gradient
    est = big_g(sg(target_params), big_g(params, x_t, t, s), s, sigma_min)
    target = sg(big_g(target_params, big_g(target_params, x_u, u, s), s, sigma_min))
    err = (est - target) ** 2
    return jnp.sum(err.reshape(err.shape[0], -1), axis=-1)


def dsm_loss(g, params, x0, z, sigma, sigma_data=0.5):
    """Per-example EDM-weighted denoising loss of g(x, sigma, sigma), x = x0 + sigma z
    (Sec. 4.2)."""
    w = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    err = (g(params, x0 + sigma * z, sigma, sigma) - x0) ** 2
    return w * jnp.sum(err.reshape(err.shape[0], -1), axis=-1)


def balance_weight(loss_a, loss_b, last, eps=1e-4, max_weight=1e4):
    """CTM's adaptive weight of the DSM term (Kim et al. 2024, Sec. 4.2; the authors'
    `calculate_adaptive_weight`, after VQGAN's Eq. 7): ||d loss_a / d last|| /
    (||d loss_b / d last|| + eps), clipped to [0, max_weight], without gradient. `loss_a` and
    `loss_b` are scalar functions of `last`, the network's last layer (a pytree; the norm is over
    all its leaves), so loss_a + w loss_b gives that layer gradients of equal norm from both."""
    norm = lambda tree: jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(tree)))  # noqa: E731
    ratio = norm(jax.grad(loss_a)(last)) / (norm(jax.grad(loss_b)(last)) + eps)
    return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, max_weight))


def sample(g, params, z, sigmas, gamma=0.0, key=None, sigma_min=0.002):
    """gamma-sampling (Alg. 2) from x = sigmas[0] z along the decreasing `sigmas` (the last one
    sigma_min); len(sigmas) - 1 network evaluations."""
    big_g = jump(g)
    x = sigmas[0] * z
    deterministic = isinstance(gamma, (int, float)) and gamma == 0  # no noise to draw
    keys = [None] * (len(sigmas) - 1)
    if not deterministic:
        keys = jax.random.split(key if key is not None else jax.random.key(0), len(sigmas) - 1)
    for t, nxt, k in zip(sigmas[:-1], sigmas[1:], keys):
        s = (1.0 - gamma**2) ** 0.5 * (nxt - sigma_min) + sigma_min
        x = big_g(params, x, t, s)
        if not deterministic:
            noise = jax.random.normal(k, z.shape, z.dtype)
            x = x + jnp.sqrt(jnp.maximum(nxt**2 - s**2, 0.0)) * noise
    return x
