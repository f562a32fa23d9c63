"""The command line end to end: a run leaves a complete workdir, a rerun resumes, bad input
leaves the workdir untouched, SIGTERM saves and exits 0. (Faults and kill -9: test_faults.py.)"""

import json
import os
import signal

import pytest

from netlab.metrics.writers import read_jsonl
from tests.train.helpers import (
    DIGITS,
    ROOT,
    error_lines,
    final_params,
    run_cli,
    snapshot,
    start_cli,
    wait_for,
)

pytestmark = pytest.mark.subprocess


def _final_params(workdir, **overrides):
    """Kept for tests/distributed: (step, params) of the newest checkpoint."""
    return final_params(workdir, **overrides)


@pytest.fixture(scope="module")
def finished_run(digits_run):
    workdir, proc, _ = digits_run
    return workdir, proc


def test_run_leaves_a_complete_workdir(finished_run):
    workdir, proc = finished_run
    for name in ("config.json", "metrics.jsonl", "tb", "ckpt", "confusion"):
        assert (workdir / name).exists(), name
    assert not (workdir / "lock").exists()
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["train"]["steps"] == 30 and cfg["task"] == "classify.digits"
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/test_accuracy" in line for line in lines)
    assert sorted(os.listdir(workdir / "ckpt")) == ["20", "30"]  # max_to_keep=2
    assert "final: test_accuracy=" in proc.stdout
    assert list((workdir / "profile").rglob("*.xplane.pb")), "profiler trace missing"
    assert list((workdir / "confusion").glob("step_*.png"))


def test_rerun_resumes_instead_of_starting_over(finished_run):
    workdir, _ = finished_run
    proc = run_cli(
        workdir, **{"train.steps": "35", "checkpoint.every": "10", "train.eval_every": "0"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr and "at step 30" in proc.stderr, proc.stderr[-3000:]
    steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(5, 36, 5))  # each step once
    # Run again, finished: no training, no second final evaluation, the logged one reported.
    before = (workdir / "metrics.jsonl").read_bytes()
    again = run_cli(
        workdir, **{"train.steps": "35", "checkpoint.every": "10", "train.eval_every": "0"}
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished at step 35" in again.stderr, again.stderr[-2000:]
    assert (workdir / "metrics.jsonl").read_bytes() == before
    final = [line for line in proc.stdout.splitlines() if line.startswith("final:")]
    assert final and final == [l for l in again.stdout.splitlines() if l.startswith("final:")]


@pytest.mark.parametrize(
    "extra,needle",
    [
        ({"train.setps": "3"}, "did you mean 'train.steps'"),
        ({"train.steps": "many"}, "expected int"),
        ({"mesh.data": "3"}, "needs 3 devices"),
        ({"train.batch_size": "33"}, "multiple of 2"),
        ({"model.hidden": "24"}, "different model"),
    ],
)
def test_bad_input_is_one_line_and_touches_nothing(finished_run, extra, needle):
    workdir, _ = finished_run
    before = snapshot(workdir)
    proc = run_cli(workdir, **extra)
    assert proc.returncode == 2
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-1500:]
    assert _final_line_free(proc)
    assert snapshot(workdir) == before


def _final_line_free(proc):
    return "Traceback" not in proc.stderr and "final:" not in proc.stdout


@pytest.mark.parametrize("config", [DIGITS + ":tpu", str(ROOT / "configs" / "nope.py")])
def test_missing_config_or_preset_creates_no_workdir(tmp_path, config):
    proc = run_cli(tmp_path / "new", config=config)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
    workdir = tmp_path / "term"
    proc = start_cli(workdir, **{"train.steps": "100000", "checkpoint.every": "1000"})
    wait_for(
        lambda: (
            (workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").stat().st_size > 0
        ),
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "preempted: saved step" in err and "Traceback" not in err
    assert "final:" not in out  # no stale evaluation line
    assert not (workdir / "lock").exists()
    step, _ = final_params(workdir)
    assert 0 < step < 100000
