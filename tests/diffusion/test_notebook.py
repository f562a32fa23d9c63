"""notebooks/diffusion_quickstart.ipynb runs end to end at tiny size and leaves its figure and table."""  # noqa: E501

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_diffusion_quickstart_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "diffusion_quickstart.ipynb", as_version=4)
    fig = tmp_path / "samplers.png"
    for k, v in dict(
        NETLAB_NB_STEPS="20",
        NETLAB_NB_NFES="5",
        NETLAB_NB_SAMPLES="64",
        NETLAB_ROOT=str(ROOT),
        NETLAB_NB_FIG=str(fig),
        JAX_PLATFORMS="cpu",
        MPLBACKEND="Agg",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    ).items():
        monkeypatch.setenv(k, v)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert fig.stat().st_size > 1000
    out = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    for row in ("| oracle | ddim |", "| trained | dc_solver |", "| oracle | heun |"):
        assert row in out, out
