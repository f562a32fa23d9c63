"""Issue 12: no input, signal or fault loses a checkpoint or ends in a traceback.

Each case runs the real command line (in a subprocess where the case is about a process: signals,
kill -9, a failing write; in this process through `netlab.main.main` where a Trainer build is
enough) on copies of the session's finished 30-step digits run (checkpoints 20 and 30).
"""

import errno
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from netlab import main as cli
from netlab.checkpoint import faults
from netlab.checkpoint import manager as ckptlib
from netlab.errors import UserError
from netlab.metrics import writers
from netlab.train import validate
from netlab.train.workdir import WorkdirLock
from tests.train.helpers import (
    DIGITS,
    TINY,
    error_lines,
    final_params,
    run_cli,
    snapshot,
    start_cli,
    tiny_config,
    wait_for,
)

pytestmark = pytest.mark.subprocess
RUN = {"train.steps": "30", "checkpoint.every": "10"}


@pytest.fixture
def copy(digits_run, tmp_path):
    """A private copy of the finished run."""
    shutil.copytree(digits_run[2], tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def reference(digits_run):
    """Parameters of the finished run at step 30: every completed rerun must equal them."""
    step, params = final_params(digits_run[2], 30)
    assert step == 30
    return params


def _main(workdir, capsys, **overrides):
    """The CLI in this process (no compile cache, 8 devices) -> (exit code, stdout, stderr)."""
    args = ["--config", DIGITS + ":cpu", "--workdir", str(workdir)]
    args += [
        f"--config.{k}={v}" for k, v in {**TINY, "train.compile_cache": "none", **overrides}.items()
    ]
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _clean(err, out=""):
    return "Traceback" not in err and "final:" not in out


# --------------------------------------------------------------------------------------------------
# 1. Validation before anything is written.


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("train.steps", 0, "train.steps=0: expected an integer >= 1"),
        ("train.steps", -5, "train.steps=-5"),
        ("train.batch_size", -1, "train.batch_size=-1: expected an integer >= 0"),
        ("train.eval_every", -1, "train.eval_every=-1: expected an integer >= 0"),
        ("train.log_every", -2, "train.log_every=-2"),
        ("checkpoint.every", -1, "checkpoint.every=-1: expected an integer >= 0"),
        ("checkpoint.max_to_keep", -1, "checkpoint.max_to_keep=-1"),
        ("seed", -1, "seed=-1: expected an integer in [0, 4294967295]"),
        ("seed", 2**32, "seed=4294967296"),
        ("optimizer.lr", float("inf"), "optimizer.lr=inf: expected a finite number > 0"),
        ("optimizer.lr", 0.0, "optimizer.lr=0.0"),
        ("optimizer.b2", 1.0, "optimizer.b2=1.0: expected a finite number in [0, 1)"),
        ("optimizer.ema_decay", 1.5, "optimizer.ema_decay=1.5"),
        ("optimizer.ema_stds", (0.05, 0.5), "optimizer.ema_stds=0.5"),
        ("optimizer.ema_stds", (0.05, 0.0501), "must differ"),
        ("optimizer.name", "adamm", "did you mean 'adam"),
        ("mesh.fsdp", 0, "mesh.fsdp=0: expected an integer >= 1 (or -1"),
        ("train.profile_start", -3, "train.profile_start=-3"),
    ],
)
def test_config_ranges(key, value, needle):
    cfg = tiny_config()
    validate.config(cfg)
    cfg.unlock()
    group, _, leaf = key.rpartition(".")
    (cfg[group] if group else cfg)[leaf] = value
    with pytest.raises(UserError) as e:
        validate.config(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_workdir_paths(tmp_path, monkeypatch):
    for bad in ("", "  "):
        with pytest.raises(UserError, match="--workdir is empty"):
            validate.workdir(bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        validate.workdir(tmp_path / "file")
    with pytest.raises(UserError, match="is a file, so the folder cannot be created"):
        validate.workdir(tmp_path / "file" / "run")
    (tmp_path / "run" / "ckpt").mkdir(parents=True)
    assert validate.workdir(tmp_path / "run") == str(tmp_path / "run")
    assert validate.workdir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    # Permission denied (simulated: the suite may run as root, for whom access() always succeeds).
    denied = str(tmp_path / "run" / "ckpt")
    monkeypatch.setattr(os, "access", lambda p, mode: os.fspath(p) != denied)
    with pytest.raises(UserError, match="ckpt is not writable"):
        validate.workdir(tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_parent_is_one_line(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        code, _, err = _main(parent / "run", capsys)
    finally:
        parent.chmod(0o755)
    assert code == 2 and "not writable" in error_lines(err)[0]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--workdir", ""], "--workdir is empty"),
        (["--config.optimizer.lr=1e999"], "expected a finite float"),
        (["--config.train.steps=0"], "train.steps=0"),
        (["--config.train.batch_size=0"], "this task trains on mini-batches"),
    ],
)
def test_cli_bad_values_write_nothing(tmp_path, capsys, argv, needle):
    args = ["--config", DIGITS + ":cpu", "--workdir", str(tmp_path / "new")] + argv
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and needle in error_lines(err)[0], err
    assert not (tmp_path / "new").exists()


def test_lower_steps_stop_with_one_line(copy, capsys):
    before = snapshot(copy)
    for steps in ("15",):
        code, out, err = _main(copy, capsys, **{"train.steps": steps})
        assert code == 2 and _clean(err, out)
        assert f"train.steps={steps} is below step 30" in error_lines(err)[0]
    assert snapshot(copy) == before  # no ckpt/15, nothing deleted


def test_checkpointer_never_saves_below_the_newest(copy):
    ckpt = ckptlib.Checkpointer(copy / "ckpt", every=10, max_to_keep=2)
    try:
        assert ckpt.save(30, None, {}, force=True) is False  # already there: a no-op
        with pytest.raises(RuntimeError, match="below the newest"):
            ckpt.save(20, None, {}, force=True)
        assert ckpt.save(31, None, {}) is False  # not a multiple of every
    finally:
        ckpt.close()
    assert sorted(os.listdir(copy / "ckpt")) == ["20", "30"]


# --------------------------------------------------------------------------------------------------
# 3. Restore that degrades gracefully.


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"optimizer.name": "sgd"}, "a different optimizer state"),
        ({"optimizer.ema_decay": "0.999"}, "other EMA slots"),
        ({"optimizer.clip_norm": "1.0"}, "opt_state/"),
    ],
)
def test_incompatible_train_state_names_keys_and_touches_nothing(copy, capsys, overrides, needle):
    before = snapshot(copy)
    code, out, err = _main(copy, capsys, **{**RUN, "train.steps": "40", **overrides})
    assert code == 2 and _clean(err, out), err
    assert needle in error_lines(err)[0]
    assert snapshot(copy) == before  # config.json, tb/ and metrics untouched


