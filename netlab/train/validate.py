"""Range checks of the common config groups and of the workdir, before anything is written.

`config(cfg)` checks seed, train, optimizer, mesh, sharding and checkpoint (the groups every config
gets from `configs/common.py:base_config`); `workdir(path)` checks that the run folder is, or can
be created as, a writable folder. Each failure is one `UserError` line naming the key and the
allowed range. Task-specific groups (model, data, ...) are checked by their tasks.
"""

import math
import os

from netlab.errors import UserError
from netlab.registry import check_choice

SEED_MAX = 2**32 - 1  # jax.random.key drops the high bits of larger seeds (without x64)
EMA_STD_MAX = 0.3  # EDM2 Eq. 4 has no real gamma > -1 for sigma_rel above ~0.3003
WRITTEN = ("ckpt", "tb", "config.json", "metrics.jsonl", "lock")  # what a run writes in a workdir


def _span(lo, hi, lo_open, hi_open):
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def number(key, value, lo=None, hi=None, *, integer=False, lo_open=False, hi_open=False, note=""):
    """`value` if it is a finite number (an int when `integer`) within the bounds, else a
    one-line UserError naming `key` and the allowed range."""
    kind = "an integer" if integer else "a finite number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        span = _span(lo, hi, lo_open, hi_open) if (lo, hi) != (None, None) else ""
        raise UserError(f"{key}={value!r}: expected {kind} {span}{note}".rstrip())
    return value


def _group(cfg, name):
    return cfg[name] if name in cfg else {}


def config(cfg) -> None:
    """Check the common groups of `cfg` (a loaded ConfigDict); raise a one-line UserError."""
    if "seed" in cfg:
        number("seed", cfg.seed, 0, SEED_MAX, integer=True)
    _train(_group(cfg, "train"))
    _optimizer(_group(cfg, "optimizer"))
    for axis, size in _group(cfg, "mesh").items():
        if size != -1:
            number(f"mesh.{axis}", size, 1, integer=True, note=" (or -1: the remaining devices)")
    sharding = _group(cfg, "sharding")
    if "fsdp_min_bytes" in sharding:
        number("sharding.fsdp_min_bytes", sharding.fsdp_min_bytes, 0, integer=True)
    _checkpoint(_group(cfg, "checkpoint"))


def _train(t):
    ints = {
        "steps": (1, ""),
        "batch_size": (0, " (0: the whole data set each step, for full-batch tasks)"),
        "grad_accum": (1, ""),
        "log_every": (0, " (0: log the last step only)"),
        "eval_every": (0, " (0: evaluate at the end only)"),
        "profile_start": (-1, " (-1: no profile)"),
        "profile_steps": (1, ""),
    }
    for key, (lo, note) in ints.items():
        if key in t:
            number(f"train.{key}", t[key], lo, integer=True, note=note)
    if "compute_dtype" in t:
        from netlab.nn import precision

        precision.from_config(t)


def _optimizer(o):
    from netlab.train import optim

    checks = {
        "lr": dict(lo=0, lo_open=True),
        "warmup_steps": dict(lo=0, integer=True),
        "end_lr_factor": dict(lo=0, hi=1),
        "b1": dict(lo=0, hi=1, hi_open=True),
        "b2": dict(lo=0, hi=1, hi_open=True),
        "eps": dict(lo=0),
        "momentum": dict(lo=0, hi=1, hi_open=True),
        "weight_decay": dict(lo=0),
        "clip_norm": dict(lo=0, note=" (0: no clipping)"),
        "ema_decay": dict(lo=0, hi=1, hi_open=True, note=" (0: off)"),
    }
    for key, kw in checks.items():
        if key in o:
            number(f"optimizer.{key}", o[key], **kw)
    for key, choices in (
        ("name", optim.OPTIMIZERS + optim.SCALE_INVARIANT),
        ("schedule", optim.SCHEDULES),
        ("wd_mask", optim.WD_MASKS),
        ("binaryconnect", optim.BINARYCONNECT),
    ):
        if key in o:
            check_choice(f"optimizer.{key}", o[key], choices)
    if o.get("amsgrad", False) and o.get("name") not in ("adam", "adamw"):
        raise UserError(
            f"optimizer.amsgrad=True with optimizer.name={o.get('name')!r}: AMSGrad is a variant "
            "of adam / adamw; set optimizer.name=adamw or optimizer.amsgrad=False"
        )
    stds = tuple(o.get("ema_stds", ()) or ())
    for std in stds:
        number(
            "optimizer.ema_stds",
            std,
            0,
            EMA_STD_MAX,
            lo_open=True,
            note=" for every entry (EDM2 relative std)",
        )
    if len({f"{float(s):.3f}" for s in stds}) != len(stds):
        raise UserError(
            f"optimizer.ema_stds={stds!r}: entries must differ in their first three "
            "decimals (each names one EMA slot, ema_std<value>)"
        )


def _checkpoint(c):
    if "every" in c:
        number(
            "checkpoint.every",
            c.every,
            0,
            integer=True,
            note=" (0: save only at the end and when stopped)",
        )
    if "max_to_keep" in c:
        number("checkpoint.max_to_keep", c.max_to_keep, 0, integer=True, note=" (0: keep all)")
    if "init_from" in c and not isinstance(c.init_from, str):
        raise UserError(f"checkpoint.init_from={c.init_from!r}: expected a path (or '' for none)")


def workdir(path) -> str:
    """The absolute workdir; a UserError unless it is (or can be created as) a writable folder."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise UserError("--workdir is empty; name a folder for the run, e.g. --workdir runs/digits")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--workdir {path} is a file, not a folder; pass a folder for the run")
    if os.path.isdir(path):
        _writable(path, "--workdir")
        for name in WRITTEN:
            entry = os.path.join(path, name)
            if os.path.exists(entry):
                if name in ("ckpt", "tb") and not os.path.isdir(entry):
                    raise UserError(
                        f"{entry} is a file, but a run keeps a folder there; move it away"
                    )
                _writable(entry, "--workdir")
        return path
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"--workdir {path}: {parent} is a file, so the folder cannot be created")
    _writable(parent, f"--workdir {path}: its parent")
    return path


def _writable(path, what):
    mode = os.W_OK | (os.X_OK if os.path.isdir(path) else 0)
    if not os.access(path, mode):
        raise UserError(
            f"{what} {path} is not writable (permission denied); pick a folder you can "
            "write to, or fix its permissions"
        )
