"""Byte-level MoE language model on Python's pydoc_data documentation text.

    # cpu: 8 fake CPU devices, mesh data=2 x expert=4, explicit expert parallelism (shard_map +
    # all_to_all). Needs 8 devices: set XLA_FLAGS before starting Python.
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m netlab.main \
        --config configs/moe/lm_tiny.py:cpu --workdir runs/moe_lm
    # gpu: one GPU, dropless (sort + ragged_dot), bfloat16.
    python -m netlab.main --config configs/moe/lm_tiny.py:gpu --workdir runs/moe_lm_gpu
    # pod: ~1B parameters (8 experts of d=1024, f=4096, 14 layers), expert=8, fsdp=-1, capacity
    # path, train.remat=full on every block.

Metrics: train/cross_entropy, train/load_balance (1 = perfectly balanced), train/dropped_fraction,
train/aux_loss, eval/valid_loss; pictures expert_load/ and token_experts/ at each evaluation.
Routers must be causal here (topk, hyper, sparsemixer, loss_free: e.g.
--config.model.moe.router=loss_free uses DeepSeek-V3's bias with step model.moe.bias_update_rate).
Capacity slots are filled in token order (a token's fate depends only on earlier tokens), and Batch
Priority Routing (model.moe.bpr) is refused: it would let later tokens evict earlier ones.
`loss.load_balance` and `loss.z_loss` weight the mean over the MoE layers.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "moe.byte_lm"
    c.model = ml_collections.ConfigDict(
        dict(
            name="lm",
            width=64,
            depth=2,
            num_heads=4,
            mlp_hidden=128,
            moe_every=1,
            moe=ml_collections.ConfigDict(
                dict(
                    num_experts=8,
                    hidden=128,
                    k=2,
                    router="topk",
                    backend="ep",
                    capacity_factor=1.25,
                    eval_capacity_factor=2.0,
                    capacity_multiple=4,
                    bpr=False,  # BPR sorts by confidence: not causal (a UserError here)
                    renormalize=False,
                    activation="gelu",
                    glu=False,
                    num_shared=0,
                    router_jitter=0.0,
                    bias_update_rate=0.001,
                    hyper_dim=16,
                    grouped_matmul="auto",
                    expert_axis="expert",
                )
            ),
        )
    )
    c.data = ml_collections.ConfigDict(dict(seq_len=64, valid_fraction=0.1, eval_windows=64))
    c.loss = ml_collections.ConfigDict(dict(load_balance=0.01, z_loss=1e-3))
    c.train.steps = 400
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.01
    c.optimizer.clip_norm = 1.0
    c.mesh.data, c.mesh.expert = 2, 4
    if preset == "gpu":
        c.mesh.data, c.mesh.expert = -1, 1
        c.train.compute_dtype = "bfloat16"
        c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_hidden = 256, 4, 8, 1024
        c.model.moe.hidden = 512
        c.model.moe.backend = "dropless"
        c.data.seq_len = 256
        c.train.batch_size = 64
        c.train.steps = 2000
        c.train.eval_every = 500
    if preset == "pod":
        c.mesh.data, c.mesh.fsdp, c.mesh.expert = 1, -1, 8
        c.train.compute_dtype = "bfloat16"
        c.train.remat = "full"
        c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_hidden = 1024, 14, 16, 4096
        c.model.moe.hidden = 4096
        c.model.moe.backend = "capacity"
        c.data.seq_len = 1024
        c.train.batch_size = 256
        c.train.steps = 20000
        c.train.eval_every = 2000
        c.checkpoint.every = 1000
    return c
