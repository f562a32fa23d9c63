"""Bytes per training step, read from the compiled HLO: data-parallel vs islands (DiLoCo) at
H in {1, 4, 16, 64}, and QSR's sync periods for a cosine learning rate.

    nice -n 19 python bench/islands_comm.py --out bench/results   # 8 fake CPU devices, ~1 min

Model: the digits ConvNet of configs/classify_digits.py:cpu (batch 128), on 8 devices. Meshes:
data-parallel (data=8); 8 islands of one device (island=8); 2 islands of 4 data-parallel devices
(island=2, data=4). For each, netlab/tools/hlo_comm.py compiles the train step (and in islands
mode the sync step) and sums the bytes per device in every collective. An islands run of period
H takes H - 1 inner steps and one sync step per round (the programs do not depend on H), so its
bytes per step are (H - 1) x inner + sync, over H. "across islands" is the sync step's extra
bytes over an inner step: the all-reduce of the parameter delta.

QSR (Gu et al. 2024): the periods of the 600-step cosine schedule of that config (peak lr 3e-3,
50 warmup steps) under H_base = 4 and alpha = 2 x 3e-3 (H = H_base at the peak lr), as the
Trainer computes them (netlab/train/islands.py `sync_points`).

Writes OUT/islands_comm.json and OUT/islands_comm.md.
"""

import argparse
import json
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from netlab import configlib  # noqa: E402
from netlab.tools import hlo_comm  # noqa: E402
from netlab.train.trainer import Trainer  # noqa: E402

CONFIG = "configs/classify_digits.py:cpu"
HS = (1, 4, 16, 64)
MESHES = {
    "data-parallel (data=8)": {"mesh.data": "8"},
    "8 islands (island=8)": {"mesh.island": "8", "mesh.data": "1"},
    "2 islands x data 4": {"mesh.island": "2", "mesh.data": "4"},
}


def measure() -> dict:
    out = {"config": CONFIG, "devices": jax.device_count(), "meshes": {}}
    for name, over in MESHES.items():
        islands = "mesh.island" in over
        extra = {"islands.sync_every": "4"} if islands else {}
        trainer = Trainer(configlib.load(ROOT / CONFIG, overrides={**over, **extra}))
        comm = hlo_comm.trainer_comm(trainer)
        theta = sum(a.size * 4 for a in jax.tree.leaves(trainer.abstract_state.params))
        row = {"param_bytes": theta, "step": comm["step"]}
        if islands:
            inner, sync = comm["step"]["total"], comm["sync_step"]["total"]
            row["sync_step"] = comm["sync_step"]
            row["across_islands_per_sync"] = sync - inner
            row["per_step"] = {h: ((h - 1) * inner + sync) / h for h in HS}
            row["across_islands_per_step"] = {h: (sync - inner) / h for h in HS}
        else:
            row["per_step"] = {h: float(comm["step"]["total"]) for h in HS}
        out["meshes"][name] = row
        print(name, row["per_step"], flush=True)
    return out


def qsr() -> dict:
    over = {"mesh.island": "8", "mesh.data": "1", "islands.sync_every": "4"}
    cfg = configlib.load(ROOT / CONFIG, overrides={**over, "islands.qsr_alpha": str(2 * 3e-3)})
    syncs = sorted(Trainer(cfg).islands.syncs)
    periods = np.diff([0, *syncs]).tolist()
    return {"h_base": 4, "alpha": 2 * 3e-3, "steps": syncs[-1], "periods": periods}


def markdown(res) -> str:
    lines = [
        "# Islands (DiLoCo) communication per step, from the compiled HLO",
        "",
        f"Digits ConvNet ({CONFIG}), {res['devices']} fake CPU devices; bytes per device per "
        "step, summed over all-reduce / all-gather / reduce-scatter / all-to-all / "
        "collective-permute (netlab/tools/hlo_comm.py). Command: "
        "`nice -n 19 python bench/islands_comm.py --out bench/results`.",
        "",
        "| mesh | params (bytes) | " + " | ".join(f"H={h}" for h in HS) + " |",
        "|---|---|" + "---|" * len(HS),
    ]
    for name, row in res["meshes"].items():
        cells = " | ".join(f"{row['per_step'][h]:,.0f}" for h in HS)
        lines.append(f"| {name} | {row['param_bytes']:,} | {cells} |")
    lines += [
        "",
        "Of which across islands (the delta all-reduce over the island axis: DCN when islands "
        "are slices; in data-parallel training every byte crosses the whole data axis):",
        "",
        "| mesh | " + " | ".join(f"H={h}" for h in HS) + " |",
        "|---|" + "---|" * len(HS),
    ]
    for name, row in res["meshes"].items():
        across = row.get("across_islands_per_step", row["per_step"])
        lines.append(f"| {name} | " + " | ".join(f"{across[h]:,.0f}" for h in HS) + " |")
    lines += ["", "Per program (bytes per device):", ""]
    for name, row in res["meshes"].items():
        sync = row.get("sync_step", {}).get("total")
        extra = f", sync step {sync:,}" if sync is not None else ""
        lines.append(f"- {name}: step {row['step']['total']:,}{extra}")
    q = res["qsr"]
    lines += [
        "",
        f"QSR periods (H_base {q['h_base']}, alpha {q['alpha']:g}, {q['steps']} steps of the "
        f"config's cosine lr): {len(q['periods'])} syncs instead of "
        f"{-(-q['steps'] // q['h_base'])} at fixed H = {q['h_base']}:",
        "",
        "`" + " ".join(map(str, q["periods"])) + "`",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    res = measure()
    res["qsr"] = qsr()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "islands_comm.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(args.out, "islands_comm.md"), "w") as f:
        f.write(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
