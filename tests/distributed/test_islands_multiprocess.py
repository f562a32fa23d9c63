"""Islands across processes: configs/classify_digits.py:islands (2 DiLoCo islands; the task swapped
for a small MLP regression to keep compiles short) on 2 processes x 4 fake CPU devices, one island
per process as one island per slice on a pod, ends with the parameters of the same run in one
8-device process."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.checkpoint import manager as ckptlib
from netlab.train.trainer import Trainer
from tests.train.helpers import COMPILE_CACHE, DIGITS, ROOT, TINY, cli_env

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
CONFIG = DIGITS + ":islands"
# 6 steps, syncs after 2, 4 and 6 (an inner step, then a sync step, each compiled once).
RUN = {
    **TINY,
    "train.steps": "6",
    "islands.sync_every": "2",
    "checkpoint.every": "0",
    "checkpoint.async_save": "false",
    "mesh.data": "-1",
    "task": "tests.train.test_islands:Regression",  # the digits ConvNet compiles 4x slower
}


def test_two_process_islands_equal_one_process(tmp_path):
    workdir = tmp_path / "islands"
    env = cli_env(1)
    env.update(PYTHON=sys.executable, NETLAB_LOCAL_DEVICES="4")
    over = {**RUN, "train.compile_cache": COMPILE_CACHE}
    args = ["bash", "launch/local_multiprocess.sh", "2", CONFIG, str(workdir)]
    args += [f"--config.{k}={v}" for k, v in over.items()]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The reference: the same 6 steps in this process, on its 8 devices.
    trainer = Trainer(configlib.load(CONFIG, overrides=RUN))
    assert dict(trainer.mesh.shape)["island"] == 2 and trainer.islands.syncs == {2, 4, 6}
    state = trainer.init_state()
    for step in range(6):
        state, _ = trainer.train_step(state, trainer.global_batch(step), step)
    params, step = ckptlib.restore_params(str(workdir), trainer.abstract_state.params)
    assert step == 6
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        jax.device_get(params),
        jax.device_get(state.params),
    )
