"""notebooks/diffusion_fewstep.ipynb runs end to end at tiny size: DDNM keeps the measured
pixels exactly and fills the hidden ones closer to the truth than an unconditional sample of
the same prior; CTM's one jump on the Gaussian oracle is closer to the exact ODE endpoint than
one DDIM step."""

import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_diffusion_fewstep_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "diffusion_fewstep.ipynb", as_version=4)
    for k, v in dict(
        NETLAB_NB_DDNM_STEPS="10",
        NETLAB_ROOT=str(ROOT),
        NETLAB_NB_OUT=str(tmp_path),
        JAX_PLATFORMS="cpu",
        MPLBACKEND="Agg",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    ).items():
        monkeypatch.setenv(k, v)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    for name in ("ddnm_digits.png", "fewstep.png"):
        assert (tmp_path / name).stat().st_size > 1000
    out = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert float(re.search(r"max \|A x - y\| = (\S+)", out).group(1)) < 1e-12, out
    ddnm, prior = map(
        float, re.search(r"DDNM (\S+), unconditional prior sample (\S+),", out).groups()
    )
    assert ddnm < 0.8 * prior, out
    ctm1 = float(re.search(r"\| ctm \| (\S+) \|", out).group(1))
    ddim1 = float(re.search(r"\| ddim \| (\S+) \|", out).group(1))
    assert ctm1 < ddim1, out
