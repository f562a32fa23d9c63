"""ViT-MoE (V-MoE style, MoE every other block) classifying scikit-learn's digits (8x8, 2x2
patches).

    python -m netlab.main --config configs/moe/vit_moe_digits.py:cpu --workdir runs/vit_moe
    # expert parallelism on 8 fake CPU devices (data=2 x expert=4):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m netlab.main \
        --config configs/moe/vit_moe_digits.py:cpu --workdir runs/vit_moe8 \
        --config.mesh.data=2 --config.mesh.expert=4
    # customisation (Zhang et al. 2018, netlab/moe/customize.py): the run above, frozen, as the
    # global expert; a small local expert and a gate train on top of it
    python -m netlab.main --config configs/moe/vit_moe_digits.py:customize \
        --workdir runs/vit_custom --config.model.global_path=runs/vit_moe
    # AdvMoE (Zhang et al. 2023, netlab/moe/advmoe.py): TRADES on PGD examples, router and
    # backbone phases alternating step by step
    python -m netlab.main --config configs/moe/vit_moe_digits.py:adv --workdir runs/vit_adv
    # encoders are not causal: --config.model.moe.router=expert_choice, =soft (backend capacity
    # or ep) and =smear (backend dense) also work here; so do hyper, sparsemixer and loss_free.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
VARIANTS = ("customize", "adv")


def get_config(arg=None):
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    customize, adv = "customize" in words, "adv" in words
    preset = common.parse_preset(
        ",".join(w for w in words if w not in ("customize", "adv")), PRESETS
    )
    c = common.base_config()
    c.task = "moe.vit_digits"
    c.model = ml_collections.ConfigDict(
        dict(
            name="vit",
            patch=2,
            width=64,
            depth=4,
            num_heads=4,
            mlp_hidden=128,
            moe_every=2,
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
                    bpr=True,
                    renormalize=False,
                    activation="gelu",
                    glu=False,
                    num_shared=0,
                    router_jitter=0.0,
                    bias_update_rate=0.001,
                    soft_slots=1,
                    hyper_dim=16,
                    grouped_matmul="auto",
                    expert_axis="expert",
                )
            ),
        )
    )
    c.data = ml_collections.ConfigDict(dict(test_fraction=0.2))
    c.loss = ml_collections.ConfigDict(dict(load_balance=0.01, z_loss=1e-3))
    c.train.steps = 600
    c.train.batch_size = 128
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 1e-4
    c.optimizer.clip_norm = 1.0
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        c.model.moe.backend = "capacity"
    if preset == "pod":
        c.train.compute_dtype = "bfloat16"
        c.train.batch_size = 1024
        c.mesh.data, c.mesh.expert = -1, 8
        c.model.width, c.model.mlp_hidden, c.model.moe.hidden = 256, 1024, 1024
    if adv:  # AdvMoE (netlab/moe/advmoe.py): the paper's training attack on the [-1, 1] digits
        c.adv_moe = ml_collections.ConfigDict(
            dict(enabled=True, eps=16 / 255, step_size=10 / 255, steps=2, beta=6.0)
        )
    if customize:  # the ViT-MoE above becomes the frozen global expert
        vit = c.model
        c.model = ml_collections.ConfigDict(
            dict(
                name="customize",
                global_model="vit",
                global_fields=ml_collections.ConfigDict(
                    {k: v for k, v in vit.items() if k != "name"}
                ),
                global_path="",  # the global run's workdir ("" = a random frozen expert)
                local_hidden=32,
                gate_hidden=16,
                hard_gate=True,
            )
        )
        c.loss.load_balance, c.loss.z_loss = 0.0, 0.0
        c.train.steps = 200
    return c
