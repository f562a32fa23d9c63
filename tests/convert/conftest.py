"""The converter tests compare with the PyTorch peers (the `bench` extra: torch, diffusers,
torch_geometric) and are marked `peers`; without the peers every test here is skipped with the
reason (the fixture below, autouse). Test modules import torch inside their tests or fixtures."""

import pytest

WHY = "the peers tests need {}: pip install -e '.[bench]'"


@pytest.fixture(autouse=True, scope="session")
def peers():
    """(torch, diffusers, torch_geometric), or skip."""
    return tuple(
        pytest.importorskip(name, reason=WHY.format(name))
        for name in ("torch", "diffusers", "torch_geometric")
    )
