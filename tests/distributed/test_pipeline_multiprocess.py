"""A pipeline across processes: the byte LM with dense blocks on mesh stage 4 x data 2, run by 2
processes x 4 fake CPU devices (the stage axis spans the processes, so each process's devices
hold batch rows outside its contiguous block: Trainer.global_batch), ends with the parameters of
the same run in one 8-device process."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.checkpoint import manager as ckptlib
from netlab.train.trainer import Trainer
from tests.train.helpers import COMPILE_CACHE, ROOT, cli_env

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
CONFIG = str(ROOT / "configs" / "moe" / "lm_tiny.py") + ":cpu"
RUN = {
    "mesh.stage": "4",
    "mesh.data": "-1",
    "mesh.expert": "1",
    "model.depth": "4",
    "model.width": "16",
    "model.num_heads": "2",
    "model.mlp_hidden": "32",
    "model.moe_every": "99",  # dense blocks: the pipeline stacks them
    "data.seq_len": "16",
    "data.eval_windows": "8",
    "train.batch_size": "16",
    "train.grad_accum": "4",  # the pipeline's 4 microbatches
    "train.steps": "3",
    "train.log_every": "1",
    "train.eval_every": "0",
    "train.progress": "false",
    "optimizer.warmup_steps": "0",
    "checkpoint.every": "0",
    "checkpoint.async_save": "false",
}


def test_two_process_pipeline_equals_one_process(tmp_path):
    workdir = tmp_path / "pipeline"
    env = cli_env(1)
    env.update(PYTHON=sys.executable, NETLAB_LOCAL_DEVICES="4")
    over = {**RUN, "train.compile_cache": COMPILE_CACHE}
    args = ["bash", "launch/local_multiprocess.sh", "2", CONFIG, str(workdir)]
    args += [f"--config.{k}={v}" for k, v in over.items()]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    trainer = Trainer(configlib.load(CONFIG, overrides=RUN))  # the same 3 steps on 8 devices here
    assert dict(trainer.mesh.shape)["stage"] == 4 and trainer.task.model.pipeline_microbatches == 4
    state = trainer.init_state()
    for step in range(3):
        state, _ = trainer.train_step(state, trainer.global_batch(step))
    params, step = ckptlib.restore_params(str(workdir), trainer.abstract_state.params)
    assert step == 3
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        jax.device_get(params),
        jax.device_get(state.params),
    )
