"""RADD (Ou et al. 2025) on bytes: a time-free masked-diffusion Transformer on the same pydoc text,
split and window length as the MoE byte LM (configs/moe/lm_tiny.py), so bits per byte compare.

    python -m netlab.main --config configs/diffusion/radd_text.py:cpu --workdir runs/radd_text
    # the dense autoregressive LM, same width/depth/heads/MLP (moe_every > depth: no MoE block)
    python -m netlab.main --config configs/moe/lm_tiny.py:cpu --workdir runs/ar_text \
        --config.model.moe_every=3 --config.mesh.data=-1 --config.mesh.expert=1

Compare eval/valid_bpb_bound (an upper bound on RADD's bits per byte) with the AR model's
eval/valid_bits_per_byte (exact). Each evaluation also logs a cached sample and the network calls
and seconds of the caching sampler against the uncached one (eval/sample_*).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "netlab.diffusion.radd_task:RADDText"
    c.model = ml_collections.ConfigDict(dict(width=64, depth=2, num_heads=4, mlp_ratio=2))
    c.data = ml_collections.ConfigDict(dict(seq_len=64, valid_fraction=0.1, eval_windows=64))
    c.diffusion = ml_collections.ConfigDict(
        dict(
            sampler="radd_cached",  # or "tau_leaping" (same draws, one network call per step)
            compare_with="tau_leaping",  # a second sampler timed at each evaluation ("": none)
            sample_steps=128,
            num_samples=4,
            elbo_points=16,
            lambda_eps=1e-3,
        )
    )
    c.train.steps = 400
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.01
    c.optimizer.clip_norm = 1.0
    if preset == "gpu":
        c.model.width, c.model.depth, c.model.num_heads = 256, 4, 8
        c.data.seq_len = 256
        c.train.batch_size = 64
        c.train.steps = 2000
        c.train.eval_every = 500
    return c
