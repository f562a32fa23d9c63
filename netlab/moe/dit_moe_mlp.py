"""DiT-MoE's MLP (Fei et al. 2024, "Scaling Diffusion Transformers to 16 Billion Parameters",
§3.1-3.2), for the diffusion pillar's DiT: `model.mlp = "dit_moe"` (listed lazily in
`netlab.nn.registries.MLPS`) with `model.mlp_every` and `model.mlp_kwargs`.

    x += g_mlp * (sum_{top-2} p_e * SwiGLU_e(u) + SwiGLU_shared(u)),  u = modulate(LN(x), ...)

The defaults are the paper's: softmax top-2 routing WITHOUT renormalising the two weights, SiLU-
gated (SwiGLU) experts, 2 shared experts (`RoutedAndSharedMoE`), and the expert-level balance loss
alpha * sum_e P_e * (E * ce_e) with alpha = 0.01 per layer (`netlab.moe.losses.dit_moe_balance`:
it is the k-normalised Switch loss the MoE layer sows as `load_balance`), no router z-loss. The
blocks are not causal, so expert choice may replace top-2.
"""

from typing import Optional

from netlab.moe.shared import RoutedAndSharedMoE


class DiTMoEMLP(RoutedAndSharedMoE):
    num_experts: int = 8
    hidden: int = 128
    k: int = 2
    renormalize: bool = False
    activation: str = "silu"
    glu: bool = True
    num_shared: int = 2
    capacity_factor: Optional[float] = None
    eval_capacity_factor: Optional[float] = None
    load_balance_weight: float = 0.01
    z_loss_weight: float = 0.0
    config_key: str = "model.mlp_kwargs"
