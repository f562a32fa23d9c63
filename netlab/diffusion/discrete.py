"""Discrete (categorical) diffusion: D3PM forward processes, posteriors and losses, and the
continuous-time masked-diffusion loss.

D3PM (Austin et al. 2021): a token x in {0..K-1} is corrupted by a Markov chain with row-stochastic
matrices, rows = from-state, `q(x_t | x_{t-1}) = Cat(x_{t-1} Q_t)` (eq. 1) and, in closed form,
`q(x_t | x_0) = Cat(x_0 Qbar_t)` with `Qbar_t = Q_1 ... Q_t` (eq. 2). Every process here has the
form

    Q_t = (1 - beta_t) I + beta_t 1 m^T,    Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 m^T,

with `alpha_bar_t = prod_s (1 - beta_s)` (the product closes because m^T 1 = 1), and differs only in
the limit distribution m:

- uniform (D3PM App. A): m = 1/K;
- absorbing / masked (D3PM App. A): m = e_mask, the extra token K (K real tokens + mask);
- marginal-preserving (DiGress, Vignac et al. 2023): m = the data marginal of the types, so
  `m^T Qbar_t = m^T` for every t (if x_0 ~ m then x_t ~ m).

Posterior (eq. 3): `q(x_{t-1} | x_t, x_0) ∝ (x_t Q_t^T) ⊙ (x_0 Qbar_{t-1})`. The x0-parameterised
reverse model comes in two forms, chosen by `form`:

- "d3pm" (eq. 4, and the authors' code): `p(x_{t-1}|x_t) ∝ sum_x0 q(x_{t-1}, x_t | x0) p(x0|x_t)`
  = the posterior formula with the predicted probabilities in place of the one-hot x_0;
- "marginal" (DiGress's sampler): `sum_x0 q(x_{t-1} | x_t, x0) p(x0|x_t)`, each posterior normalised
  before mixing. With the exact `q(x0|x_t)` this is the exact reverse `q(x_{t-1}|x_t)` for every
  process; the "d3pm" form is exact only when `q(x_t|x0)` does not depend on x0 (absorbing, x_t
  masked). The two agree on one-hot predictions.

Losses: D3PM's hybrid `L_vb + lambda CE(x0)` (`vb_term` is one term of L_vb for a drawn t: the
decoder NLL at t = 1, else the KL to the posterior) and the continuous-time masked-diffusion ELBO
(Shi et al. 2024; Sahoo et al. 2024, MDLM): for a keep-probability alpha(t),

    L = E_t [ -alpha'(t) / (1 - alpha(t)) * sum_{i: x_t^i = mask} -log p(x0^i | x_t) ],

the t -> continuous limit of the absorbing process's L_vb (with alpha_bar_t = 1 - t/T the discrete
L_vb is exactly the right-endpoint Riemann sum of this integral; tests/diffusion/test_discrete.py).
`masked_loss` takes logits over the K real tokens only (the SUBS parameterisation: the mask
has probability zero and unmasked positions are copied, so they cost nothing).

Time convention: discrete t in {0..T} indexes `alpha_bar[t]` (alpha_bar[0] = 1, data); in the
continuous masked loss t in [0, 1] and alpha(0) = 1. Deliberate difference from the D3PM code: its
x_0 is the first noisy state; here x_0 is the data, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from netlab.registry import check_choice, check_range

FORMS = ("marginal", "d3pm")


def cosine_alpha_bar(T: int, s: float = 0.008, max_beta: float = 0.999):
    """(T+1,) alpha_bar from the squared-cosine curve (Nichol & Dhariwal 2021, as DiGress):
    beta_t = min(1 - f(t)/f(t-1), max_beta), f(t) = cos((t/T + s)/(1 + s) pi/2)^2, alpha_bar the
    running product of 1 - beta (so the clipped schedule is still exactly a product)."""
    check_range("T", T, 1, integer=True)
    t = np.arange(T + 1) / T
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    beta = np.minimum(1 - f[1:] / f[:-1], max_beta)
    return np.concatenate([np.ones(1), np.cumprod(1 - beta)])


def linear_alpha_bar(T: int):
    """(T+1,) alpha_bar_t = 1 - t/T: D3PM's absorbing schedule beta_t = 1/(T - t + 1), every token
    absorbed by t = T."""
    check_range("T", T, 1, integer=True)
    return 1.0 - np.arange(T + 1) / T


@dataclasses.dataclass(frozen=True)
class CategoricalProcess:
    """`Q_t = (1 - beta_t) I + beta_t 1 m^T` on K states; `m` (K,), `alpha_bar` (T+1,)."""

    m: jax.Array
    alpha_bar: jax.Array
    mask_id: int | None = None  # the absorbing state, if any

    @property
    def num_states(self) -> int:
        return self.m.shape[-1]

    @property
    def T(self) -> int:
        return self.alpha_bar.shape[0] - 1

    def beta(self, t):
        """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, t >= 1."""
        return 1.0 - self.alpha_bar[t] / self.alpha_bar[t - 1]

    def q_matrix(self, t):
        """One-step Q_t (K, K), rows = from-state."""
        b = self.beta(t)
        return (1 - b) * jnp.eye(self.num_states) + b * self.m[None, :]

    def qbar_matrix(self, t):
        """Cumulative Qbar_t = Q_1 ... Q_t in closed form (K, K)."""
        a = self.alpha_bar[t]
        return a * jnp.eye(self.num_states) + (1 - a) * self.m[None, :]

    def marginal(self, x0_probs, t):
        """x_0 Qbar_t for rows of probabilities (..., K): the law of x_t given x_0."""
        a = jnp.expand_dims(self.alpha_bar[t], -1)
        return a * x0_probs + (1 - a) * x0_probs.sum(-1, keepdims=True) * self.m

    def step_likelihood(self, x_t, t):
        """x_t Q_t^T (..., K): entry j is q(x_t | x_{t-1} = j), for integer states x_t."""
        b = jnp.expand_dims(self.beta(t), -1)
        onehot = jax.nn.one_hot(x_t, self.num_states, dtype=self.m.dtype)
        return (1 - b) * onehot + b * self.m[x_t][..., None]

    def sample(self, key, x0, t):
        """x_t ~ q(x_t | x_0) for integer x0 (...,) and t (broadcast against x0)."""
        probs = self.marginal(jax.nn.one_hot(x0, self.num_states, dtype=self.m.dtype), t)
        return jax.random.categorical(key, safe_log(probs))

    def prior(self, shape, key):
        """x_T ~ m (the stationary law the chain is built to reach)."""
        return jax.random.categorical(
            key, safe_log(jnp.broadcast_to(self.m, (*shape, self.num_states)))
        )


def _process(m, alpha_bar, mask_id=None) -> CategoricalProcess:
    """Built on the host in float64 (no device op to compile), stored at jax's default float."""
    return CategoricalProcess(jnp.asarray(m), jnp.asarray(alpha_bar), mask_id)


