"""Spline-based pruning: You, Balestriero, Lu, Kou, Shi, Lin, Baraniuk & Wang 2022, "Max-Affine
Spline Insights Into Deep Network Pruning" (TMLR).

A ReLU network is a continuous piecewise-affine spline: every unit of a layer adds the hyperplane
{x : w.x + b = 0} to the partition of the layer's input space, and the partition region of an
input is its code, the on/off pattern of the units. Pruning a unit removes its hyperplane;
the paper's insight is that units whose hyperplanes cut the data the same way are redundant for
forming the partition, and that the partition of the data stabilises early in training (an
"early-bird" ticket can be drawn then). This file gives the measurements and the decision on a
probe batch; what to do with the mask (zero the units, shrink the layer) is the caller's:

- `unit_codes(pre)`: each unit's code over a probe batch of pre-activations (batch, units):
  which side of its hyperplane every example lies on (True: active).
- `code_distance(a, b)`: the normalised Hamming distance between two partitions of the same probe
  batch (the fraction of (example, unit) bits that differ), e.g. the same layer at two epochs:
  the early-bird test stops dense training when it stays below a threshold.
- `early_bird(codes, eps, patience)`: the first epoch whose partition stayed within `eps` of the
  previous epoch's for `patience` consecutive epochs (None if it never did).
- `redundant_units(pre, threshold)`: a keep mask. A unit is pruned when its hyperplane does not
  cut the probe data (constant code: always on, a purely affine unit, or always off, a dead one)
  or when its code is within `threshold` (normalised Hamming) of an already kept unit's code or
  of its complement (the same hyperplane with the other orientation). Units are visited in order
  of decreasing `scores` (default: the spread of their pre-activations), so among redundant ones
  the strongest is kept.
- `drop_units(w, b, w_next, b_next, keep, act)`: shrink a dense layer to its kept units and
  replace each dropped unit by its mean activation on the probe batch, folded into the next
  layer's bias (`b_next += mean(act_u) * w_next[u]`). Exact on the probe batch for dead units
  (activation 0) and constant ones; for an always-on unit (affine, w.x + b, not constant) the
  exact fold would need a linear skip the plain MLP lacks, so the mean is the best constant in
  least squares and the next layer's mean pre-activation over the probe batch is kept exactly;
  fine-tuning repairs the rest (the paper retrains the pruned network too).

Differences from the paper, deliberately: the paper scores redundancy between hyperplanes in the
parameter space and prunes layer-wise or globally with its own distance and thresholds (not
reproduced here; the reference code is incomplete); here redundancy is measured by the codes on
a probe batch, the data-dependent reading of the same partition. Removing an always-on unit
changes the function unless its affine contribution is folded into the next layer's bias; the
caller decides.
"""

import numpy as np


def unit_codes(pre) -> np.ndarray:
    """(batch, units) pre-activations -> (units, batch) booleans: example on the active side."""
    return np.asarray(pre).T > 0


def code_distance(a, b) -> float:
    """Normalised Hamming distance between two code arrays of the same shape."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"codes of shapes {a.shape} and {b.shape}: use one probe batch")
    return float(np.mean(a != b))


def early_bird(codes, eps: float, patience: int = 1):
    """codes: a sequence of code arrays, one per epoch, on one probe batch."""
    run = 0
    for epoch in range(1, len(codes)):
        run = run + 1 if code_distance(codes[epoch - 1], codes[epoch]) <= eps else 0
        if run >= patience:
            return epoch
    return None


def redundant_units(pre, threshold: float = 0.0, scores=None) -> np.ndarray:
    """A keep mask (units,) per the rules in the module docstring."""
    codes = unit_codes(pre)
    spread = np.asarray(pre).std(axis=0) if scores is None else np.asarray(scores)
    keep = np.zeros(codes.shape[0], bool)
    kept = []
    for u in np.argsort(-spread, kind="stable"):
        c = codes[u]
        if c.all() or not c.any():  # its hyperplane misses the probe data
            continue
        d = [min(np.mean(c != k), np.mean(c == k)) for k in kept]
        if d and min(d) <= threshold:
            continue
        keep[u] = True
        kept.append(c)
    return keep


def drop_units(w, b, w_next, b_next, keep, act):
    """Shrink layer (w (in, units), b) and the next layer's input rows (w_next (units, out),
    b_next) to `keep`; `act` (batch, units) the layer's activations on the probe batch, whose
    per-unit mean replaces every dropped unit (folded into b_next). -> (w, b, w_next, b_next)."""
    keep = np.asarray(keep, bool)
    w, b, w_next, b_next, act = (np.asarray(t) for t in (w, b, w_next, b_next, act))
    fold = act[:, ~keep].mean(axis=0) @ w_next[~keep]
    return w[:, keep], b[keep], w_next[keep], b_next + fold
