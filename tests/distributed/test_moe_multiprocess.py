"""Expert parallelism across processes and meshes: the MoE LM on 2 processes x 4 devices equals one
8-device process, and an expert=4 checkpoint restores on an expert=2 mesh with the same outputs."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.checkpoint import manager as ckptlib
from netlab.train.trainer import Trainer
from tests.train.helpers import ROOT, cli_env

LM = str(ROOT / "configs" / "moe" / "lm_tiny.py")
SMALL = {
    "model.width": "32",
    "model.depth": "1",
    "model.num_heads": "2",
    "model.mlp_hidden": "64",
    "model.moe.hidden": "64",
    "data.seq_len": "32",
    "data.eval_windows": "8",
    "train.batch_size": "16",
    "train.steps": "8",
    "train.log_every": "4",
    "train.eval_every": "0",
    "train.progress": "false",
    "checkpoint.every": "4",
    "checkpoint.async_save": "false",
    "optimizer.warmup_steps": "2",
}


def _args(workdir, **extra):
    over = {**SMALL, **extra}
    return [
        sys.executable,
        "-m",
        "netlab.main",
        "--config",
        LM + ":cpu",
        "--workdir",
        str(workdir),
    ] + [f"--config.{k}={v}" for k, v in over.items()]


def _final_eval(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "eval/valid_loss" in line][-1]


def _restore(workdir, devices, **mesh):
    cfg = configlib.load(
        LM + ":cpu", overrides={**SMALL, **{f"mesh.{k}": str(v) for k, v in mesh.items()}}
    )
    trainer = Trainer(cfg, devices=devices)
    ckpt = ckptlib.Checkpointer(os.path.join(workdir, "ckpt"), every=1, max_to_keep=2)
    try:
        return trainer, ckpt.restore(ckpt.latest_step(), trainer.abstract_state)
    finally:
        ckpt.close()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_expert_parallel_lm_two_processes_equal_one(tmp_path):
    single = subprocess.run(
        _args(tmp_path / "one"),
        cwd=ROOT,
        env=cli_env(8),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(2):
        env = cli_env(4)
        env.update(
            NETLAB_COORDINATOR=f"localhost:{port}",
            NETLAB_NUM_PROCESSES="2",
            NETLAB_PROCESS_ID=str(i),
        )
        procs.append(
            subprocess.Popen(
                _args(tmp_path / "two"),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:]
    a, b = _final_eval(tmp_path / "one"), _final_eval(tmp_path / "two")
    assert a["step"] == b["step"] == 8
    assert b["eval/valid_loss"] == pytest.approx(a["eval/valid_loss"], rel=1e-4)
    assert b["eval/valid_load_balance"] == pytest.approx(a["eval/valid_load_balance"], rel=1e-4)

    # The 2-process checkpoint restores in this single process, with experts sharded over `expert`.
    trainer, state = _restore(tmp_path / "two", jax.devices(), data=2, expert=4)
    _, ref = _restore(tmp_path / "one", jax.devices(), data=2, expert=4)
    # Cross-process reductions sum in another order; Adam turns that into ~1e-4 absolute drift on
    # near-zero-gradient leaves after 8 steps, so compare on the parameters' scale.
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=5e-4),
        jax.device_get(state.params),
        jax.device_get(ref.params),
    )
    expert_leaves = [
        s.spec for s in jax.tree.leaves(trainer.state_shardings.params) if "expert" in tuple(s.spec)
    ]
    assert expert_leaves, "no parameter is sharded over the expert axis"

    # expert=4 -> expert=2: same parameters, same evaluation.
    _, on2 = _restore(tmp_path / "one", jax.devices(), data=4, expert=2)
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(on2.params), jax.device_get(ref.params)
    )
    t4, s4 = _restore(tmp_path / "one", jax.devices(), data=2, expert=4)
    t2, s2 = _restore(tmp_path / "one", jax.devices(), data=4, expert=2)
    e4, _ = t4.evaluate(s4, str(tmp_path / "eval4"))
    e2, _ = t2.evaluate(s2, str(tmp_path / "eval2"))
    assert e2["valid_loss"] == pytest.approx(e4["valid_loss"], rel=1e-4)
