"""Metric writers: JSONL always, TensorBoard through tensorboardX, PNG images; lead process only.

(clu.metric_writers imports TensorFlow, so netlab keeps its own three small writers.)
"""
import json
import math
import os

import numpy as np


class JsonlWriter:
    def __init__(self, path):
        self.file = open(path, "a", buffering=1)

    def write_scalars(self, step, scalars):
        self.file.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")

    def write_images(self, step, images):
        pass

    def close(self):
        self.file.close()


class TensorBoardWriter:
    def __init__(self, logdir):
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(logdir)

    def write_scalars(self, step, scalars):
        for k, v in scalars.items():
            self.writer.add_scalar(k, float(v), int(step))
        self.writer.flush()

    def write_images(self, step, images):
        for k, img in images.items():
            img = np.asarray(img)
            self.writer.add_image(k, img, int(step), dataformats="HW" if img.ndim == 2 else "HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class PngWriter:
    """`<workdir>/<name>/step_<n>.png` for every image a task returns from evaluate()."""

    def __init__(self, workdir):
        self.workdir = workdir

    def write_scalars(self, step, scalars):
        pass

    def write_images(self, step, images):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        for name, img in images.items():
            folder = os.path.join(self.workdir, name)
            os.makedirs(folder, exist_ok=True)
            img = np.asarray(img)
            plt.imsave(os.path.join(folder, f"step_{int(step)}.png"), img, cmap="gray" if img.ndim == 2 else None,
                       vmin=0, vmax=255)

    def close(self):
        pass


class MetricWriter:
    """Fans out to JSONL + TensorBoard + PNG on the lead process; a no-op elsewhere."""

    def __init__(self, workdir, lead: bool, tensorboard: bool = True):
        self.writers = []
        if lead:
            self.writers = [JsonlWriter(os.path.join(workdir, "metrics.jsonl")), PngWriter(workdir)]
            if tensorboard:
                self.writers.append(TensorBoardWriter(os.path.join(workdir, "tb")))

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
