"""Noise schedules on one log-SNR core.

Forward process (variance preserving): x_t = alpha_t x0 + sigma_t eps with alpha^2 + sigma^2 = 1,
so everything follows from logsnr(t) = log(alpha^2 / sigma^2): alpha^2 = sigmoid(logsnr),
sigma^2 = sigmoid(-logsnr). EDM's sigma is the VE view of the same process: sigma_edm =
sigma/alpha = exp(-logsnr/2). t runs from 0 (data) to 1 (noise).

Each schedule is a function t -> logsnr, registered in `registries.SCHEDULES`, that works on numpy
(float64 host grids) and on jax arrays (inside jit). `shift` adds a constant to log-SNR: the
resolution shift of simple diffusion (+2 log(d_ref/d), Hoogeboom et al. 2023, Sec. 3.1) and the
input scaling b of Chen 2023 (x_t = sqrt(gamma) b x0 + ..., i.e. +2 log b) are both such shifts.
The sampling grids (`registries.GRIDS`) are built from a schedule on the host in float64; a grid
may end at sigma = 0 exactly (log-SNR +inf), which every sampler handles in closed form (x0_hat).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion.registries import GRIDS, SCHEDULES
from netlab.registry import check_choice


def _xp(t):
    return jnp if isinstance(t, jax.Array) else np


def sigmoid(x, xp=np):
    return 1.0 / (1.0 + xp.exp(-x))


def alpha_sigma(logsnr):
    xp = _xp(logsnr)
    return xp.sqrt(sigmoid(logsnr, xp)), xp.sqrt(sigmoid(-logsnr, xp))


def edm_sigma(logsnr):
    return _xp(logsnr).exp(-0.5 * logsnr)


def logsnr_from_edm_sigma(sigma):
    return -2.0 * _xp(sigma).log(sigma)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """t in [0, 1] -> log-SNR. `name` names a `SCHEDULES` entry; extra fields used by some."""

    name: str = "cosine"
    shift: float = 0.0  # constant log-SNR shift (resolution / input scaling)
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    num_train_steps: int = 1000  # linear-beta DDPM; integer timesteps of the diffusers spacings
    steps_offset: int = 0  # diffusers' `steps_offset` for the `leading` spacings (SD uses 1)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sigmoid_start: float = -3.0  # Chen 2023 sigmoid schedule
    sigmoid_end: float = 3.0
    sigmoid_tau: float = 1.0
    sigma_min: float = 0.002  # EDM
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self):
        SCHEDULES.get(self.name)  # a one-line UserError naming the choices

    def logsnr(self, t):
        xp = _xp(t)
        out = SCHEDULES.get(self.name)(self, t, xp) + self.shift
        return xp.clip(out, self.logsnr_min + self.shift, self.logsnr_max + self.shift)


@SCHEDULES.register("linear")
def linear(s: Schedule, t, xp):
    """Linear betas (Ho et al. 2020): alphabar_i = prod(1 - beta), interpolated in log-SNR."""
    betas = np.linspace(s.beta_start, s.beta_end, s.num_train_steps, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    table = np.log(abar) - np.log1p(-abar)
    pos = t * (s.num_train_steps - 1)
    table = np.asarray(table) if xp is np else jnp.asarray(table, jnp.result_type(t))
    return xp.interp(pos, xp.arange(s.num_train_steps), table)


@SCHEDULES.register("cosine")
def cosine(s: Schedule, t, xp):
    """iDDPM cosine (Nichol & Dhariwal 2021, Eq. 17): abar = f(t)/f(0),
    f = cos^2(((t + s)/(1 + s)) pi/2) with offset s = 0.008."""
    off = 0.008
    f0 = float(np.cos(off / (1 + off) * np.pi / 2) ** 2)  # Python floats keep t's dtype in jax
    f = xp.cos((t + off) / (1 + off) * np.pi / 2) ** 2 / f0
    f = xp.clip(f, 1e-12, 1 - 1e-12)
    return xp.log(f) - xp.log1p(-f)


@SCHEDULES.register("cosine_shifted")
def cosine_shifted(s: Schedule, t, xp):
    """Simple diffusion's log-SNR cosine (Hoogeboom et al. 2023, Eq. 4); shift via `shift`."""
    t_min = float(np.arctan(np.exp(-0.5 * s.logsnr_max)))
    t_max = float(np.arctan(np.exp(-0.5 * s.logsnr_min)))
    return -2.0 * xp.log(xp.tan(t_min + t * (t_max - t_min)))


