"""2 processes x 4 fake CPU devices on localhost: equal to one 8-device process, preemption-safe,
and no hang when a peer dies."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.train.helpers import COMPILE_CACHE, DIGITS, ROOT, TINY, cli_args, cli_env, run_cli
from tests.train.test_cli import _final_params

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
# A constant learning rate makes the trajectory independent of train.steps, so a run preempted
# inside a very long schedule can be resumed with the reference's 30 steps.
STEPS = {
    "train.steps": "30",
    "checkpoint.every": "5",
    "checkpoint.async_save": "false",
    "mesh.data": "-1",
    "optimizer.schedule": "constant",
    "optimizer.warmup_steps": "0",
}
KEEP_ALL = {"checkpoint.max_to_keep": "0"}


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(workdir, n=2, devices=4, **overrides):
    port = _port()
    procs = []
    for i in range(n):
        env = cli_env(devices)
        env.update(
            NETLAB_COORDINATOR=f"localhost:{port}",
            NETLAB_NUM_PROCESSES=str(n),
            NETLAB_PROCESS_ID=str(i),
            NETLAB_HEARTBEAT_TIMEOUT="10",
        )
        procs.append(
            subprocess.Popen(
                cli_args(workdir, **{**STEPS, **overrides}),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _finish(procs, timeout=240):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return [p.returncode for p in procs], outs


def _launcher(workdir, n=2, **overrides):
    env = cli_env(1)
    env.update(PYTHON=sys.executable, NETLAB_LOCAL_DEVICES="4")
    args = ["bash", "launch/local_multiprocess.sh", str(n), DIGITS + ":cpu", str(workdir)]
    # The session's compile cache, as `_spawn`'s runs: this first two-process run fills it.
    over = {**TINY, "train.compile_cache": COMPILE_CACHE, **STEPS, **overrides}
    args += [f"--config.{k}={v}" for k, v in over.items()]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process with 8 devices: the run the multi-process ones must reproduce -> (workdir,
    (step, params)). It keeps every checkpoint (5, 10, ..., 30): a later test resumes its step 15
    in two processes (one run fewer to pay for than a separate 15-step single-process run)."""
    workdir = tmp_path_factory.mktemp("mp") / "single"
    proc = run_cli(workdir, devices=8, **STEPS, **KEEP_ALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir, _final_params(workdir)


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mp") / "two"
    proc = _launcher(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, _final_params(workdir)


def test_two_processes_equal_one(reference, two_process):
    (_, (step_a, ref)), (_, (step_b, params)) = reference, two_process
    assert step_a == step_b == 30
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref)
    workdir = two_process[0]
    assert (workdir / "metrics.jsonl").exists() and (workdir / "config.json").exists()
    # each process wrote its own shards; the lead wrote metrics once per log step
    steps = [
        line
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
        if '"train/loss"' in line
    ]
    assert len(steps) == 30 // int(TINY["train.log_every"])


def test_sigterm_to_one_process_saves_everywhere_then_resumes_bit_identical(two_process, tmp_path):
    workdir = tmp_path / "term"
    procs = _spawn(workdir, **{"train.steps": "100000", "checkpoint.every": "1000"})
    deadline = time.time() + 180
    while (
        not (workdir / "ckpt").exists()
        or not (workdir / "metrics.jsonl").exists()
        or (workdir / "metrics.jsonl").stat().st_size == 0
    ):
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    codes, outs = _finish(procs)
    assert codes == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    saved = sorted(int(s) for s in os.listdir(workdir / "ckpt") if s.isdigit())
    assert saved and 0 < saved[-1] < 100000
    assert "preempted: saved step" in outs[0][1]

    # Resume the same workdir with the finite schedule of the reference two-process run.
    assert saved[-1] < 30, "preempted too late to compare with the 30-step reference"
    codes, outs = _finish(_spawn(workdir))
    assert codes == [0, 0], outs[0][1][-2000:]
    assert f"at step {saved[-1]}" in outs[0][1]
    step, params = _final_params(workdir, **{"optimizer.schedule": "constant"})
    assert step == 30
    jax.tree.map(np.testing.assert_array_equal, params, two_process[1][1])


def test_kill9_of_one_process_does_not_hang_the_other(tmp_path):
    workdir = tmp_path / "kill"
    procs = _spawn(workdir, **{"train.steps": "100000", "checkpoint.every": "10"})
    deadline = time.time() + 180
    while not (workdir / "ckpt" / "10" / "commit_success.txt").exists():
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    procs[1].kill()
    t0 = time.time()
    codes, outs = _finish(procs, timeout=120)
    assert codes[0] != 0, "the surviving process should fail, not finish"
    assert time.time() - t0 < 120
    # Rerun both: they resume from the last complete checkpoint.
    codes, outs = _finish(_spawn(workdir, **{"train.steps": "25"}))
    if all(c == 0 for c in codes):
        assert "resumed from" in outs[0][1]
    else:
        pytest.fail(outs[0][1][-2000:])


def test_checkpoint_from_one_process_resumes_in_two(reference, tmp_path):
    # The single-process reference run's checkpoint of step 15 (a copy, its later ones removed).
    workdir = tmp_path / "one_then_two"
    shutil.copytree(reference[0], workdir)
    saved = sorted(int(s) for s in os.listdir(workdir / "ckpt") if s.isdigit())
    assert saved == list(range(5, 31, 5)), saved
    for step in saved[saved.index(15) + 1 :]:
        shutil.rmtree(workdir / "ckpt" / str(step))
    codes, outs = _finish(_spawn(workdir, **KEEP_ALL))
    assert codes == [0, 0], outs[0][1][-2000:]
    assert "resumed from" in outs[0][1] and "at step 15" in outs[0][1]
    step, params = _final_params(workdir)
    assert step == 30
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, reference[1][1]
    )
