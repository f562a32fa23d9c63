"""One finished tiny digits run for the whole session (CLI tests and fault tests share it)."""

import shutil

import pytest

from tests.train.helpers import run_cli

RUN = {
    "train.steps": "30",
    "checkpoint.every": "10",
    "train.eval_every": "15",
    "train.profile_start": "10",
    "train.profile_steps": "2",
}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """(workdir, completed process, pristine copy): 30 steps, checkpoints 20 and 30 kept.

    Tests may change `workdir` (the CLI tests resume it); tests that need the run as it finished
    copy `pristine`, which nobody changes.
    """
    base = tmp_path_factory.mktemp("digits")
    proc = run_cli(base / "run", **RUN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.copytree(base / "run", base / "pristine")
    return base / "run", proc, base / "pristine"