@SCHEDULES.register("sigmoid")
def sigmoid_schedule(s: Schedule, t, xp):
    """Chen 2023 "On the Importance of Noise Scheduling", Algorithm 1: sigmoid gamma(t) = abar."""
    a, e, tau = s.sigmoid_start, s.sigmoid_end, s.sigmoid_tau
    v_start, v_end = float(sigmoid(a / tau)), float(sigmoid(e / tau))
    gamma = (v_end - sigmoid((t * (e - a) + a) / tau, xp)) / (v_end - v_start)
    gamma = xp.clip(gamma, 1e-9, 1 - 1e-9)
    return xp.log(gamma) - xp.log1p(-gamma)


@SCHEDULES.register("edm")
def edm(s: Schedule, t, xp):
    """EDM (Karras et al. 2022, Eq. 5): sigma_i = (smax^(1/rho) + t (smin^(1/rho) -
    smax^(1/rho)))^rho with t running from noise to data; here t=0 is data, so flip it."""
    a, b = s.sigma_max ** (1 / s.rho), s.sigma_min ** (1 / s.rho)
    sigma = (a + (1.0 - t) * (b - a)) ** s.rho
    return -2.0 * xp.log(sigma)


def shift_for_resolution(image_size: int, reference_size: int = 64) -> float:
    """Simple diffusion's shift: log-SNR + 2 log(d_ref / d)."""
    return float(2.0 * np.log(reference_size / image_size))


def shift_for_input_scale(b: float) -> float:
    """Chen 2023's input scaling x0 -> b x0 is a log-SNR shift of 2 log b."""
    return float(2.0 * np.log(b))


def sampling_grid(
    schedule: Schedule,
    num_steps: int,
    kind: str = "uniform_t",
    t_min: float = 0.0,
    final: str | None = None,
) -> np.ndarray:
    """float64 log-SNR grid of num_steps+1 points from noise (t=1) towards data, built on the host.

    kind: a `GRIDS` entry: `uniform_t` (equal steps in t), `uniform_logsnr` (equal steps in
    log-SNR, the DPM-Solver default), `edm` (Karras rho=7 spacing in sigma between the ends), or
    one of diffusers' integer-timestep spacings `leading`, `trailing`, `linspace` (and the
    DDIM/Euler/Heun variants `ddim_leading`, `ddim_linspace`). final: "schedule" (the last point
    is the schedule at t_min) or "zero" (the grid ends at sigma = 0, log-SNR +inf); by default
    "zero" for the diffusers spacings and "schedule" for the others. With "zero" the last point
    of `uniform_t` / `uniform_logsnr` becomes sigma = 0 (as diffusers' `linspace` drops t = 0),
    while `edm` and the diffusers spacings put sigma = 0 after their num_steps points (EDM's
    sigma_N = 0 after sigma_min, diffusers' `final_sigmas_type="zero"`)."""
    if num_steps < 1:
        raise ValueError(f"number of sampling steps must be >= 1, got {num_steps}")
    fn = GRIDS.get(kind)
    final = check_choice("diffusion.grid_final", final or getattr(fn, "final", "schedule"), FINALS)
    t = np.linspace(1.0, t_min, num_steps + 1, dtype=np.float64)
    if final == "schedule":
        return np.asarray(fn(schedule, t), np.float64)
    if getattr(fn, "append_zero", False):
        t = np.linspace(1.0, t_min, num_steps, dtype=np.float64)
        return np.append(np.asarray(fn(schedule, t), np.float64), np.inf)
    grid = np.asarray(fn(schedule, t), np.float64)
    grid[-1] = np.inf
    return grid


FINALS = ("schedule", "zero")


@GRIDS.register("uniform_t")
def uniform_t(schedule: Schedule, t):
    return schedule.logsnr(t)


@GRIDS.register("uniform_logsnr")
def uniform_logsnr(schedule: Schedule, t):
    lo, hi = float(schedule.logsnr(t[0])), float(schedule.logsnr(t[-1]))
    return np.linspace(lo, hi, len(t))


