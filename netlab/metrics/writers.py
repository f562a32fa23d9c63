"""Metric writers: JSONL always, TensorBoard through tensorboardX, PNG images; lead process only.

(clu.metric_writers imports TensorFlow, so netlab keeps its own three small writers.)

`metrics.jsonl` survives kills and resumes: each record is one `os.write` of a whole line on an
O_APPEND descriptor (no buffer that a kill could cut mid-line), and a run that resumes at step S
first rewrites the file (atomically: temporary file + rename) without the records past S, which
it is about to log again, and without a torn last line; so each step appears once. TensorBoard is
told the same with `purge_step`. `read_jsonl` skips a torn last line (a record being written).
"""

import errno
import json
import math
import os
import sys

import numpy as np


def read_jsonl(path) -> list:
    """The records of a metrics.jsonl file; a torn (unterminated or unparsable) last line is
    skipped, so a reader can follow a file that a run is writing."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 2:  # not the last line: a real corruption
                raise
    return out


def truncate_jsonl(path, step: int) -> None:
    """Keep the whole records with a step <= `step` (a resume at `step` logs the rest again)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        original = f.read()
    kept = []
    for line in original.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn line (only the last can be torn)
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    data = b"".join(line + b"\n" for line in kept)
    if data == original:
        return
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


class JsonlWriter:
    def __init__(self, path, resume_step=None):
        self.path = path
        if resume_step is not None:
            truncate_jsonl(path, resume_step)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write_scalars(self, step, scalars):
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        data = (json.dumps(record) + "\n").encode()
        try:
            while data:  # one write for any line of sane length
                data = data[os.write(self.fd, data) :]
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.path) from None

    def write_images(self, step, images):
        pass

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch when torch is not loaded yet.

    tensorboardX's writer module only probes `import torch` (to accept torch tensors, which netlab
    never passes: it logs floats and numpy arrays); with torch installed (the bench extra) that
    probe alone costs seconds of every run's start-up. So torch is hidden for that one import.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError while this entry is None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


class TensorBoardWriter:
    def __init__(self, logdir, resume_step=None):
        SummaryWriter = _summary_writer_class()

        # purge_step: TensorBoard hides the events past the resumed step written by the earlier run
        purge = resume_step + 1 if resume_step is not None and os.path.isdir(logdir) else None
        self.logdir = logdir
        self.writer = SummaryWriter(logdir, purge_step=purge)

    def _check(self):
        """tensorboardX writes from a thread; if a write killed it (disk full), its bounded queue
        would block the loop forever: stop with an OSError instead."""
        events = getattr(self.writer.file_writer, "event_writer", None)
        worker = getattr(events, "_worker", None)
        if worker is not None and not worker.is_alive():
            raise OSError(
                errno.EIO, "the TensorBoard event writer stopped (disk full?)", self.logdir
            )

    def _flush(self):
        try:
            self.writer.flush()
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.logdir) from None

    def write_scalars(self, step, scalars):
        self._check()
        for k, v in scalars.items():
            self.writer.add_scalar(k, float(v), int(step))
        self._flush()

    def write_images(self, step, images):
        self._check()
        for k, img in images.items():
            img = np.asarray(img)
            self.writer.add_image(k, img, int(step), dataformats="HW" if img.ndim == 2 else "HWC")
        self._flush()

    def close(self):
        self._check()
        self.writer.close()


class PngWriter:
    """`<workdir>/<name>/step_<n>.png` for every image a task returns from evaluate()."""

    def __init__(self, workdir):
        self.workdir = workdir

    def write_scalars(self, step, scalars):
        pass

    def write_images(self, step, images):
        """uint8-range images: (H, W) grey or (H, W, 3|4) colour, values clipped to [0, 255].
        Written with Pillow (matplotlib's own image backend), whose import costs a tenth of
        pyplot's, which every evaluating run used to pay for one picture."""
        from PIL import Image

        for name, img in images.items():
            folder = os.path.join(self.workdir, name)
            os.makedirs(folder, exist_ok=True)
            img = np.asarray(img)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            img = np.clip(np.rint(img) if img.dtype.kind == "f" else img, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(folder, f"step_{int(step)}.png"))

    def close(self):
        pass


class MetricWriter:
    """Fans out to JSONL + TensorBoard + PNG on the lead process; a no-op elsewhere."""

    def __init__(self, workdir, lead: bool, tensorboard: bool = True, resume_step=None):
        """`resume_step`: the step the run starts from; records past it are dropped first."""
        self.writers = []
        if lead:
            self.writers = [
                JsonlWriter(os.path.join(workdir, "metrics.jsonl"), resume_step),
                PngWriter(workdir),
            ]
            if tensorboard:
                self.writers.append(TensorBoardWriter(os.path.join(workdir, "tb"), resume_step))

    def write_scalars(self, step, scalars):
        bad = [k for k, v in scalars.items() if not math.isfinite(float(v))]
        for w in self.writers:
            w.write_scalars(step, scalars)
        return bad

    def write_images(self, step, images):
        for w in self.writers:
            w.write_images(step, images)

    def close(self):
        for w in self.writers:
            w.close()
