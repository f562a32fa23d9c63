"""Class-conditional digits on DiT with a training-time routing scheme: TREAD or DTR.

    python -m netlab.main --config configs/diffusion/digits_routing.py:routing=tread \
        --workdir runs/digits_tread
    python -m netlab.main --config configs/diffusion/digits_routing.py:routing=dtr \
        --workdir runs/digits_dtr
    # dynamic token routing (per-token gates under a budget) is digits_rin.py's
    # backbone=dit,routing=dynamic

Argument: routing=tread|dtr and a preset (cpu | gpu). Everything else is digits_dit's recipe
(the same 4-block DiT, v-prediction, 1500 steps of batch 128 on the CPU preset), so a run is
comparable with plain DiT step for step (bench/diffusion_backbones.py).
- tread (netlab/diffusion/tread.py, Krause et al. 2025): one route carrying a random half of the
  16 tokens past blocks 1..2 of 4 in training (the paper's DiT-B route, blocks 2 -> B - 4 at rate
  0.5, scaled to depth 4); sampling runs the full DiT.
- dtr (netlab/diffusion/dtr.py, Park et al. 2024): timestep-dependent channel masks on every
  block, sharing ratio 0.8 and window exponent 4 (the paper's defaults), no extra parameters.
  DTR's timestep is read off the cosine schedule (exact for diffusion.schedule="cosine"); this
  recipe keeps digits_dit's cosine_shifted schedule, for which the mapping is approximate.
"""

from configs import common
from configs.diffusion import digits_dit

PRESETS = ("cpu", "gpu")
VARIANTS = ("routing=tread", "routing=dtr")


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, routing="tread")
    if a.routing not in ("tread", "dtr"):
        raise ValueError(f"routing={a.routing!r}: choose routing=tread|dtr")
    c = digits_dit.get_config(a.preset)
    m = c.model
    if a.routing == "tread":
        m.backbone = "netlab.diffusion.tread:build"
        m.routes = ((1, 2, 0.5),)  # (start block, end block, fraction of tokens routed)
    else:
        m.backbone = "netlab.diffusion.dtr:build"
        m.dtr_ratio, m.dtr_alpha = 0.8, 4.0
    return c