@GRIDS.register("edm")
def edm_grid(schedule: Schedule, t, rho: float = 7.0):
    """Karras et al. 2022, Eq. 5 between the schedule's end points."""
    lo, hi = float(schedule.logsnr(t[0])), float(schedule.logsnr(t[-1]))
    smax, smin = np.exp(-0.5 * lo), np.exp(-0.5 * hi)
    ramp = np.linspace(0, 1, len(t))
    sig = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return -2.0 * np.log(sig)


edm_grid.append_zero = True  # final="zero": sigma_min, then 0 (EDM's sigma_N = 0)


# --- diffusers' `timestep_spacing` for networks trained on integer DDPM timesteps ----------------
# Integer timestep k of `num_train_steps` T is t = k / (T - 1) here, exactly the `linear` DDPM
# table's entry k (the map is affine, so any schedule defined on [0, 1] gets the same spacing).
# `leading`, `trailing`, `linspace` follow DPMSolverMultistepScheduler / UniPCMultistepScheduler
# `set_timesteps` (n timesteps, then final sigma 0); DDIMScheduler's `trailing` is the same, its
# `leading` and `linspace` (also Euler's and Heun's) are `ddim_leading` and `ddim_linspace`.
# (DDIMScheduler steps from k to k - T // n, which differs from the next grid point for
# `ddim_linspace`; here every sampler steps between consecutive grid points.)


def _timesteps_grid(fn):
    def grid(schedule: Schedule, t):
        steps = np.asarray(fn(schedule.num_train_steps, len(t), schedule.steps_offset), np.float64)
        return schedule.logsnr(steps / (schedule.num_train_steps - 1))

    grid.final = "zero"
    grid.append_zero = True  # n timesteps, then sigma 0
    grid.timesteps = fn
    grid.__doc__ = fn.__doc__
    return grid


@GRIDS.register("leading")
@_timesteps_grid
def leading(T, n, offset):
    """ratio = T // (n + 1); (arange(n + 1) ratio)[::-1][:-1] + steps_offset."""
    return (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1] + offset


@GRIDS.register("trailing")
@_timesteps_grid
def trailing(T, n, offset):
    """round(T - i T / n) - 1 for i < n (diffusers' arange(T, 0, -T / n))."""
    return np.round(T - np.arange(n) * (T / n)) - 1


@GRIDS.register("linspace")
@_timesteps_grid
def linspace(T, n, offset):
    """linspace(0, T - 1, n + 1).round()[::-1][:-1]."""
    return np.linspace(0, T - 1, n + 1).round()[::-1][:-1]


@GRIDS.register("ddim_leading")
@_timesteps_grid
def ddim_leading(T, n, offset):
    """(arange(n) (T // n))[::-1] + steps_offset (DDIMScheduler, Euler, Heun)."""
    return (np.arange(0, n) * (T // n)).round()[::-1] + offset


@GRIDS.register("ddim_linspace")
@_timesteps_grid
def ddim_linspace(T, n, offset):
    """linspace(0, T - 1, n).round()[::-1] (DDIMScheduler, Euler, Heun)."""
    return np.linspace(0, T - 1, n).round()[::-1]


def timesteps_from_logsnr(schedule: Schedule, logsnr):
    """The (fractional) training timestep k in [0, T - 1] at `logsnr`, inverting the schedule's
    integer-timestep table by linear interpolation (exact on the table's own points)."""
    T = schedule.num_train_steps
    table = np.asarray(schedule.logsnr(np.arange(T, dtype=np.float64) / (T - 1)), np.float64)
    xp = _xp(logsnr)
    dtype = logsnr.dtype if hasattr(logsnr, "dtype") else np.float64
    return xp.interp(logsnr, xp.asarray(table[::-1], dtype), xp.arange(T - 1, -1, -1, dtype=dtype))


def t_from_logsnr(schedule: Schedule, logsnr, iters: int = 64):
    """t in [0, 1] with schedule.logsnr(t) = logsnr, by bisection in the dtype of `logsnr` (the
    schedules decrease in t; +inf gives t = 0). Works inside jit on traced grids."""
    logsnr = jnp.asarray(logsnr)

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        cleaner = schedule.logsnr(mid) > logsnr  # mid is still too clean: the root lies above
        return jnp.where(cleaner, mid, lo), jnp.where(cleaner, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(logsnr), jnp.ones_like(logsnr)))
    return 0.5 * (lo + hi)