def uniform(K: int, alpha_bar) -> CategoricalProcess:
    """alpha_bar: (T+1,) e.g. `cosine_alpha_bar(T)`."""
    check_range("num_states", K, 2, integer=True)
    return _process(np.full(K, 1.0 / K), alpha_bar)


def absorbing(K: int, alpha_bar) -> CategoricalProcess:
    """K real tokens plus the mask token K (K + 1 states)."""
    check_range("num_tokens", K, 1, integer=True)
    return _process(np.eye(K + 1)[K], alpha_bar, K)


def marginal_preserving(m, alpha_bar) -> CategoricalProcess:
    """DiGress's transitions towards the data marginal m (normalised here)."""
    m = np.asarray(m, np.float64)
    return _process(m / m.sum(), alpha_bar)


def safe_log(p):
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def _normalise(p):
    return p / jnp.maximum(p.sum(-1, keepdims=True), jnp.finfo(p.dtype).tiny)


def posterior(proc: CategoricalProcess, x_t, x0_probs, t):
    """Eq. 3: q(x_{t-1} | x_t, x_0) ∝ (x_t Q_t^T) ⊙ (x_0 Qbar_{t-1}), (..., K). With probabilities
    in place of a one-hot x_0 this is D3PM's eq. 4 reverse model."""
    return _normalise(proc.step_likelihood(x_t, t) * proc.marginal(x0_probs, t - 1))


