"""Registries of parts that several families share.

`MLPS`: the feed-forward block of a Transformer block (`netlab.nn.blocks`): a Flax module class
whose `__call__(x, train=False)` maps (..., embed) -> (..., embed). Model builders look it up by the
config's name and pass `functools.partial(cls, **fields)` to the block. Sparse MLPs live in the MoE
pillar and are listed lazily, so `nn` never imports `moe`.
"""

from netlab.registry import Registry

MLPS = Registry(
    "mlp",
    "model.mlp",
    example="configs/moe/dit_moe_digits.py:cpu",
    packages=("netlab.nn",),
    lazy={
        "moe": "netlab.moe.layer:MoEMLP",
        "moe_shared": "netlab.moe.shared:RoutedAndSharedMoE",
        "dit_moe": "netlab.moe.dit_moe_mlp:DiTMoEMLP",
    },
)
