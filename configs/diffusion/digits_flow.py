"""Class-conditional rectified flow on scikit-learn's digits images: digits_dit's DiT trained with
the flow-matching objective of SD3 (Esser et al. 2024, Sec. 3.1): z_t = (1 - t) x0 + t eps, a
velocity network (`parameterization="flow"`), the velocity MSE (`weighting="flow"`), logit-normal
t (m = 0, s = 1) and Euler sampling on uniform t (netlab/diffusion/flow.py).

    python -m netlab.main --config configs/diffusion/digits_flow.py:cpu --workdir runs/digits_flow
    # Heun instead of Euler, or any other sampler (a flow model is one more parameterisation):
    python -m netlab.main --config configs/diffusion/digits_flow.py:cpu --workdir runs/flow_heun \
        --config.diffusion.sampler=flow_heun --config.diffusion.sample_steps=10
"""

from configs.diffusion import digits_dit

PRESETS = digits_dit.PRESETS


def get_config(arg=None):
    c = digits_dit.get_config(arg)
    d = c.diffusion
    d.schedule = "rectified_flow"  # log-SNR 2 log((1 - t)/t), clipped to +-15
    d.parameterization = "flow"
    d.weighting = "flow"
    d.time_sampling = "logit_normal"
    d.p_mean, d.p_std = 0.0, 1.0  # SD3's default logit-normal
    d.sampler = "flow_euler"
    d.sample_steps = 20
    d.grid = "uniform_t"
    return c
