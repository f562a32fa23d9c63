"""Cas-DM (eps-DiT + cascaded x0-DiT with a metric loss) on scikit-learn's digits images.

    python -m netlab.main --config configs/diffusion/digits_casdm.py:cpu --workdir runs/digits_casdm
    # metric: SSIM by default (no weights); LPIPS with a weights file you supply:
    python -m netlab.main --config configs/diffusion/digits_casdm.py:cpu --workdir runs/casdm_lpips \
        --config.cas_dm.metric=lpips --config.cas_dm.lpips_weights=/path/lpips_alex.npz

Evaluations write eval/digits_fd (Cas-DM DDIM: x0-module for the data estimate) beside
eval/digits_fd_eps_only (DDIM from the eps-module alone) and the sample grid.
"""  # noqa: E501

import ml_collections

from configs import common
from configs.diffusion import digits_dit

PRESETS = digits_dit.PRESETS


def get_config(arg=None):
    common.parse_preset(arg, PRESETS)
    c = digits_dit.get_config(arg)
    c.task = "diffusion.cas_dm_digits"
    c.diffusion.parameterization = "eps"  # the eps-module; the x0-module is Cas-DM's own head
    c.diffusion.sampler = "ddim"  # Cas-DM's DDIM with (eps_hat, x0_hat)
    c.cas_dm = ml_collections.ConfigDict(
        dict(
            metric="ssim",  # ssim | lpips | none
            metric_weight=0.1,  # 1.0 gave FD 51 vs 31 at 0.1 (x0_depth 2 vs 0; digits, 1500 steps)
            lpips_weights="",  # .npz for metric=lpips (netlab/diffusion/lpips.py names the keys)
            x0_depth=0,  # blocks of the x0-module (0: same as the eps-module, as in the paper)
        )
    )
    return c
