"""The error-propagation regulariser: penalise a bootstrapped estimate of the cumulative error.

Li & van der Schaar 2024, "On Error Propagation of Diffusion Models" (ICLR). The paper separates
the modular error of one denoising step (how far the learned p(x_{t-1} | x_t) is from the true
reverse step) from the cumulative error at step t (how far the marginal of the learned chain,
run from x_T, is from the forward marginal q(x_t)), and shows that the cumulative error obeys a
propagation inequality in which each step amplifies the incoming error by a factor >= 1 and adds
its modular error (their error-propagation theorem; section and equation numbers recalled, not
checked). Training on the per-step loss alone therefore leaves the chain's compounding error
unpenalised. The cumulative error at t needs the whole chain from T; the paper instead bounds it
by a bootstrapped (TD-style) estimate: start K' <= K steps earlier from the TRUE marginal
q(x_{t+K'}) (taking the cumulative error there as the bootstrap's fixed point) and run the model's
own chain for K' steps, so the estimate is the error the model's one-step predictions accumulate
over those K' steps. The divergence between the chain's samples and q(x_t) is a kernel MMD^2, and
the regulariser is added to the usual loss.

Here, as in the authors' code (facts only): per batch one head ~ U{1..T-1} and gap ~ U{1..K},
tail = max(head - gap, 0), on T = 1000 uniform times t_i = i / T of the task's noise schedule;
half batch A is noised to x_head ~ q(. | x0_A) and taken to tail by the ancestral sampler
(`samplers.ddpm`, Ho et al. 2020) WITH gradients through every step; half batch B is noised
directly to x_tail ~ q(. | x0_B); the regulariser is the biased MMD^2 of the two sets (flattened)
with a sum of five RBF kernels exp(-d^2 / (h 2^j)), j = -2..2, h the mean pairwise squared
distance of the pooled set (no gradient). K = 5 by default. The chain is always K steps long (a
static scan): the steps past the gap repeat the tail's log-SNR, where an ancestral step is the
identity. Comparing two disjoint half batches compares marginals, not paired samples, so with the
exact denoiser the estimate is only the finite-sample MMD^2 floor (about 1 / batch).

`diffusion.error_prop_weight` (0 = off, the default: the loss is then bit for bit the plain one)
scales it; `diffusion.error_prop_gap` is K. Cost: K extra forward and backward passes of half a
batch per step (the chain is differentiated through).
"""

import jax
import jax.numpy as jnp

from netlab.diffusion import samplers, schedules

NUM_TIMESTEPS = 1000
BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)  # h * 2^j, j = -2..2


def draw_head_gap(key, max_gap: int, num_timesteps: int = NUM_TIMESTEPS):
    """(head, gap): head ~ U{1..T-1}, gap ~ U{1..K} (int32 scalars)."""
    k_head, k_gap = jax.random.split(key)
    head = jax.random.randint(k_head, (), 1, num_timesteps)
    gap = jax.random.randint(k_gap, (), 1, max_gap + 1)
    return head, gap


def chain_grid(schedule, head, gap, max_gap: int, num_timesteps: int = NUM_TIMESTEPS, dtype=None):
    """(max_gap + 1,) log-SNR grid logsnr(max(head - i, tail) / T), i = 0..K, tail = max(head -
    gap, 0): the gap's steps, then repeats of the tail (identity steps for DDPM)."""
    tail = jnp.maximum(head - gap, 0)
    idx = jnp.maximum(head - jnp.arange(max_gap + 1), tail)
    t = idx.astype(dtype or jnp.float32) / num_timesteps
    return schedule.logsnr(t)


def mmd2(x, y, bandwidths=BANDWIDTHS):
    """Biased MMD^2 of two sets (n, ...) and (m, ...) with the sum of RBF kernels exp(-d^2 / (h
    b)), b in `bandwidths`, h = mean pairwise squared distance of the pooled set (detached)."""
    z = jnp.concatenate([x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)])
    sq = jnp.sum(z * z, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    h = jax.lax.stop_gradient(jnp.mean(d2))
    k = sum(jnp.exp(-d2 / (h * b)) for b in bandwidths)
    n = x.shape[0]
    return jnp.mean(k[:n, :n]) + jnp.mean(k[n:, n:]) - 2.0 * jnp.mean(k[:n, n:])


def noised(x0, logsnr, eps):
    alpha, sigma = schedules.alpha_sigma(logsnr)
    return alpha * x0 + sigma * eps


def estimate(denoise, x0_a, x0_b, grid, key):
    """The bootstrapped cumulative-error estimate for one chain `grid` (head first, tail last):
    MMD^2(DDPM chain of `denoise` from q(x_head | x0_a), q(x_tail | x0_b)). Keys: split(key, 3)
    -> (x_head noise, chain key for `samplers.ddpm`, x_tail noise)."""
    k_a, k_chain, k_b = jax.random.split(key, 3)
    grid = grid.astype(x0_a.dtype)
    x_head = noised(x0_a, grid[0], jax.random.normal(k_a, x0_a.shape, x0_a.dtype))
    x_chain = samplers.ddpm(denoise, x_head, grid, k_chain)
    x_tail = noised(x0_b, grid[-1], jax.random.normal(k_b, x0_b.shape, x0_b.dtype))
    return mmd2(x_chain, x_tail)


def regulariser(denoise, x0, key, schedule, max_gap: int = 5, num_timesteps=NUM_TIMESTEPS):
    """-> (estimate, head, gap) for a batch x0 split in halves: A = the first n // 2 rows (the
    chain; `denoise(x, logsnr_scalar) -> x0_hat` must denoise those rows, e.g. with their
    labels) and B = the rest (the target)."""
    k_t, k_est = jax.random.split(key)
    head, gap = draw_head_gap(k_t, max_gap, num_timesteps)
    grid = chain_grid(schedule, head, gap, max_gap, num_timesteps, x0.dtype)
    half = x0.shape[0] // 2
    return estimate(denoise, x0[:half], x0[half:], grid, k_est), head, gap
