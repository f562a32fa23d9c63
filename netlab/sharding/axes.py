"""The vocabulary of logical axis names that models use, and thin helpers to attach them.

Models name their parameter and activation axes with these strings only; which mesh axis (if any)
each name lands on is decided by the rules in the config (`config.sharding.rules`, see
`configs/common.py`). Outside a mesh + rules context the annotations are no-ops, so a model runs
unchanged in a notebook.
"""

import flax.linen as nn

# Activations.
BATCH = "batch"  # examples / tokens of a data-parallel batch
LENGTH = "length"  # sequence / patch positions
NODES = "nodes"  # graph nodes (full-batch graph mode)
EDGES = "edges"  # graph edges (edge-sharded full-batch mode)
EXPERT_GROUP = (
    "expert_group"  # token groups inside MoE expert buffers: the batch axes minus `expert`
)
# Parameters (and the matching activation feature axes).
EMBED = "embed"  # model width
MLP = "mlp"  # hidden width of feed-forward blocks
HEADS = "heads"  # attention heads
KV = "kv"  # per-head width
VOCAB = "vocab"  # vocabulary / number of classes
EXPERT = "expert"  # stacked experts (E, ...)
EXPERT_EMBED = "embed_no_exp"  # model width inside expert weights: never mapped to the expert axis
CONV_IN = "conv_in"  # convolution input channels
CONV_OUT = "conv_out"  # convolution output channels
NORM = "norm"  # scales / biases of normalisation layers

# `island`: replicas that synchronise rarely (DiLoCo-style low-communication training; one island
# per TPU slice / GPU node). `stage`: pipeline stages. Both default to size 1; the other four are
# the synchronous axes inside an island and a stage.
MESH_AXES = ("island", "stage", "data", "fsdp", "expert", "tensor")


def param(init_fn, *axes):
    """Wrap an initializer so the parameter carries logical axis names (one per dimension)."""
    return nn.with_logical_partitioning(init_fn, tuple(axes))


def constrain(x, *axes):
    """Constrain an activation's sharding by logical names; a no-op outside mesh + rules."""
    return nn.with_logical_constraint(x, tuple(axes))
