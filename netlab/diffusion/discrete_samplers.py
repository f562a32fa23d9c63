"""Samplers for discrete diffusion: D3PM ancestral sampling and tau-leaping for masked diffusion.

- `ancestral` (Austin et al. 2021): x_T ~ m, then x_{t-1} ~ p_theta(x_{t-1} | x_t) for
  t = T..1, with p_theta built from the network's p(x0 | x_t) by `discrete.p_prev` (the last
  step, t = 1, draws x_0 itself since Qbar_0 = I). One categorical draw per position and step
  (Gumbel-max through `jax.random.categorical`).
- `tau_leaping` for the absorbing process in continuous time (Campbell et al. 2022; the masked
  form used by MDLM and RADD): from t to s < t every masked token is revealed independently with
  probability (alpha(s) - alpha(t)) / (1 - alpha(t)), its value drawn from p(x0^i | x_t);
  revealed tokens never change. The grid ends at alpha = 1, so the last step reveals every token.
  `tau_step` is one such step given the network's probabilities, so that a caching sampler
  (`netlab.diffusion.radd`) draws exactly the same numbers.

Predictors: `ancestral` takes `predict(x_t, t) -> p(x0 | x_t)` (..., K) over the process's states;
`tau_leaping` takes `predict(x_t, t) -> p(x0 | x_t)` (..., L, K) over the K real tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from netlab.diffusion import discrete


def ancestral(proc: discrete.CategoricalProcess, predict, key, shape, form: str = "marginal"):
    """x_0 of the reverse chain started at x_T ~ m, integer array of `shape`."""
    k0, key = jax.random.split(key)
    x = proc.prior(shape, k0)

    def step(i, x):
        t = proc.T - i
        probs = discrete.p_prev(proc, x, predict(x, t), t, form)
        draw = jax.random.categorical(jax.random.fold_in(key, t), discrete.safe_log(probs))
        return draw.astype(x.dtype)

    return jax.lax.fori_loop(0, proc.T, step, x)


def time_grid(steps: int, dtype=jnp.float32):
    """steps + 1 times from 1 down to 0."""
    return jnp.linspace(1.0, 0.0, steps + 1, dtype=dtype)


def tau_step(key, x, probs, alpha_t, alpha_s, mask_id: int):
    """One reveal step t -> s for tokens x (..., L) given p(x0 | x_t) (..., L, K)."""
    k_reveal, k_value = jax.random.split(key)
    p_reveal = (alpha_s - alpha_t) / jnp.maximum(1.0 - alpha_t, jnp.finfo(probs.dtype).tiny)
    reveal = (x == mask_id) & (jax.random.uniform(k_reveal, x.shape) < p_reveal)
    value = jax.random.categorical(k_value, discrete.safe_log(probs))
    return jnp.where(reveal, value.astype(x.dtype), x)


def tau_leaping(predict, key, batch: int, length: int, steps: int, mask_id: int, alpha_fn=None):
    """Samples (batch, length) of the absorbing process from all-masked, `steps` reveal steps on
    a uniform time grid; alpha_fn(t) -> (alpha, alpha') defaults to the linear schedule."""
    alpha_fn = alpha_fn or discrete.linear_alpha
    grid = time_grid(steps)
    alphas = alpha_fn(grid)[0].at[-1].set(1.0)
    x = jnp.full((batch, length), mask_id, jnp.int32)

    def step(x, i):
        probs = predict(x, grid[i])
        x = tau_step(jax.random.fold_in(key, i), x, probs, alphas[i], alphas[i + 1], mask_id)
        return x, None

    return jax.lax.scan(step, x, jnp.arange(steps))[0]
