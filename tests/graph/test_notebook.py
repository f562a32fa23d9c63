"""notebooks/graph_karate.ipynb runs end to end (a few steps) and leaves its embedding plot."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_graph_karate_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "graph_karate.ipynb", as_version=4)
    fig = tmp_path / "emb.png"
    monkeypatch.setenv("NETLAB_NB_STEPS", "5")
    monkeypatch.setenv("NETLAB_ROOT", str(ROOT))
    monkeypatch.setenv("NETLAB_NB_FIG", str(fig))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert fig.stat().st_size > 1000
    out = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "34 nodes, 156 directed edges" in out and "test_accuracy" in out
