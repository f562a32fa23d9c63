"""The interchangeable parts of a diffusion model, each named by one config key.

Every entry is registered with a decorator in the module that defines it (`@SAMPLERS.register(...)`
in samplers.py, dc_solver.py, cfg_pc.py; `@BACKBONES.register(...)` in dit.py, unet.py, mlp.py;
...), so a new sampler or backbone is one new file under `netlab/diffusion/` plus its test. A
config may also name a part of its own by import path, e.g.
`--config.diffusion.sampler=my_pkg.solvers:my_sampler`. What each kind of entry is:

- BACKBONES (`model.backbone`): `build(m, *, data_shape, num_classes, policy[, sparse_mlp])`
  -> a Flax module `(x, noise_cond, labels=None, train=False) -> output` (or (output, logvar) with
  `model.learn_logvar`). `m` is the `config.model` group (read with `m.get`); the builder checks
  its values and raises one-line `UserError`s naming the key. The module takes its compute dtype
  and `remat_policy` from `policy` (a task refuses `train.remat` for a module without
  `remat_policy`). Builders that take `sparse_mlp` accept a Transformer MLP factory (`model.mlp`,
  DiT-MoE).
- SAMPLERS (`diffusion.sampler`): `fn(denoise, x, grid, key=None, *, options) -> x` over a
  log-SNR grid, `denoise(x, logsnr) -> x0_hat` (`samplers.py` says more). The options come from
  `diffusion.sampler_kwargs` (checked by name and by a traced dry run when the task is built).
  `denoise` may carry classifier-free guidance's two halves (`guidance.ClassifierFree`).
- SCHEDULES (`diffusion.schedule`): `fn(schedule, t, xp) -> logsnr` (`schedules.py`).
- PARAMETERIZATIONS (`diffusion.parameterization`): a class with static methods
  `network_input(x_t, alpha, sigma, sigma_data)` and
  `denoised(x_t, out, alpha, sigma, sigma_data)`.
- WEIGHTINGS (`diffusion.weighting`): `fn(logsnr, gamma, sigmoid_bias, sigma_data) -> w`.
- TIME_SAMPLINGS (`diffusion.time_sampling`):
  `fn(key, n, schedule, p_mean, p_std, t_eps, dtype) -> logsnr`.
- DISCRETE_SAMPLERS (`diffusion.sampler` of a masked-diffusion config, radd_text.py):
  `fn(log_probs_fn, key, batch, length, steps, mask_id) -> (tokens, network calls)` from
  all-masked tokens with a time-free `log_probs_fn(x_t) -> log p(x0 | x_t)` (`radd.py`).
- GRIDS (`diffusion.grid`): `fn(schedule, t) -> float64 log-SNR grid` on the host, one point
  per entry of t; an attribute `final = "zero"` makes `sampling_grid` end it at sigma = 0 by
  default (diffusers' integer-timestep spacings).

Registry kinds (for `kind:name` references): backbone, sampler, noise_schedule, parameterization,
loss_weighting, time_sampling, sampling_grid, discrete_sampler.
"""

from netlab.registry import Registry

_PKG = ("netlab.diffusion",)
_DIGITS = "configs/diffusion/digits_dit.py:cpu"

BACKBONES = Registry("backbone", "model.backbone", _PKG, example=_DIGITS)
SAMPLERS = Registry("sampler", "diffusion.sampler", _PKG, example=_DIGITS)
SCHEDULES = Registry("noise_schedule", "diffusion.schedule", _PKG, example=_DIGITS)
PARAMETERIZATIONS = Registry(
    "parameterization", "diffusion.parameterization", _PKG, example=_DIGITS
)
WEIGHTINGS = Registry("loss_weighting", "diffusion.weighting", _PKG, example=_DIGITS)
TIME_SAMPLINGS = Registry("time_sampling", "diffusion.time_sampling", _PKG, example=_DIGITS)
GRIDS = Registry("sampling_grid", "diffusion.grid", _PKG, example=_DIGITS)
DISCRETE_SAMPLERS = Registry(
    "discrete_sampler", "diffusion.sampler", _PKG, example="configs/diffusion/radd_text.py:cpu"
)
