"""digits_dit's DiT trained with EDM2's recipe (Karras et al. 2024), for post-hoc EMA:

- EDM preconditioning (`parameterization="edm"`, sigma_data 0.5), log-normal sigma and the EDM
  weighting with EDM2's learned uncertainty (`model.learn_logvar`, Eq. 21);
- the two power-function EMAs EDM2 tracks (sigma_rel 0.05 and 0.10) stored in every checkpoint,
  every 100 steps, all kept (`checkpoint.max_to_keep=0`), so any other EMA width can be rebuilt
  after training (netlab/diffusion/posthoc_ema.py):

    python -m netlab.main --config configs/diffusion/digits_edm2.py:cpu --workdir runs/digits_edm2
    python -m netlab.diffusion.posthoc_ema --workdir runs/digits_edm2 \
        --sigma-rel 0.03 0.07 0.15 --out runs/digits_edm2_phema
    # then start (or evaluate) from one width:
    #   --config.checkpoint.init_from=runs/digits_edm2_phema/sigma_rel_0.070

Not (yet) EDM2's magnitude-preserving U-Net nor its learning-rate decay: the DiT backbone and the
optimizer of digits_dit (netlab/diffusion/mp_layers.py has the layers and `lr_decay`).
"""

from configs.diffusion import digits_dit

PRESETS = digits_dit.PRESETS


def get_config(arg=None):
    c = digits_dit.get_config(arg)
    d = c.diffusion
    d.parameterization = "edm"
    d.weighting = "edm"
    d.time_sampling = "log_normal"  # ln sigma ~ N(p_mean, p_std^2)
    d.p_mean, d.p_std = -1.2, 1.2
    d.sampler = "heun"
    d.grid = "edm"
    d.sample_steps = 16
    c.model.learn_logvar = True
    c.optimizer.ema_stds = (0.05, 0.1)  # EDM2's two stored profiles; evaluation uses the first
    c.checkpoint.every = 100  # the post-hoc EMA snapshots
    c.checkpoint.max_to_keep = 0  # keep them all
    return c
