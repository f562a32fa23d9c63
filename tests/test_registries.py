"""Every registry: entries resolve, a bad name is one line naming the key and the closest choice,
and through the CLI a bad value of every registry-backed key exits 2 with one line, writing nothing.

The per-pillar walk tests (tests/<pillar>/test_registry_walk.py) build and step every entry.
"""

import importlib
import pathlib

import pytest

from netlab import registry
from netlab.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
REGISTRY_MODULES = ["netlab.train.task", "netlab.nn.registries"] + sorted(
    f"netlab.{p.parent.name}.registries"
    for p in (ROOT / "netlab").glob("*/registries.py")
    if p.parent.name != "nn"
)
for _name in REGISTRY_MODULES:
    importlib.import_module(_name)
KINDS = sorted(registry.ALL)


def test_every_pillar_has_registries():
    assert {"task", "mlp", "sampler", "backbone", "router", "backend"} <= set(KINDS), KINDS
    assert any(
        k.startswith("graph") or k in ("gnn_layer", "graph_model", "layer") for k in KINDS
    ), KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_entries_resolve_and_typos_name_the_closest(kind):
    reg = registry.ALL[kind]
    names = reg.names()
    assert names, f"registry {kind} is empty"
    for name in names:
        assert reg.get(name) is not None
    target = max(names, key=len)
    typo = target[:-1] + ("x" if target[-1] != "x" else "y")
    with pytest.raises(UserError) as e:
        reg.get(typo)
    msg = str(e.value)
    assert "\n" not in msg and reg.key in msg
    if typo not in names:
        assert "did you mean" in msg


def test_import_paths_resolve_and_fail_in_one_line():
    reg = registry.ALL["mlp"]
    assert reg.get("netlab.nn.layers:Mlp") is reg.get("dense")
    for bad in ("netlab.nn.layers:NoSuch", "netlab.no_such_module:X", "netlab.nn.layers:"):
        with pytest.raises(UserError) as e:
            reg.get(bad)
        assert "\n" not in str(e.value) and "model.mlp" in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_value_of_every_registry_key_exits_2_in_one_line(kind, tmp_path, capsys):
    from netlab import main

    reg = registry.ALL[kind]
    assert reg.example, f"registry {kind} names no example config"
    workdir = tmp_path / "run"
    rc = main.main(
        ["--config", reg.example, "--workdir", str(workdir), f"--config.{reg.key}=no_such_{kind}"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and reg.key in err and f"no_such_{kind}" in err, err
    assert not workdir.exists()
