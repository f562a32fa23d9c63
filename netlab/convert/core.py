"""What every converter shares: reading a state dict key by key, and the converted result.

A PyTorch state dict is a flat {dotted name: tensor}. `Keys` hands out one key at a time, checks
its shape against the shape the netlab model needs, and remembers which keys were used, so a
missing, mis-shaped or unexpected key is one `UserError` line that names the key, the shapes and
the fix. Values may be torch tensors (any float dtype; bfloat16 / float16 are widened) or numpy
arrays; torch itself is never imported here.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from netlab.errors import UserError

# Book-keeping buffers PyTorch stores beside the weights; they carry nothing netlab needs.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def to_numpy(value) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (floats as float32)."""
    if hasattr(value, "detach"):  # a torch tensor: no torch import needed
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    out = np.asarray(value)
    return out.astype(np.float32) if np.issubdtype(out.dtype, np.floating) else out


class Keys:
    """The keys of one state dict, taken one at a time.

    what: the source, for messages (e.g. "PyG GATConv state dict"). fix: what a user whose file
    does not fit should do, appended to every missing / unexpected-key message.
    """

    def __init__(self, state_dict, what: str, fix: str = ""):
        self.sd = dict(state_dict)
        self.what, self.fix = what, fix
        self.used = {k for k in self.sd if k.endswith(IGNORED_SUFFIXES)}

    def __contains__(self, key) -> bool:
        return key in self.sd

    def shape(self, key) -> tuple:
        """The shape stored under `key` (missing: the one-line error)."""
        self._need(key)
        return tuple(np.shape(self.sd[key]))

    def take(self, key: str, shape=None, hint: str = "") -> np.ndarray:
        """The array under `key`, checked against `shape` (a tuple; None entries match any size)."""
        self._need(key)
        value = to_numpy(self.sd[key])
        if shape is not None and not _fits(value.shape, shape):
            want = tuple("*" if s is None else int(s) for s in shape)
            raise UserError(
                f"{self.what}: key {key!r} has shape {tuple(value.shape)}, expected {want} "
                f"from the other keys{'; ' + hint if hint else ''}; convert an unmodified "
                "state_dict() of one model"
            )
        self.used.add(key)
        return value

    def _need(self, key):
        if key not in self.sd:
            raise UserError(
                f"{self.what}: key {key!r} is missing ({len(self.sd)} keys found)"
                f"{'; ' + self.fix if self.fix else ''}"
            )

    def prefixed(self, prefix: str) -> list:
        """The keys that start with `prefix`, in their stored order."""
        return [k for k in self.sd if k.startswith(prefix)]

    def skip(self, *keys):
        """Mark keys as used without converting them (e.g. a fixed buffer checked elsewhere)."""
        self.used.update(k for k in keys if k in self.sd)

    def done(self):
        """Every key was used, or the one-line error naming the first unexpected one."""
        left = [k for k in self.sd if k not in self.used]
        if left:
            more = f" (+{len(left) - 1} more)" if len(left) > 1 else ""
            raise UserError(
                f"{self.what}: unexpected key {left[0]!r}{more} with no netlab counterpart"
                f"{'; ' + self.fix if self.fix else ''}"
            )


def _fits(found, want) -> bool:
    return len(found) == len(want) and all(w is None or int(w) == f for f, w in zip(found, want))


def linear(keys: Keys, prefix: str, out=None, inp=None, bias=None) -> dict:
    """torch.nn.Linear `prefix.weight` [out, in] (+ `prefix.bias`) -> flax Dense {kernel, bias};
    `bias=None` takes the bias when present."""
    w = keys.take(f"{prefix}.weight", (out, inp))
    d = {"kernel": np.ascontiguousarray(w.T)}
    if bias or (bias is None and f"{prefix}.bias" in keys):
        d["bias"] = keys.take(f"{prefix}.bias", (w.shape[0],))
    return d


@dataclasses.dataclass
class Converted:
    """A converted model: `params` (netlab's pytree of float32 numpy arrays), the `config` fields
    of the netlab class `model` ("module:Class") that has exactly these parameters, other
    variable collections (`variables`, e.g. BatchNorm's `batch_stats`), and `notes`: settings the
    state dict cannot tell, which the user must set as in the source model."""

    params: dict
    model: str
    config: dict
    variables: dict = dataclasses.field(default_factory=dict)
    notes: tuple = ()

    def module(self, **overrides):
        """The netlab module built from `config` (plus `overrides`, e.g. a compute dtype)."""
        module_name, _, cls = self.model.partition(":")
        return getattr(importlib.import_module(module_name), cls)(**{**self.config, **overrides})

    def all_variables(self) -> dict:
        """{"params": ..., **variables}: what `module().apply` takes."""
        return {"params": self.params, **self.variables}

    def summary(self) -> str:
        """The netlab class and config fields to set, one per line, then the notes."""
        lines = [f"netlab model: {self.model}"]
        lines += [f"  {k} = {v!r}" for k, v in self.config.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
