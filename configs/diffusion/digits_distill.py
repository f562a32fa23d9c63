"""Consistency distillation (Song et al. 2023) or CTM (Kim et al. 2024) students of a trained
digits DiT (netlab/diffusion/distill_task.py; the methods are consistency.py's and ctm.py's).

    # the teacher (bench/diffusion_nfe_digits.py's recipe: raw parameters, no EMA)
    python -m netlab.main --config configs/diffusion/digits_dit.py:cpu --workdir runs/adjoint_dit \
        --config.model.width=64 --config.model.depth=2 --config.train.steps=1000 \
        --config.train.batch_size=64 --config.optimizer.ema_stds="()" \
        --config.eval.num_samples=500
    python -m netlab.main --config configs/diffusion/digits_distill.py:method=cd \
        --workdir runs/digits_cd --config.distill.teacher_workdir=runs/adjoint_dit
    python -m netlab.main --config configs/diffusion/digits_distill.py:method=ctm \
        --workdir runs/digits_ctm --config.distill.teacher_workdir=runs/adjoint_dit
    # FD at 1 / 2 / 4 calls after 1000 steps (target EMA 0.99): 91.0 / 88.2 / 85.4 with the
    # adaptive DSM weight (default), 92.5 / 90.9 / 89.1 with --config.distill.dsm_balance=fixed
    # --config.distill.dsm_weight=0.003 (bench/results/diffusion_nfe_digits.md)
    # eval/digits_fd at distill.sample_steps student calls (1: one-step generation)

The student is the teacher's network initialised from its weights (its `model` group comes from
the teacher's config.json: this config's `model` and `diffusion` groups are digits_dit's, checked
by the base digits task and unused). Argument: method=cd|ctm and a preset.
"""

import ml_collections

from configs import common
from configs.diffusion import digits_dit

PRESETS = ("cpu", "gpu", "pod")
METHODS = ("cd", "ctm")
VARIANTS = tuple(f"method={m}" for m in METHODS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, method="cd")
    c = digits_dit.get_config(a.preset)
    c.task = "diffusion.digits_distill"
    c.distill = ml_collections.ConfigDict(
        dict(
            method=a.method,  # cd | ctm (checked by the task)
            teacher_workdir="runs/adjoint_dit",  # a configs/diffusion/digits_dit.py run
            num_points=18,  # N of the Karras grid (the CD paper's CIFAR-10 value)
            sigma_min=0.002,
            sigma_max=80.0,
            rho=7.0,
            # target network theta^-: 0 = sg(theta) (the authors' JAX CD); CTM's authors 0.999
            target_ema=0.0 if a.method == "cd" else 0.999,
            sample_steps=1,  # student calls per sample at evaluation
            gamma=0.0,  # CTM's gamma-sampling (0: deterministic jumps)
            ctm_max_teacher_steps=4,  # K: CTM's teacher Heun steps t -> u, k ~ U{1..K}
            # CTM's DSM term: "adaptive" (the authors': dsm_weight x the ratio of the two losses'
            # output-layer gradient norms; it stays at 0.001-0.012 on digits) or "fixed" weight
            # dsm_weight (0.003 there: the CTM loss is ~1 and the EDM-weighted DSM loss ~330)
            dsm_balance="adaptive",
            dsm_weight=1.0,
            p_mean=-1.2,  # CTM's DSM sigma ~ logN(p_mean, p_std) (EDM)
            p_std=1.2,
        )
    )
    c.optimizer.lr = 1e-4
    c.optimizer.warmup_steps = 0
    c.optimizer.schedule = "constant"
    c.optimizer.ema_stds = ()
    c.optimizer.ema_decay = 0.0
    c.train.steps = 1000
    c.train.batch_size = 64
    c.train.eval_every = 500
    c.checkpoint.every = 500
    c.eval.num_samples = 500
    return c
