"""Optax optimizer from `config.optimizer`: adamw/adam/sgd/lion, warmup + decay, clipping, wd masks."""  # noqa: E501

import jax
import optax

from netlab.errors import UserError
from netlab.registry import check_choice, check_range
from netlab.train import adamp, binaryconnect, edm2_optim, hesso

OPTIMIZERS = ("adamw", "adam", "adamax", "sgd", "lion")
# Heo et al. 2021 (netlab/train/adamp.py); optional keys optimizer.delta (0.1), .wd_ratio (0.1)
SCALE_INVARIANT = ("adamp", "sgdp")
# inv_sqrt: EDM2's lr / sqrt(max(t / optimizer.ref_steps, 1)) (netlab/train/edm2_optim.py)
SCHEDULES = ("cosine", "linear", "constant", "inv_sqrt")
WD_MASKS = ("matrices", "all", "none")
# Courbariaux et al. 2015 (netlab/train/binaryconnect.py): optional key optimizer.binaryconnect
BINARYCONNECT = ("none", *binaryconnect.MODES)


def learning_rate(opt_cfg, total_steps: int) -> optax.Schedule:
    peak, warmup = opt_cfg.lr, opt_cfg.warmup_steps
    if opt_cfg.schedule == "inv_sqrt":  # its own warm-up: t counts from 0, not from warmup
        ref = check_range("optimizer.ref_steps", opt_cfg.get("ref_steps", 0), 0, integer=True)
        return edm2_optim.lr_decay(peak, ref, warmup)
    decay_steps = max(total_steps - warmup, 1)
    end = peak * opt_cfg.end_lr_factor
    if opt_cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt_cfg.end_lr_factor)
    elif opt_cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif opt_cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise UserError(
            f"optimizer.schedule={opt_cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}"
        )
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def weight_decay_mask(kind: str):
    if kind == "matrices":
        return lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    if kind == "all":
        return lambda params: jax.tree.map(lambda p: True, params)
    if kind == "none":
        return lambda params: jax.tree.map(lambda p: False, params)
    raise UserError(f"optimizer.wd_mask={kind!r}; choose one of {', '.join(WD_MASKS)}")


def build(opt_cfg, total_steps: int) -> optax.GradientTransformation:
    lr = learning_rate(opt_cfg, total_steps)
    mask = weight_decay_mask(opt_cfg.wd_mask)
    wd = opt_cfg.weight_decay
    name = opt_cfg.name
    if name in ("adam", "adamw") and opt_cfg.get("amsgrad", False):
        # AMSGrad (Reddi et al. 2018) as optax's scale_by_amsgrad: the running max is taken of
        # the bias-corrected second moment (torch.optim's amsgrad keeps the max of the raw one
        # and divides by the current correction, so its first steps are larger)
        parts = [optax.scale_by_amsgrad(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps)]
        if name == "adamw" and wd:
            parts.append(optax.add_decayed_weights(wd, mask=mask))
        core = optax.chain(*parts, optax.scale_by_learning_rate(lr))
    elif name == "adamw":
        core = optax.adamw(
            lr, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps, weight_decay=wd, mask=mask
        )
    elif name == "adam":
        core = optax.adam(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps)
    elif name == "adamax":  # Kingma & Ba 2015, sec. 7.1 (GRAND's authors train with it)
        core = optax.adamax(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps)
    elif name == "lion":
        core = optax.lion(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=wd, mask=mask)
    elif name == "sgd":
        parts = [optax.sgd(lr, momentum=opt_cfg.momentum or None)]
        if wd:
            parts.insert(0, optax.add_decayed_weights(wd, mask=mask))
        core = optax.chain(*parts)
    elif name in SCALE_INVARIANT:
        extra = dict(
            delta=opt_cfg.get("delta", 0.1),
            wd_ratio=opt_cfg.get("wd_ratio", 0.1),
            weight_decay=wd,
            mask=mask,
        )
        if name == "adamp":
            core = adamp.adamp(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps, **extra)
        else:
            core = adamp.sgdp(lr, momentum=opt_cfg.momentum, **extra)
    else:
        check_choice("optimizer.name", name, OPTIMIZERS + SCALE_INVARIANT)
    if opt_cfg.clip_norm > 0:
        core = optax.chain(optax.clip_by_global_norm(opt_cfg.clip_norm), core)
    bc = opt_cfg.get("binaryconnect", "none")
    check_choice("optimizer.binaryconnect", bc, BINARYCONNECT)
    if bc != "none":
        core = binaryconnect.binary_weights(core, bc)
    if opt_cfg.get("hesso_sparsity", 0.0):  # Chen et al. 2023 (netlab/train/hesso.py)
        core = hesso.from_config(core, opt_cfg, total_steps)
    if opt_cfg.get("forced_weight_norm", False):  # EDM2: unit-RMS rows of every `mp_weight`
        core = optax.chain(core, edm2_optim.forced_weight_norm())
    return core
