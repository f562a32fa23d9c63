"""notebooks/moe_routing.ipynb executes top to bottom (8 fake devices, asserts all-to-all
inside)."""

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_moe_routing_notebook_runs():
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "moe_routing.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "8 devices" in outputs and "all-to-all" in outputs and "P('expert'" in outputs
