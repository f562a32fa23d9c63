"""Class-conditional digits on the wave-2 backbones: RIN, FlowDCN, DiT with dynamic token routing.

    python -m netlab.main --config configs/diffusion/digits_rin.py:backbone=rin --workdir runs/rin
    python -m netlab.main --config configs/diffusion/digits_rin.py:backbone=flowdcn \
        --workdir runs/flowdcn
    python -m netlab.main --config configs/diffusion/digits_rin.py:backbone=dit,routing=dynamic \
        --workdir runs/dit_routing

Argument: backbone=rin|flowdcn|dit, routing=none|dynamic (dynamic: DiT only), and a preset
(cpu | gpu). Everything else is digits_dit's recipe (1500 steps of batch 128 on the CPU preset).
- rin (netlab/diffusion/rin.py, Jabri et al. 2023): 16 latents x 128, interface 64, 2 blocks of 2
  compute layers, latent self-conditioning at rate 0.9, two passes per sampling call; digits_dit's
  v-prediction diffusion.
- flowdcn (netlab/diffusion/flowdcn.py, Wang et al. 2024): DiT skeleton with group-wise deformable
  convolution instead of attention, trained with digits_flow's flow-matching objective (velocity
  output and loss, logit-normal t, Euler sampling).
- dit + routing=dynamic (netlab/diffusion/token_routing.py): digits_dit's DiT with a per-token gate
  in front of every block and a budget loss (`model.routing_budget`, the fraction of token-block
  passes to keep; 1.0 is the dense DiT).
"""

from configs import common
from configs.diffusion import digits_dit, digits_flow

PRESETS = ("cpu", "gpu")
VARIANTS = ("backbone=rin", "backbone=flowdcn", "backbone=dit,routing=dynamic")


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, backbone="rin", routing="none")
    if a.backbone not in ("rin", "flowdcn", "dit") or a.routing not in ("none", "dynamic"):
        raise ValueError(
            f"backbone={a.backbone!r}, routing={a.routing!r}: choose backbone=rin|flowdcn|dit "
            f"and routing=none|dynamic"
        )
    if a.routing == "dynamic" and a.backbone != "dit":
        raise ValueError(f"routing=dynamic routes DiT's blocks; use backbone=dit, not {a.backbone}")
    base = digits_flow if a.backbone == "flowdcn" else digits_dit
    c = base.get_config(a.preset)
    m = c.model
    if a.backbone == "rin":
        m.backbone, m.depth, m.width, m.num_heads, m.patch = "rin", 2, 128, 4, 2
        m.rin_interface, m.rin_latents, m.rin_compute = 64, 16, 2
        m.rin_self_cond, m.rin_eval_passes = 0.9, 2
    elif a.backbone == "flowdcn":
        m.backbone, m.depth, m.width, m.patch = "flowdcn", 4, 128, 2
        m.dcn_groups, m.dcn_kernel, m.dcn_max_scale = 4, 3, 2.0  # a 4 x 4 token grid
    elif a.routing == "dynamic":
        m.backbone = "token_routing"
        m.routing_budget, m.routing_weight, m.routing_temperature = 0.7, 1.0, 1.0
    if a.preset == "gpu" and a.backbone != "dit":
        m.variant = ""  # the sizes above, not digits_dit's DiT preset "S/2"
        m.width *= 2
    return c
