"""Shared fixtures for the trainer tests: a tiny digits config and subprocess helpers."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "classify_digits.py")
TINY = {"model.channels": "(4, 8)", "model.hidden": "16", "train.batch_size": "32", "train.log_every": "5",
        "train.eval_every": "0", "train.progress": "false", "optimizer.warmup_steps": "2"}


def tiny_config(**overrides):
    from netlab import configlib
    return configlib.load(DIGITS + ":cpu", overrides={**TINY, **overrides})


def cli_env(devices=2):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def cli_args(workdir, config=DIGITS + ":cpu", **overrides):
    args = [sys.executable, "-m", "netlab.main", "--config", config, "--workdir", str(workdir)]
    return args + [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]


def run_cli(workdir, config=DIGITS + ":cpu", devices=2, timeout=300, **overrides):
    return subprocess.run(cli_args(workdir, config, **overrides), cwd=ROOT, env=cli_env(devices),
                          capture_output=True, text=True, timeout=timeout)
