"""The ahead-of-time tool compiles a sharded step and reports per-device memory without training."""

import re

from netlab.tools import aot


def test_aot_reports_sharded_memory(capsys):
    rc = aot.main(
        [
            "--config",
            "configs/classify_digits.py:cpu",
            "--config.mesh.fsdp=8",
            "--config.mesh.data=1",
            "--config.model.hidden=64",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    params = int(re.search(r"parameters\s+([\d,]+)", out).group(1).replace(",", ""))
    state_gib = float(re.search(r"state \(params \+ optimizer \+ EMA\) ([\d.]+) GiB", out).group(1))
    # adamw keeps params + mu + nu: 3 float32 copies; fsdp=8 shards the big hidden kernel 8 ways
    assert state_gib * 2**30 < 3 * 4 * params
    assert "all-gather" in out or "reduce-scatter" in out or "all-reduce" in out


def test_aot_unknown_topology_is_a_clear_error(capsys):
    rc = aot.main(["--config", "configs/classify_digits.py:pod", "--topology", "v5e:4x4"])
    err = capsys.readouterr().err
    assert (
        rc == 1 and err.startswith("error: cannot compile for TPU topology") and "--devices" in err
    )
