"""tfds + grain image source on a tiny dataset written in the real tfds on-disk format (a tfds
GeneratorBasedBuilder, ArrayRecord files): epochs are permutations, a resumed run reads the same
batches, two processes split the global batch, errors name the tfds command."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets not installed")
pytest.importorskip("grain", reason="grain not installed (data extra)")

from netlab import configlib  # noqa: E402
from netlab.data import tfds_grain  # noqa: E402
from netlab.errors import UserError  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
N = 10
# Row i is recognisable from its label (= i) and its pixels, which are not left-right symmetric.
IMAGES = (np.arange(N * 4 * 4 * 3).reshape(N, 4, 4, 3) % 251).astype(np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    arrays = {"image": IMAGES, "label": np.arange(N, dtype=np.int64)}
    tfds_grain.prepare_arrays("tiny_images", str(d), {"train": arrays})
    return str(d)


def _source(data_dir, seed=0, batch_size=4, flip=True):
    return tfds_grain.TfdsGrainSource(
        "tiny_images", "train", data_dir, seed=seed, batch_size=batch_size, random_flip=flip
    )


def test_files_are_the_tfds_layout(data_dir):
    folder = pathlib.Path(data_dir) / "tiny_images" / "1.0.0"
    names = {p.name for p in folder.iterdir()}
    assert {"dataset_info.json", "features.json"} <= names
    assert "tiny_images-train.array_record-00000-of-00001" in names
    src = tfds.data_source("tiny_images", split="train", data_dir=data_dir, download=False)
    recs = [src[i] for i in range(len(src))]  # tfds's writer stores them in hashed-key order
    assert sorted(r["label"] for r in recs) == list(range(N))
    for r in recs:
        np.testing.assert_array_equal(r["image"], IMAGES[r["label"]])


def test_each_epoch_is_a_permutation(data_dir):
    src = _source(data_dir, batch_size=4, flip=False)  # 4 does not divide 10: batches span epochs
    stream = np.concatenate([src.batch(s)["label"] for s in range(5)])
    epochs = stream[:N], stream[N:]
    for order in epochs:
        assert sorted(order) == list(range(N))
    assert not np.array_equal(*epochs)  # a new permutation each epoch
    assert not np.array_equal(epochs[0], np.arange(N))  # shuffled
    other = np.concatenate([_source(data_dir, seed=1).batch(s)["label"] for s in range(3)])
    assert not np.array_equal(other[:N], epochs[0])  # the seed decides the order
    b = src.batch(2)
    np.testing.assert_array_equal(b["image"], IMAGES[b["label"]])  # records decode intact


def test_resume_mid_epoch_is_bit_identical(data_dir):
    run = _source(data_dir)
    continuous = [run.batch(s) for s in range(7)]
    resumed = _source(data_dir)  # a fresh process: no iterator state, only (seed, step)
    for s in (5, 3, 6, 4):
        b = resumed.batch(s)
        for k in ("image", "label"):
            assert b[k].tobytes() == continuous[s][k].tobytes()


def test_two_processes_read_disjoint_halves_of_the_global_batch(data_dir):
    src = _source(data_dir, batch_size=4)  # steps 2 and 4 straddle two epochs
    for s in range(5):
        whole = src.batch(s)
        p0, p1 = src.batch(s, 0, 2), src.batch(s, 1, 2)
        for k in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), whole[k])
    src = _source(data_dir, batch_size=N)  # one epoch per step: the halves partition the data
    for s in range(2):
        p0, p1 = src.batch(s, 0, 2)["label"], src.batch(s, 1, 2)["label"]
        assert len(p0) == len(p1) == N // 2 and sorted([*p0, *p1]) == list(range(N))


def test_random_flip_is_a_horizontal_flip_of_some_rows(data_dir):
    flipped = 0
    for s in range(5):
        b = _source(data_dir).batch(s)
        for x, i in zip(b["image"], b["label"]):
            same, mirror = np.array_equal(x, IMAGES[i]), np.array_equal(x, IMAGES[i][:, ::-1])
            assert same != mirror
            flipped += mirror
    assert 0 < flipped < 20


def test_missing_split_and_unprepared_dataset_are_one_line(data_dir, tmp_path):
    with pytest.raises(UserError, match="no such split.*from-npz tiny_images valid=") as err:
        tfds_grain.open_split("tiny_images", "valid", data_dir)
    assert "\n" not in str(err.value) and data_dir in str(err.value)
    empty = str(tmp_path)
    with pytest.raises(UserError, match="never prepared") as err:
        tfds_grain.open_split("cifar10", "train", empty)
    msg = str(err.value)
    assert "\n" not in msg and f"tfds build cifar10 --data_dir {empty}" in msg
    assert "--file_format=array_record" in msg


def _config(data_dir, **over):
    return configlib.load(
        str(ROOT / "configs" / "diffusion" / "cifar10_dit.py"),
        "cpu",
        {
            "data.name": "tiny_images",
            "data.tfds_data_dir": data_dir,
            "data.image_size": 4,
            "train.batch_size": 4,
            **over,
        },
    )


def test_image_task_reads_its_process_rows(data_dir, monkeypatch):
    import jax

    from netlab.diffusion.image_task import ImageDiffusion

    task = ImageDiffusion(_config(data_dir))
    b = task.train_batch(3)
    raw = _source(data_dir).batch(3)
    np.testing.assert_array_equal(b["x"], raw["image"] / np.float32(127.5) - 1)
    np.testing.assert_array_equal(b["label"], raw["label"])
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    mine = task.train_batch(3)  # process 1 of 2 fills rows 2:4, the block the trainer keeps
    np.testing.assert_array_equal(mine["x"][2:], b["x"][2:])
    assert not mine["x"][:2].any() and not mine["label"][:2].any()


def test_imagenet_latent_config_reads_latents_written_from_npz(tmp_path):
    from netlab.diffusion.image_task import ImageDiffusion

    lat = np.random.default_rng(0).standard_normal((6, 8, 8, 4)).astype(np.float32)
    np.savez(tmp_path / "lat.npz", x=lat, label=np.arange(6))
    d = str(tmp_path / "tfds")
    tfds_grain.main(["from-npz", "tiny_latents", f"train={tmp_path / 'lat.npz'}", "--data_dir", d])
    c = configlib.load(
        str(ROOT / "configs" / "diffusion" / "imagenet_latent_dit.py"),
        "cpu",
        {"data.name": "tiny_latents", "data.tfds_data_dir": d, "data.image_size": 8},
    )
    b = ImageDiffusion(c).train_batch(1)  # batch 8 of 6 rows: crosses into the second epoch
    assert b["x"].dtype == np.float32 and b["x"].shape == (8, 8, 8, 4)
    np.testing.assert_array_equal(b["x"], lat[b["label"]] * np.float32(0.18215))


@pytest.mark.slow  # a python -m netlab.main subprocess (jax import): ~5 s
def test_cli_missing_dataset_exits_2_with_one_line(tmp_path):
    empty, workdir = tmp_path / "none", tmp_path / "run"
    empty.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netlab.main",
            "--config",
            str(ROOT / "configs" / "diffusion" / "cifar10_dit.py") + ":cpu",
            "--workdir",
            str(workdir),
            f"--config.data.tfds_data_dir={empty}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"tfds build cifar10 --data_dir {empty}" in lines[0]
    assert not (workdir / "config.json").exists()
