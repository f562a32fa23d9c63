"""Auxiliary router losses and routing metrics, all float32 and all over the GLOBAL batch.

Under `jax.jit` with sharded inputs these functions see the whole logical array, so their means are
global means (XLA inserts the small all-reduce). Inside `jax.shard_map` each device holds a shard:
pass `axis_name` (a mesh axis name or a tuple of them: every axis the tokens are split over) and the
counts and sums are `psum`-ed before dividing, so the value equals the one on the whole batch —
not one shard's local value.
"""

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _sum(x, axis_name):
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def expert_counts(index, num_experts: int, axis_name=None):
    """(E,) number of token->expert assignments (before capacity) over the global batch."""
    counts = jnp.sum(jax.nn.one_hot(index, num_experts, dtype=F32), axis=tuple(range(index.ndim)))
    return _sum(counts, axis_name)


def switch_load_balance(probs, index, axis_name=None):
    """Switch load-balancing loss normalised so that perfect balance gives exactly 1.

    Fedus et al. 2021 (Switch Transformer), eq. 4-6: L = E · Σ_e f_e · P̄_e with P̄_e the mean router
    probability of expert e and f_e the fraction of assignments that go to e. For top-k the
    assignments are counted over all k choices and f is divided by k (Σ_e f_e = 1), so the value
    is 1 at perfect balance for every k (MaxText's k-scaled variant gives k). Global, as GRIN/Qwen
    compute it: counts and probability sums are reduced over the whole batch.

    probs: (..., E) float32; index: (..., k) int.
    """
    num_experts = probs.shape[-1]
    k = index.shape[-1]
    tokens = _sum(jnp.asarray(probs[..., 0].size, F32), axis_name)
    f = expert_counts(index, num_experts, axis_name) / (tokens * k)
    p_mean = _sum(jnp.sum(probs.astype(F32).reshape(-1, num_experts), 0), axis_name) / tokens
    return num_experts * jnp.sum(f * p_mean)


def dit_moe_balance(probs, index, axis_name=None):
    """DiT-MoE's expert-level balance loss (Fei et al. 2024, "Scaling Diffusion Transformers to 16
    Billion Parameters", §3.2): Σ_e P̄_e · (E · ce_e) with ce_e the share of the T·k assignments
    routed to e. It is the k-normalised Switch loss; the paper weights it by α = 0.01."""
    return switch_load_balance(probs, index, axis_name)


def router_z_loss(logits, axis_name=None):
    """Router z-loss, ST-MoE (Zoph et al. 2022, eq. 5): mean over tokens of (logsumexp_e z)^2."""
    lse = jax.scipy.special.logsumexp(logits.astype(F32), axis=-1)
    n = _sum(jnp.asarray(lse.size, F32), axis_name)
    return _sum(jnp.sum(jnp.square(lse)), axis_name) / n


def _cv_squared(x):
    mean = jnp.mean(x)
    return jnp.var(x) / (jnp.square(mean) + 1e-10)


def importance_loss(probs, axis_name=None):
    """V-MoE importance loss (Riquelme et al. 2021, eq. A.1-A.2; Shazeer et al. 2017 eq. 6):
    CV² of imp_e = Σ_tokens p_e over the global batch."""
    imp = _sum(jnp.sum(probs.astype(F32).reshape(-1, probs.shape[-1]), 0), axis_name)
    return _cv_squared(imp)


def load_loss(logits, noise, k: int, noise_std: float, axis_name=None):
    """V-MoE load loss (Riquelme et al. 2021, eq. A.3-A.6): with noisy logits z̃ = z + ε,
    ε ~ N(0, σ²), τ = k-th largest z̃, P(token uses e) = 1 - Φ((τ - z_e)/σ); loss = CV²(Σ_t P).
    `noise` is the ε that was added (same shape as logits)."""
    logits = logits.astype(F32)
    noisy = logits + noise
    tau = jnp.sort(noisy, axis=-1)[..., -k][..., None]
    p = 1.0 - jax.scipy.stats.norm.cdf((tau - logits) / noise_std)
    load = _sum(jnp.sum(p.reshape(-1, p.shape[-1]), 0), axis_name)
    return _cv_squared(load)


def dropped_fraction(dispatch, k: int, axis_name=None):
    """Fraction of the token->expert assignments that found no slot (token choice), over the global
    batch; dispatch (G, S, E, C)."""
    placed = _sum(jnp.sum(dispatch.astype(F32)), axis_name)
    wanted = _sum(jnp.asarray(dispatch.shape[0] * dispatch.shape[1] * k, F32), axis_name)
    return 1.0 - placed / wanted


def unrouted_fraction(dispatch, axis_name=None):
    """Fraction of tokens that reach no expert at all (expert choice can skip tokens)."""
    reached = (jnp.sum(dispatch.astype(F32), axis=(-2, -1)) > 0).astype(F32)
    return 1.0 - _sum(jnp.sum(reached), axis_name) / _sum(jnp.asarray(reached.size, F32), axis_name)
