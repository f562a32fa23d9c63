"""Image datasets prepared by tfds (ArrayRecord files) read with grain; batch = f(seed, step).

Reading: `tfds.data_source(name, split, data_dir, download=False)` (tfds's random-access reader
for the ArrayRecord files of `<data_dir>/<name>/[<config>/]<version>/`, decoding each record with
the dataset's `features.json` in numpy, no TensorFlow), wrapped in a grain `MapDataset`:

    grain.MapDataset.source(src).shuffle(seed=seed).repeat().batch(rows_per_process)

`shuffle(...).repeat(reseed_each_epoch=True)` draws a new permutation of the whole split for every
epoch from the fixed seed, so record position k of the endless stream is a pure function of
(seed, k) (for a given grain version: its index shuffle defines the order). The global batch
of step s is positions [s*B, (s+1)*B); process p of P reads only its contiguous block of B/P of
them, which is element s*P + p of the batched dataset above. A resumed run therefore needs no
iterator state, and the global batch is the same whatever the number of processes. Random
horizontal flips are drawn in numpy from `default_rng([seed, step, tag])`, one bit per global row.

How the peers do it (facts): big_vision (`big_vision/datasets/tfds.py`, `input_pipeline.py`)
reads tfds through tf.data (`builder.as_dataset`), each host its own
`tfds.even_splits(split, jax.process_count())[jax.process_index()]`, with a shuffle buffer
(`reshuffle_each_iteration=True`), `repeat()` and a local batch of `batch_size //
jax.process_count()`. MaxText (`src/MaxText/input_pipeline/_grain_data_processing.py`) builds
`grain.MapDataset.source(grain.ArrayRecordDataSource(files)).shuffle(seed=...).repeat(num_epoch)`,
gives host h the records `[h::host_count]`, turns that into an iterator and batches
`global_batch_size // jax.process_count()`; a resume restores the iterator from a checkpoint item.
Here the grain dataset is indexed by step instead, so the position needs no checkpoint and the
global batch does not depend on the process count (in both peers, a host's rows do).

Preparing: a tfds catalog dataset with `tfds build NAME --data_dir DIR --file_format=array_record`
(building image datasets needs TensorFlow once, reading does not); arrays you already have
(e.g. ImageNet latents) with :func:`prepare_arrays`, or
`python -m netlab.data.tfds_grain from-npz NAME train=FILE.npz --data_dir DIR`.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from netlab.errors import UserError

_FLIP_TAG = 0xF11B


def default_data_dir(data_dir: str = "") -> str:
    """`data_dir`, else `$TFDS_DATA_DIR`, else tfds's default `~/tensorflow_datasets`."""
    return os.path.expanduser(
        data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    )


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            "data.source='tfds_grain' needs tensorflow-datasets and grain; "
            "pip install 'netlab[data]'"
        ) from None
    return tfds


def _prepare_command(tfds, name: str, data_dir: str, split: str) -> str:
    """The command that writes every split of `name` (tfds catalog, or arrays of the user's)."""
    base = name.split("/")[0].split(":")[0]
    if base in tfds.list_builders(with_community_datasets=False):
        return f"`tfds build {name} --data_dir {data_dir} --file_format=array_record`"
    split = split.split("[")[0].split("+")[0]
    return (
        f"`python -m netlab.data.tfds_grain from-npz {name} {split}=FILE.npz [OTHER=FILE.npz ...] "
        f"--data_dir {data_dir}` (not a tfds catalog dataset)"
    )


