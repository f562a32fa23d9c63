"""Configs: every file loads with each preset; overrides are typed; typos name the closest key."""

import pathlib

import pytest

from netlab import configlib
from netlab.errors import UserError
from netlab.train import validate
from netlab.train.task import TASKS

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(
    p for p in (ROOT / "configs").rglob("*.py") if p.name not in ("common.py", "__init__.py")
)


def test_there_are_configs():
    assert any(p.name == "classify_digits.py" for p in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_with_every_preset(path):
    presets = configlib.presets(path)
    assert presets, f"{path} declares no PRESETS"
    for preset in presets:
        cfg = configlib.load(path, preset)
        assert callable(TASKS.get(cfg.task)), f"{path}:{preset} names no task"
        assert cfg.is_locked
        validate.config(cfg)  # every shipped setting is within the ranges


def test_override_is_coerced_to_the_field_type():
    cfg = configlib.load(
        "configs/classify_digits.py:cpu",
        overrides={
            "train.steps": "7",
            "optimizer.lr": "1e-2",
            "train.progress": "false",
            "model.channels": "(3, 5)",
        },
    )
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.optimizer.lr == pytest.approx(1e-2) and isinstance(cfg.optimizer.lr, float)
    assert cfg.train.progress is False
    assert tuple(cfg.model.channels) == (3, 5)


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("train.setps", "3", "did you mean 'train.steps'"),
        ("optimzer.lr", "3", "did you mean 'optimizer.lr'"),
        ("train.steps", "abc", "expected int"),
        ("train.steps", "1.5", "expected an int"),
        ("optimizer.lr", "fast", "expected float"),
        ("optimizer.lr", "1e999", "expected a finite float"),
        ("train.progress", "maybe", "expected a bool"),
        ("train", "3", "names a group"),
    ],
)
def test_bad_overrides_are_one_line_errors(key, value, needle):
    with pytest.raises(UserError) as e:
        configlib.load("configs/classify_digits.py:cpu", overrides={key: value})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_preset():
    with pytest.raises(UserError, match="not found"):
        configlib.load("configs/does_not_exist.py")
    with pytest.raises(UserError, match="choose one of: cpu, gpu, pod"):
        configlib.load("configs/classify_digits.py:tpu")


def test_locked_config_rejects_new_keys():
    cfg = configlib.load("configs/classify_digits.py:cpu")
    with pytest.raises(AttributeError):
        cfg.train.new_key = 1
