"""Digits diffusion trained with EDM2's recipe (Karras et al. 2024), for post-hoc EMA:

- EDM preconditioning (`parameterization="edm"`, sigma_data 0.5), log-normal sigma and the EDM
  weighting with EDM2's learned uncertainty (`model.learn_logvar`, Eq. 21);
- the two power-function EMAs EDM2 tracks (sigma_rel 0.05 and 0.10) stored in every checkpoint,
  every 100 steps, all kept (`checkpoint.max_to_keep=0`), so any other EMA width can be rebuilt
  after training (netlab/diffusion/posthoc_ema.py, bench/posthoc_ema_sweep.py):

    python -m netlab.main --config configs/diffusion/digits_edm2.py:cpu --workdir runs/digits_edm2
    python -m netlab.diffusion.posthoc_ema --workdir runs/digits_edm2 \
        --sigma-rel 0.03 0.07 0.15 --out runs/digits_edm2_phema
    # then start (or evaluate) from one width:
    #   --config.checkpoint.init_from=runs/digits_edm2_phema/sigma_rel_0.070

Argument: a preset (cpu | gpu | pod; pipeline only with backbone=dit) and
backbone=edm2_unet|dit (default edm2_unet).
- edm2_unet (netlab/diffusion/edm2_unet.py): EDM2's magnitude-preserving U-Net at a small size
  (32 x (1, 2) channels over 8 x 8 and 4 x 4, 2 blocks per level, attention at 4 x 4, 1.0 M
  parameters), with EDM2's optimizer: Adam (0.9, 0.99) without weight decay or clipping, forced
  weight normalisation of the stored weights (`optimizer.forced_weight_norm`) and the
  inverse-square-root decay lr / sqrt(max(t / ref_steps, 1)) after the warm-up
  (`optimizer.schedule="inv_sqrt"`, `optimizer.ref_steps`).
- dit: digits_dit's DiT and optimizer (AdamW, warm-up + cosine), only the EDM2 loss and EMAs.

Why the U-Net is the default (bench/results/diffusion_backbones.md, 200 steps of batch 32, FD of
500 samples): with this config's recipe it reaches FD 22.7, the DiT 167.9 (`dit@edm2_recipe`: the
same EDM loss, sampler, EMAs and optimizer, lr 1e-2 with inverse-sqrt decay; forced weight norm
off, a no-op without MP weights) or 173.6 at DiT's lr 1e-3 (`dit@edm2_recipe_lr1e-3`). The U-Net
does need its recipe: with digits_dit's (v-prediction, AdamW lr 1e-3 cosine, no forced weight
norm) it reaches 202.3 against the DiT's 176.9.
"""

from configs import common
from configs.diffusion import digits_dit

PRESETS = ("cpu", "gpu", "pod")  # pipeline: backbone=dit,pipeline
VARIANTS = ("backbone=dit", "backbone=dit,pipeline")
BACKBONES = ("edm2_unet", "dit")


def get_config(arg=None):
    a = common.parse_arg(arg, digits_dit.PRESETS, backbone="edm2_unet")
    if a.backbone not in BACKBONES:
        raise ValueError(f"backbone={a.backbone!r}: choose backbone=edm2_unet|dit")
    c = digits_dit.get_config(a.preset)
    d, m, o = c.diffusion, c.model, c.optimizer
    d.parameterization = "edm"
    d.weighting = "edm"
    d.time_sampling = "log_normal"  # ln sigma ~ N(p_mean, p_std^2)
    d.p_mean, d.p_std = -1.2, 1.2
    d.sampler = "heun"
    d.grid = "edm"
    d.sample_steps = 16
    m.learn_logvar = True
    o.ema_stds = (0.05, 0.1)  # EDM2's two stored profiles; evaluation uses the first
    o.ref_steps = 0  # optimizer.schedule="inv_sqrt": the decay's t_ref (0: constant after warm-up)
    o.forced_weight_norm = False  # project every `mp_weight` to unit-RMS rows after each step
    c.checkpoint.every = 100  # the post-hoc EMA snapshots
    c.checkpoint.max_to_keep = 0  # keep them all
    if a.backbone == "edm2_unet":
        if a.preset == "pipeline":
            raise ValueError(
                "backbone=edm2_unet has no pipeline stages; choose cpu|gpu|pod, or "
                "backbone=dit,pipeline"
            )
        scale = 1 if a.preset == "cpu" else 2
        m.backbone, m.variant = "edm2_unet", ""
        m.width, m.channel_mult, m.num_blocks = 32 * scale, (1, 2), 2
        m.attention_resolutions, m.channels_per_head, m.dropout = (4,), 32, 0.0
        o.name, o.b1, o.b2, o.eps = "adam", 0.9, 0.99, 1e-8
        o.weight_decay, o.clip_norm = 0.0, 0.0
        o.lr, o.schedule, o.warmup_steps, o.ref_steps = 1e-2, "inv_sqrt", 200, 300
        o.forced_weight_norm = True
    return c
