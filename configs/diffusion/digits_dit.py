"""Class-conditional DiT on scikit-learn's digits images: the `make demo` default.

    python -m netlab.main --config configs/diffusion/digits_dit.py:cpu --workdir runs/digits_dit
    # cpu: a few minutes on 2 cores; sample grids in runs/digits_dit/samples/step_<n>.png and the
    # digits Frechet distance (eval/digits_fd in metrics.jsonl) at every evaluation.
    python -m netlab.main --config configs/diffusion/digits_dit.py:gpu --workdir runs/digits_dit_gpu
    # another sampler, with its options (netlab/diffusion/registries.py lists them): DC-Solver,
    # or classifier-free guidance as a predictor-corrector
    python -m netlab.main --config configs/diffusion/digits_dit.py:cpu --workdir runs/digits_pcg \
        --config.diffusion.sampler=cfg_pc --config.diffusion.sampler_kwargs="{'num_corrector': 2}"
    # pipeline: the 4 blocks as a 4-stage GPipe pipeline (mesh stage=4 x data=2 on 8 devices,
    # netlab/sharding/pipeline.py), 4 microbatches per step
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m netlab.main \
        --config configs/diffusion/digits_dit.py:pipeline --workdir runs/digits_dit_pipeline
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod", "pipeline")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "diffusion.digits"
    c.model = ml_collections.ConfigDict(
        dict(
            backbone="dit",  # netlab/diffusion/registries.py BACKBONES: dit | unet | mlp
            variant="",  # "S/2", "B/4", ... overrides the four sizes below
            depth=4,
            width=128,
            num_heads=4,
            patch=2,
            mlp="dense",  # the blocks' MLP (MLPS); DiT-MoE: configs/moe/dit_moe_digits.py
            label_dropout=0.1,
            learn_logvar=False,
            pipeline_microbatches=0,  # >= 1: stacked blocks, a GPipe pipeline when mesh.stage > 1
            trunk="blocks",  # blocks | reversible (Rev-ViT) | revcol | irevnet (netlab/nn/*_dit.py)
            reversible=True,  # trunk=reversible: False = the same couplings, ordinary backprop
            levels=2,  # trunk=revcol: levels per column (netlab/nn/revcol_dit.py)
            level_blocks=1,  # trunk=revcol: DiT blocks per level
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="cosine_shifted",
            shift=0.0,
            parameterization="v",
            weighting="v",
            time_sampling="antithetic",
            p_mean=-1.2,
            p_std=1.2,
            min_snr_gamma=5.0,
            sampler="dpmpp_2m",
            sample_steps=20,
            grid="uniform_logsnr",
            grid_final=None,  # or "zero": end the grid at sigma = 0 (default per grid)
            sampler_kwargs=None,  # options: --config.diffusion.sampler_kwargs="{'eta': 1.0}"
            guidance=1.0,
            error_prop_weight=0.0,  # > 0: netlab/diffusion/error_propagation.py's regulariser
            error_prop_gap=5,  # its K: the chain runs 1..K ancestral steps
        )
    )  # FD at 1500 steps: 5.8 at 1.0, 17.9 at 1.5, 42 at 2.5 (guidance trades diversity away)
    c.eval = ml_collections.ConfigDict(
        dict(num_samples=1000)
    )  # FD needs ~1000: at 200 its bias hides progress
    c.train.steps = 1500
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.eval_every = 500
    c.checkpoint.every = 500
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 1.0
    c.optimizer.ema_stds = (0.1,)  # EDM2 power-function EMA: tracks the last ~10% of training
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "S/2"
        c.train.steps = 20000
        c.train.batch_size = 256
        c.train.eval_every = 5000
    if preset == "pod":
        c.train.compute_dtype = "bfloat16"
        c.model.variant = "B/2"
        c.train.batch_size = 1024
        c.train.steps = 50000
        c.mesh.data, c.mesh.fsdp = -1, 1
    if preset == "pipeline":
        # Stacked blocks (`blocks/layers`, leading axis `layers` on mesh axis `stage`): each of
        # the 4 stages holds depth / 4 blocks; the pipeline cuts each data-parallel batch into
        # model.pipeline_microbatches microbatches itself, so the trainer does not accumulate.
        c.mesh.stage, c.mesh.data = 4, -1
        c.model.pipeline_microbatches = 4
    return c
