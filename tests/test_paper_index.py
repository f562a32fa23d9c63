"""The README's paper index cannot go stale: every row's file, config and test exist, every part it
names resolves in its registry, and every registered part appears in some row."""

import importlib
import pathlib
import re

import pytest

from netlab import configlib, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _p in [
    "netlab/train/task.py",
    "netlab/nn/registries.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "netlab").glob("*/registries.py")),
]:
    importlib.import_module(_p[:-3].replace("/", "."))


def _rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Paper index", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("paper", "") or set(cells[0]) <= set("-: "):
            continue
        rows.append(cells)
    return rows


ROWS = _rows()


def _code(cell):
    return re.findall(r"`([^`]+)`", cell)


def test_index_is_not_empty():
    assert len(ROWS) >= 20


@pytest.mark.parametrize("row", ROWS, ids=[r[0][:40] for r in ROWS])
def test_row_points_at_real_things(row):
    paper, parts, files, configs, tests = row
    for part in _code(parts):
        kind, _, name = part.partition(":")
        assert kind in registry.ALL, f"{paper}: unknown registry {kind!r}"
        registry.ALL[kind].get(name)
    for f in _code(files) + _code(tests):
        assert (ROOT / f.split("::")[0]).exists(), f"{paper}: {f} does not exist"
    for c in _code(configs):
        path, _, arg = c.partition(":")
        assert (ROOT / path).exists(), f"{paper}: {path} does not exist"
        configlib.load(str(ROOT / path), arg or None)


def test_every_registered_part_is_indexed():
    listed = {p for row in ROWS for p in _code(row[1])}
    missing = []
    for kind, reg in registry.ALL.items():
        if kind == "task":
            continue
        for name in reg.names():
            obj = reg.get(name)
            if not getattr(obj, "__module__", "").startswith("netlab"):
                continue
            if f"{kind}:{name}" not in listed:
                missing.append(f"{kind}:{name}")
    assert not missing, f"registered but not in the README paper index: {missing}"