def open_split(name: str, split: str, data_dir: str = ""):
    """tfds's ArrayRecord data source for `name`/`split`; a one-line UserError if not prepared."""
    tfds = _tfds()
    data_dir = default_data_dir(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (ValueError, NotImplementedError, FileNotFoundError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        cmd = _prepare_command(tfds, name, data_dir, split)
        if why.startswith("Unknown split"):  # the dataset is there, the split is not
            raise UserError(
                f"data.split={split!r}: tfds dataset {name!r} in {data_dir} has no such split "
                f"({why}); pick one of those, or write every split anew with {cmd}"
            ) from None
        folder = os.path.join(data_dir, name.split(":")[0])
        if glob.glob(os.path.join(folder, "**", "dataset_info.json"), recursive=True):
            why = f"{folder} holds no ArrayRecord files ({why})"
        else:
            why = f"never prepared: {folder} has no dataset_info.json"
        raise UserError(
            f"data.name={name!r}: tfds dataset {why}; prepare it with {cmd}, or point "
            f"--config.data.tfds_data_dir at the folder that holds it"
        ) from None


class TfdsGrainSource:
    """Batches of a tfds split, a pure function of (seed, step, process_index, process_count).

    `batch(step, p, P)` -> {image_key: (B/P, ...), label_key: (B/P,)} numpy arrays: rows
    [p*B/P, (p+1)*B/P) of the global batch of `step` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str = "",
        *,
        seed: int,
        batch_size: int,
        keys: tuple = ("image", "label"),
        random_flip: bool = False,
    ):
        try:
            import grain
        except ImportError:
            raise UserError(
                "data.source='tfds_grain' needs grain; pip install 'netlab[data]'"
            ) from None

        self.source = open_split(name, split, data_dir)
        self.seed, self.batch_size, self.keys = int(seed), int(batch_size), tuple(keys)
        self.random_flip = bool(random_flip)
        self._rows = grain.MapDataset.source(self.source).shuffle(seed=self.seed)
        self._rows = self._rows.repeat(reseed_each_epoch=True)  # a new permutation per epoch
        self._batched = {}

    def __len__(self):
        return len(self.source)

    def _select(self, rec):
        return {k: rec[k] for k in self.keys}

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        if self.batch_size % process_count:
            raise UserError(
                f"train.batch_size={self.batch_size} is not divisible by the "
                f"{process_count} processes"
            )
        local = self.batch_size // process_count
        if local not in self._batched:
            self._batched[local] = self._rows.map(self._select).batch(local)
        out = dict(self._batched[local][int(step) * process_count + process_index])
        if self.random_flip:
            flip = np.random.default_rng([self.seed, int(step), _FLIP_TAG]).random(self.batch_size)
            mine = flip[process_index * local : (process_index + 1) * local] < 0.5
            x = out[self.keys[0]]
            out[self.keys[0]] = np.where(mine[:, None, None, None], x[:, :, ::-1], x)
        return out

    def records(self, indices) -> dict:
        """Records at the given indices of the split, unshuffled and unaugmented (evaluation)."""
        recs = [self._select(self.source[int(i)]) for i in indices]
        return {k: np.stack([r[k] for r in recs]) for k in self.keys}


def prepare_arrays(name: str, data_dir: str, splits: dict, version: str = "1.0.0") -> str:
    """Write `splits` ({split: {key: array (N, ...)}}) as tfds dataset `name` in ArrayRecord files.

    A tfds `GeneratorBasedBuilder` does the writing (`download_and_prepare`), so the result is the
    standard on-disk layout `tfds.data_source` reads. Each key becomes a `tfds.features.Tensor` of
    its dtype and per-row shape (no PNG encoding, which would need TensorFlow). A version already
    prepared there is kept as it is (tfds skips it). Returns the dataset's folder."""
    tfds = _tfds()
    first = next(iter(splits.values()))
    features = {k: tfds.features.Tensor(shape=v.shape[1:], dtype=v.dtype) for k, v in first.items()}

    class _Arrays(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        code_path = None  # no source file to find checksums beside (tfds would look it up)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(arrays) for split, arrays in splits.items()}

        def _generate_examples(self, arrays):
            for i in range(len(next(iter(arrays.values())))):
                yield i, {k: v[i] for k, v in arrays.items()}

    _Arrays.name = name
    builder = _Arrays(data_dir=default_data_dir(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return str(builder.data_dir)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m netlab.data.tfds_grain", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser(
        "from-npz", help="write .npz files (x (N,...), label (N,)) as a tfds dataset"
    )
    f.add_argument("name")
    f.add_argument("splits", nargs="+", metavar="SPLIT=FILE.npz")
    f.add_argument(
        "--data_dir", default="", help="default: $TFDS_DATA_DIR or ~/tensorflow_datasets"
    )
    f.add_argument("--image_key", default="image", help="feature name for the npz's `x`")
    a = p.parse_args(argv)
    splits = {}
    for item in a.splits:
        split, _, path = item.partition("=")
        if not path or not os.path.isfile(path):
            raise SystemExit(f"error: {item!r}: expected SPLIT=FILE.npz with an existing file")
        with np.load(path) as z:
            splits[split] = {a.image_key: np.asarray(z["x"]), "label": np.asarray(z["label"])}
    print(prepare_arrays(a.name, a.data_dir, splits))


if __name__ == "__main__":
    main()
