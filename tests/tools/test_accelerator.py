"""bench/accelerator.py --tiny: every section runs at toy sizes and records finite numbers, and a
second run resumes (skips the sections already in the JSON)."""

import importlib.util
import json
import math
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "bench_accelerator", ROOT / "bench" / "accelerator.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_has_every_section_with_finite_numbers(tmp_path, capsys):
    acc = _script()
    path = acc.main(["--tiny", "--steps", "1", "--no-pyg", "--out", str(tmp_path)])
    result = json.loads(path.read_text())
    assert set(result) == set(acc.SECTIONS) and all(result[s]["complete"] for s in result)
    env = result["env"]["rows"][0]
    assert env["platform"] == "cpu" and env["versions"]["jax"]
    for name in acc.SECTIONS[1:]:
        section = result[name]
        rows = section["rows"]
        assert rows and not [r for r in rows if "error" in r or "skipped" in r], (name, rows)
        numbers = acc.finite_numbers(rows)
        assert numbers and all(math.isfinite(x) for x in numbers), (name, rows)
    # the cases that time a train step report a positive step time, FLOPs and a finite loss
    steps = [r for s in ("dit", "moe", "graph") for r in result[s]["rows"] if "step_ms" in r]
    assert [r["case"] for r in steps] == ["DiT-B/2", "MoE-LM_ragged_dot", "gcn"]
    assert steps and all(r["step_ms"] > 0 and r["flops_per_step"] > 0 for r in steps)
    # no cuDNN on CPU: said so, not raised; XLA's attention ran
    att = {r["case"]: r for r in result["attention"]["rows"]}
    assert att["L16_cudnn"]["available"] is False and att["L16_xla"]["ms"] > 0
    assert result["graph"]["rows"][0]["nodes"] == 300
    # resumable: a second run skips every complete section and leaves the file as it was
    before = path.read_text()
    capsys.readouterr()
    acc.main(["--tiny", "--out", str(tmp_path), "--sections", "dit", "sampler"])
    out = capsys.readouterr().out
    assert "dit: already in" in out and "sampler: already in" in out
    assert path.read_text() == before
