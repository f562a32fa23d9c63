"""Shared fixtures for the trainer tests: a tiny digits config and subprocess helpers."""

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "classify_digits.py")
TINY = {
    "model.channels": "(4, 8)",
    "model.hidden": "16",
    "train.batch_size": "32",
    "train.log_every": "5",
    "train.eval_every": "0",
    "train.progress": "false",
    "optimizer.warmup_steps": "2",
}


def tiny_config(**overrides):
    from netlab import configlib

    return configlib.load(DIGITS + ":cpu", overrides={**TINY, **overrides})


def cli_env(devices=2):
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    # Cache every program, not only those that took 0.5 s to compile (netlab/train/loop.py): the
    # subprocesses compile the same ~20 small programs, each under 0.5 s at XLA's level 0.
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


# One persistent XLA compile cache for every CLI subprocess of a test session: a cold compile of the
# tiny digits step and evaluation costs more CPU than the run itself. tests/conftest.py names it
# before xdist starts its workers, so they share it; a fresh folder here otherwise.
COMPILE_CACHE = os.environ.get("NETLAB_TEST_COMPILE_CACHE", "")
if not COMPILE_CACHE:
    COMPILE_CACHE = tempfile.mkdtemp(prefix="netlab-test-jax-cache-")
    atexit.register(shutil.rmtree, COMPILE_CACHE, True)


def cli_args(workdir, config=DIGITS + ":cpu", **overrides):
    args = [sys.executable, "-m", "netlab.main", "--config", config, "--workdir", str(workdir)]
    overrides = {**TINY, "train.compile_cache": COMPILE_CACHE, **overrides}
    return args + [f"--config.{k}={v}" for k, v in overrides.items()]


def run_cli(workdir, config=DIGITS + ":cpu", devices=2, timeout=300, **overrides):
    return subprocess.run(
        cli_args(workdir, config, **overrides),
        cwd=ROOT,
        env=cli_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(workdir, **overrides):
    """The CLI on 2 fake devices in the background (stdout/stderr piped)."""
    return subprocess.Popen(
        cli_args(workdir, **overrides),
        cwd=ROOT,
        env=cli_env(2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, proc, poll=0.05, timeout=240):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out waiting for the training subprocess"
        time.sleep(poll)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder` (to show a run wrote nothing)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


def final_params(workdir, step=None, **overrides):
    """(step, params) of a workdir's checkpoint (`step`, default the newest) on 1 device."""
    import jax

    from netlab.checkpoint import manager as ckptlib
    from netlab.train.trainer import Trainer

    trainer = Trainer(tiny_config(**{"mesh.data": "1", **overrides}), devices=jax.devices()[:1])
    ckpt = ckptlib.Checkpointer(os.path.join(workdir, "ckpt"), every=1, max_to_keep=0)
    try:
        state = ckpt.restore(ckpt.latest_step() if step is None else step, trainer.abstract_state)
        return int(state.step), jax.device_get(state.params)
    finally:
        ckpt.close()