@pytest.mark.slow
def test_truncated_newest_checkpoint_is_moved_aside(copy, reference):
    params = copy / "ckpt" / "30" / "params" / "ocdbt.process_0" / "d"
    biggest = max(params.iterdir(), key=lambda p: p.stat().st_size)
    os.truncate(biggest, 10)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 35, "train/lo')  # a torn record of a killed run
    proc = run_cli(copy, **RUN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "checkpoint step 30 in" in proc.stderr and "unreadable" in proc.stderr
    assert "resumed from" in proc.stderr and "at step 20" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(copy / "ckpt")) == ["20", "30", "unreadable-30"]
    step, got = final_params(copy)
    assert step == 30
    jax.tree.map(np.testing.assert_array_equal, got, reference)
    steps = [r["step"] for r in writers.read_jsonl(copy / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(5, 31, 5))


# --------------------------------------------------------------------------------------------------
# 2. + 4. The workdir lock, signals.


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_names_the_holder_and_takes_over_a_dead_one(tmp_path):
    lock = WorkdirLock(str(tmp_path / "run")).acquire()
    assert (tmp_path / "run" / "lock").exists()
    with pytest.raises(UserError) as e:
        WorkdirLock(str(tmp_path / "run")).acquire()
    message = str(e.value)
    assert f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "started 2" in message and "\n" not in message
    lock.release()
    assert not (tmp_path / "run").exists()  # it created the folder and wrote nothing

    (tmp_path / "w").mkdir()
    holder = {"host": socket.gethostname(), "pid": _dead_pid(), "time": time.time(), "token": "x"}
    (tmp_path / "w" / "lock").write_text(json.dumps(holder))
    notices = []
    lock = WorkdirLock(str(tmp_path / "w")).acquire(notices.append)
    assert len(notices) == 1 and "took over the lock of a run that is gone" in notices[0]
    assert json.loads((tmp_path / "w" / "lock").read_text())["pid"] == os.getpid()
    lock.release()
    holder["host"] = "elsewhere"
    (tmp_path / "w" / "lock").write_text(json.dumps(holder))
    with pytest.raises(UserError, match="if that run is gone, delete"):
        WorkdirLock(str(tmp_path / "w")).acquire()


def _caught(pid, signum):
    """Whether process `pid` has a handler for `signum` (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_during_start_up(tmp_path, signum, code):
    workdir = tmp_path / "run"
    proc = start_cli(workdir, **RUN)
    deadline = time.time() + 60
    while not _caught(proc.pid, signal.SIGTERM):  # our handlers are in (SIGINT with SIGTERM)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.002)
    proc.send_signal(signum)  # now it is importing JAX / loading the config
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"stopped: {signal.Signals(signum).name} during start-up" in err and _clean(err, out)
    assert not workdir.exists()


@pytest.mark.slow
def test_sigint_saves_and_exits_130_and_a_second_run_is_refused(tmp_path, capsys):
    workdir = tmp_path / "run"
    proc = start_cli(workdir, **{"train.steps": "100000", "checkpoint.every": "0"})
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, proc)
    before = snapshot(workdir / "ckpt")
    code, out, err = _main(workdir, capsys, **{"train.steps": "100000"})
    assert code == 2 and "is in use by another run" in error_lines(err)[0]
    assert f"pid {proc.pid}" in err and snapshot(workdir / "ckpt") == before
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: saved step" in err and _clean(err, out)
    saved = int(err.split("interrupted: saved step ")[1].split()[0])
    assert os.listdir(workdir / "ckpt") == [str(saved)] and not (workdir / "lock").exists()
    steps = [r["step"] for r in writers.read_jsonl(metrics)]
    assert steps == sorted(set(steps)) and steps[-1] <= saved


# --------------------------------------------------------------------------------------------------
# 4. A failing write (disk full): simulated by a file-size limit, so the kernel fails the writes
# of Orbax's C++ writer (EFBIG, handled like ENOSPC / EDQUOT).


@pytest.mark.slow
def test_failing_writes_keep_the_last_checkpoint_and_rerun_resumes(copy):
    proc = start_cli(copy, **{**RUN, "train.steps": "40", "train.compile_cache": "none"})
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (20_000, 20_000))  # before it imports JAX
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]
    assert error_lines(err) == [line for line in err.splitlines() if line.strip()][-1:], err[-3000:]
    assert "could not write the checkpoint of step 40" in err
    assert "step 30 is the newest complete checkpoint" in err and _clean(err, out)
    assert {"20", "30"} <= set(os.listdir(copy / "ckpt"))
    assert not (copy / "lock").exists()
    # "Free space" (lift the limit) and rerun: it resumes from step 30.
    rerun = run_cli(copy, **{**RUN, "train.steps": "40"})
    assert rerun.returncode == 0 and "at step 30" in rerun.stderr, rerun.stderr[-2000:]
    assert sorted(os.listdir(copy / "ckpt")) == ["30", "40"]


# --------------------------------------------------------------------------------------------------
# 7. kill -9 at random moments during saves, then rerun: bit-identical to the run never killed.

TRIALS = int(os.environ.get("NETLAB_FAULT_TRIALS", "1"))  # more: NETLAB_FAULT_TRIALS=10


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_during_saves_then_rerun_is_bit_identical(tmp_path, reference, trial):
    rng = random.Random(1234 + trial)
    run = {
        **RUN,
        "checkpoint.every": "1",
        "checkpoint.max_to_keep": "2",
        "checkpoint.async_save": rng.choice(["true", "false"]),
    }
    workdir = tmp_path / "run"
    proc = start_cli(workdir, **run)
    wait_for(lambda: (workdir / "ckpt").exists() and os.listdir(workdir / "ckpt"), proc, 0.01)
    time.sleep(rng.uniform(0.0, 0.5))  # 30 steps, each saved, take longer
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    # The rerun saves every 10 steps: its restore (a torn newest save, the dead run's lock) is the
    # same, and ~25 saves fewer (~2 s each on a busy 2-core host) are not what this case tests.
    rerun = run_cli(workdir, **{**run, "checkpoint.every": "10"})
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Traceback" not in rerun.stderr
    assert "took over the lock of a run that is gone" in rerun.stderr
    step, params = final_params(workdir)
    assert step == 30
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    steps = [r["step"] for r in writers.read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(5, 31, 5))


# --------------------------------------------------------------------------------------------------
# 5. Metrics that survive resumes.


def test_metrics_resume_drops_replayed_steps_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = writers.JsonlWriter(str(path))
    for step in (5, 10, 15):
        w.write_scalars(step, {"loss": step})
    w.close()
    with open(path, "a") as f:
        f.write('{"step": 20, "lo')  # killed mid-record
    assert [r["step"] for r in writers.read_jsonl(path)] == [5, 10, 15]
    w = writers.JsonlWriter(str(path), resume_step=10)  # resumed from checkpoint 10
    w.write_scalars(15, {"loss": 0.5})
    w.close()
    assert [(r["step"], r["loss"]) for r in writers.read_jsonl(path)] == [
        (5, 5),
        (10, 10),
        (15, 0.5),
    ]
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError):  # corruption inside the file is an error
        writers.read_jsonl(path)


def test_storage_reason():
    assert faults.storage_reason(OSError(errno.ENOSPC, "x")) == os.strerror(errno.ENOSPC)
    tensorstore = ValueError("OUT_OF_RANGE: ... Failed to write: [os_error_code='122']")
    assert faults.storage_reason(tensorstore) == os.strerror(errno.EDQUOT)
    assert faults.storage_reason(ValueError("shape mismatch")) is None
