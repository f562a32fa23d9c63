"""Exponential moving averages of the parameters, kept inside the TrainState.

- Fixed decay: `ema <- d * ema + (1 - d) * params`.
- EDM2 power-function EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
  Diffusion Models", Eq. 3 / Algorithm 2): `beta_t = (1 - 1/t)^(gamma + 1)` at update t (1-based), where
  gamma follows from the relative standard deviation sigma_rel by
  `sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3))` (their Eq. 4).
"""  # noqa: E501

import jax
import jax.numpy as jnp
import numpy as np


def std_to_gamma(sigma_rel: float) -> float:
    """Solve sigma_rel^2 (g+2)^2 (g+3) - (g+1) = 0 for the largest real root g (EDM2 Eq. 4)."""
    s2 = float(sigma_rel) ** 2
    # s2 * (g^3 + 7 g^2 + 16 g + 12) - g - 1
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    real = roots[np.abs(roots.imag) < 1e-9].real
    return float(real.max())


def gamma_to_std(gamma: float) -> float:
    g = float(gamma)
    return float(np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))))


def names(opt_cfg) -> dict:
    """EMA slots the config asks for: name -> ("fixed", decay) or ("power", gamma)."""
    slots = {}
    if opt_cfg.ema_decay > 0:
        slots["ema"] = ("fixed", float(opt_cfg.ema_decay))
    for std in opt_cfg.ema_stds:
        slots[f"ema_std{float(std):.3f}"] = ("power", std_to_gamma(std))
    return slots


def update(ema: dict, params, step, slots: dict) -> dict:
    """`step` is the number of optimizer updates already applied, so this is update t = step + 1."""
    t = jnp.asarray(step, jnp.float32) + 1.0
    out = {}
    for name, (kind, value) in slots.items():
        beta = value if kind == "fixed" else (1.0 - 1.0 / t) ** (value + 1.0)
        out[name] = jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, ema[name], params)
    return out
