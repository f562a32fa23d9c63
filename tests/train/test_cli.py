"""The command line end to end: bad input leaves the workdir untouched; kill -9 and SIGTERM resume
bit-identically."""
import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from netlab.checkpoint import manager as ckptlib
from netlab.train.trainer import Trainer
from tests.train.helpers import DIGITS, ROOT, cli_args, cli_env, run_cli, tiny_config

pytestmark = pytest.mark.subprocess


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def _final_params(workdir, **overrides):
    trainer = Trainer(tiny_config(**{"mesh.data": "1", **overrides}), devices=jax.devices()[:1])
    ckpt = ckptlib.Checkpointer(os.path.join(workdir, "ckpt"), every=1, max_to_keep=2)
    try:
        state = ckpt.restore(ckpt.latest_step(), trainer.abstract_state)
        return int(state.step), jax.device_get(state.params)
    finally:
        ckpt.close()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli(workdir, **{"train.steps": "30", "checkpoint.every": "10", "train.eval_every": "15",
                               "train.profile_start": "10", "train.profile_steps": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir, proc


def test_run_leaves_a_complete_workdir(finished_run):
    workdir, proc = finished_run
    for name in ("config.json", "metrics.jsonl", "tb", "ckpt", "confusion"):
        assert (workdir / name).exists(), name
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["train"]["steps"] == 30 and cfg["task"] == "classify.digits"
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/test_accuracy" in line for line in lines)
    assert sorted(os.listdir(workdir / "ckpt")) == ["20", "30"]     # max_to_keep=2
    assert "final: test_accuracy=" in proc.stdout
    assert list((workdir / "profile").rglob("*.xplane.pb")), "profiler trace missing"
    assert list((workdir / "confusion").glob("step_*.png"))


def test_rerun_resumes_instead_of_starting_over(finished_run):
    workdir, _ = finished_run
    proc = run_cli(workdir, **{"train.steps": "35", "checkpoint.every": "10", "train.eval_every": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr and "at step 30" in proc.stderr, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "train/loss" in line][-1] == 35


@pytest.mark.parametrize("extra,needle", [
    ({"train.setps": "3"}, "did you mean 'train.steps'"),
    ({"train.steps": "many"}, "expected int"),
    ({"mesh.data": "3"}, "needs 3 devices"),
    ({"train.batch_size": "33"}, "multiple of 2"),
    ({"model.hidden": "24"}, "different model"),
])
def test_bad_input_is_one_line_and_touches_nothing(finished_run, extra, needle):
    workdir, _ = finished_run
    before = _snapshot(workdir)
    proc = run_cli(workdir, **extra)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-1500:]
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("config", [DIGITS + ":tpu", str(ROOT / "configs" / "nope.py")])
def test_missing_config_or_preset_creates_no_workdir(tmp_path, config):
    proc = run_cli(tmp_path / "new", config=config)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    assert not (tmp_path / "new").exists()


def _start(workdir, **overrides):
    return subprocess.Popen(cli_args(workdir, **overrides), cwd=ROOT, env=cli_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out waiting for the training subprocess"
        time.sleep(0.2)


@pytest.mark.slow
def test_kill9_then_rerun_is_bit_identical(tmp_path):
    steps = {"train.steps": "40", "checkpoint.every": "5", "checkpoint.async_save": "false"}
    reference = run_cli(tmp_path / "ref", **steps)
    assert reference.returncode == 0, reference.stderr[-2000:]

    workdir = tmp_path / "killed"
    proc = _start(workdir, **steps)
    _wait_for(lambda: (workdir / "ckpt" / "15").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    rerun = run_cli(workdir, **steps)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed from" in rerun.stderr

    step_a, ref_params = _final_params(tmp_path / "ref")
    step_b, params = _final_params(workdir)
    assert step_a == step_b == 40
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
    workdir = tmp_path / "term"
    proc = _start(workdir, **{"train.steps": "100000", "checkpoint.every": "1000"})
    _wait_for(lambda: (workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").stat().st_size > 0, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "preempted: saved step" in err
    step, _ = _final_params(workdir)
    assert 0 < step < 100000
