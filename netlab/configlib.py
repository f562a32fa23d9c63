"""Load experiment configs: `path[:preset]` plus `a.b=v` overrides -> a locked ConfigDict.

The same function serves the CLI (`--config file.py:preset --config.a.b=v`), notebooks and tests.
Overrides are coerced to the type of the field they replace; unknown keys and wrong types fail with
a one-line `UserError` that names the closest valid key.
"""

import ast
import difflib
import importlib.util
import json
import math
import pathlib
import sys

import ml_collections

from netlab.errors import UserError


def _import_config_module(path: pathlib.Path):
    if not path.is_file():
        raise UserError(
            f"config file {str(path)!r} not found; pass an existing configs/<family>/<name>.py"
        )
    # Config files import `configs.common`: make the folder holding `configs/` importable.
    for parent in path.resolve().parents:
        if parent.name == "configs":
            if str(parent.parent) not in sys.path:
                sys.path.insert(0, str(parent.parent))
            break
    name = "netlab_config_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UserError(f"{path} defines no get_config(arg); every config file needs one")
    return module


def presets(path) -> tuple:
    """Every argument a config file declares: its PRESETS, then its VARIANTS (e.g. "model=gat,data=cora")."""  # noqa: E501
    module = _import_config_module(pathlib.Path(path))
    return tuple(getattr(module, "PRESETS", ())) + tuple(getattr(module, "VARIANTS", ()))


def _flat_keys(cfg, prefix=""):
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        yield full
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat_keys(value, full + ".")


def _coerce(key, text, old):
    """Turn the command-line text for `key` into the type of the value it replaces."""
    if not isinstance(text, str):
        value = text
    elif isinstance(old, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise UserError(f"--config.{key}={text}: expected a bool (true/false)")
        return text.lower() in ("true", "1")
    elif isinstance(old, (int, float)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UserError(
                f"--config.{key}={text}: expected {type(old).__name__}, e.g. --config.{key}={old!r}"
            ) from None
    elif isinstance(old, (tuple, list)):
        try:
            value = ast.literal_eval(text) if text.strip() else ()
        except (ValueError, SyntaxError):
            raise UserError(
                f"--config.{key}={text}: expected a tuple literal, e.g. --config.{key}='(1, 2)'"
            ) from None
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return tuple(value)
    elif old is None:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
    else:
        value = text
    if isinstance(old, bool) and not isinstance(value, bool):
        raise UserError(f"--config.{key}={text}: expected a bool (true/false)")
    if isinstance(old, int) and not isinstance(old, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"--config.{key}={text}: expected an int, e.g. --config.{key}={old}")
    if isinstance(old, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UserError(f"--config.{key}={text}: expected a float, e.g. --config.{key}={old}")
    if isinstance(old, float):
        value = float(value)
        if not math.isfinite(value) and math.isfinite(old):
            raise UserError(
                f"--config.{key}={text}: expected a finite float, e.g. --config.{key}={old}"
            )
    return value


def parse_overrides(args) -> dict:
    """``["--config.a.b=v", ...]`` (the arguments a CLI's argparse left over) -> ``{"a.b": "v"}``;
    anything else is a one-line UserError."""
    overrides = {}
    for item in args:
        if not item.startswith("--config."):
            raise UserError(
                f"unexpected argument {item!r}; overrides look like --config.train.steps=100"
            )
        key, sep, value = item[len("--config.") :].partition("=")
        if not sep:
            raise UserError(f"{item!r} has no value; write --config.{key}=VALUE")
        overrides[key] = value
    return overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict) -> None:
    """Set dotted keys on a locked config, with type checks and did-you-mean errors."""
    valid = list(_flat_keys(cfg))
    for key, text in overrides.items():
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; valid top-level keys: {', '.join(cfg.keys())}"
            )
            raise UserError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        old = node[leaf]
        if isinstance(old, ml_collections.ConfigDict):
            raise UserError(
                f"--config.{key} names a group; set one of its fields, e.g. --config.{key}.{next(iter(old.keys()))}=..."  # noqa: E501
            )
        value = _coerce(key, text, old)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"--config.{key}={text}: wrong type ({e})") from None


def load(path, preset=None, overrides=None) -> ml_collections.ConfigDict:
    """Config from `path` (optionally "file.py:preset"), with `overrides` {"a.b": value-or-text}."""
    path = str(path)
    if preset is None and ":" in path:
        path, preset = path.rsplit(":", 1)
    module = _import_config_module(pathlib.Path(path))
    declared = tuple(getattr(module, "PRESETS", ()))
    variants = hasattr(module, "VARIANTS")  # variant configs parse "k=v,...,preset" themselves
    if preset and declared and not variants and preset not in declared:
        raise UserError(f"{path} has no preset {preset!r}; choose one of: {', '.join(declared)}")
    try:
        cfg = module.get_config(preset or None)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    cfg = ml_collections.ConfigDict(cfg)
    cfg.lock()
    apply_overrides(cfg, dict(overrides or {}))
    return cfg


def to_json(cfg) -> str:
    return json.dumps(json.loads(cfg.to_json()), indent=2, sort_keys=True)


def import_task(cfg, policy=None):
    """Instantiate the task named by `cfg.task` (a registered name or "package.module:Class")."""
    from netlab.train.trainer import build_task

    return build_task(cfg, policy)


def data_dir(cfg_value: str = "") -> str:
    """The first folder datasets are looked up in: the config's value, else $NETLAB_DATA_DIR, else
    the download cache (``netlab.data.registry``; missing files are then downloaded into it)."""
    from netlab.data import registry

    return str(registry.search_dirs(cfg_value or None)[0][1])