def p_prev(proc: CategoricalProcess, x_t, x0_probs, t, form: str = "marginal"):
    """p_theta(x_{t-1} | x_t) from predicted p(x0 | x_t) (..., K); `form` as in the module doc."""
    check_choice("form", form, FORMS)
    if form == "d3pm":
        return posterior(proc, x_t, x0_probs, t)
    lik = proc.step_likelihood(x_t, t)[..., None, :]  # (..., 1, K_prev)
    joint = lik * proc.qbar_matrix(t - 1)  # (..., K_x0, K_prev): q(x_t | x_prev) q(x_prev | x0)
    per_x0 = joint / jnp.maximum(joint.sum(-1, keepdims=True), jnp.finfo(joint.dtype).tiny)
    return _normalise(jnp.einsum("...j,...jk->...k", x0_probs, per_x0))


def kl(q, p):
    """KL(q || p) over the last axis, with 0 log 0 = 0."""
    return jnp.sum(jnp.where(q > 0, q * (safe_log(q) - safe_log(p)), 0.0), -1)


def vb_term(proc: CategoricalProcess, x0, x_t, t, x0_probs, form: str = "marginal"):
    """One L_vb term for integer x0, x_t (...,) at step t >= 1: the decoder NLL -log p(x0 | x_1) at
    t = 1, else KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)). In nats, per position."""
    K = proc.num_states
    model = p_prev(proc, x_t, x0_probs, t, form)
    true = posterior(proc, x_t, jax.nn.one_hot(x0, K, dtype=model.dtype), t)
    nll = -jnp.take_along_axis(safe_log(model), x0[..., None], -1)[..., 0]
    return jnp.where(t == 1, nll, kl(true, model))


def prior_kl(proc: CategoricalProcess, x0):
    """KL(q(x_T | x0) || m), the L_T term (zero for a process that reaches m exactly)."""
    qT = proc.marginal(jax.nn.one_hot(x0, proc.num_states, dtype=proc.m.dtype), proc.T)
    return kl(qT, jnp.broadcast_to(proc.m, qT.shape))


def hybrid_loss(proc, x0, x_t, t, logits, lam: float = 0.01, form: str = "marginal"):
    """D3PM's hybrid loss: L_vb term + lam * CE(x0, p(x0 | x_t)), per position (logits over K)."""
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), x0[..., None], -1)[..., 0]
    return vb_term(proc, x0, x_t, t, jax.nn.softmax(logits), form) + lam * ce


# Continuous-time masked diffusion: keep-probability alpha(t), alpha(0) = 1, alpha(1) ~ 0.


def linear_alpha(t):
    """alpha(t) = 1 - t, alpha' = -1 (weight 1/t: MDLM's log-linear schedule with eps = 0)."""
    return 1.0 - t, -jnp.ones_like(t)


def cosine_alpha(t):
    """alpha(t) = cos(pi t / 2)."""
    return jnp.cos(math.pi / 2 * t), -math.pi / 2 * jnp.sin(math.pi / 2 * t)


MASK_SCHEDULES = {"linear": linear_alpha, "cosine": cosine_alpha}


def mask_tokens(key, x0, alpha, mask_id: int):
    """Each token of x0 (..., L) is replaced by mask_id with probability 1 - alpha (..., 1)."""
    keep = jax.random.uniform(key, x0.shape) < alpha
    return jnp.where(keep, x0, mask_id)


def masked_loss(x0, x_t, logits, alpha, dalpha, mask_id: int):
    """Masked-diffusion ELBO integrand per sequence (...,): -alpha'/(1 - alpha) times the summed
    CE on the masked positions; logits (..., L, K) over the real tokens; alpha, dalpha (...,)."""
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), x0[..., None], -1)[..., 0]
    ce = jnp.sum(jnp.where(x_t == mask_id, -logp, 0.0), -1)
    return -dalpha / (1.0 - alpha) * ce
