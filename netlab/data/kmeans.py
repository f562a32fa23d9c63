"""Deterministic k-means on the host, shared by the parts that partition data before training
(DDM's expert partitions, netlab/diffusion/ddm.py; DiPaCo's document router,
netlab/train/dipaco.py). scikit-learn's KMeans would do, but importing it costs seconds of every
run's start-up."""

import numpy as np


def kmeans(points, k: int, seed: int = 0, iters: int = 50):
    """Deterministic Lloyd's k-means on the host: k-means++ start from `seed`, `iters` rounds.
    points: (N, D) float. Returns (centroids (k, D), assignment (N,)). An emptied cluster is
    re-seeded with the point farthest from its centroid, so every partition is non-empty."""
    pts = np.asarray(points, np.float64).reshape(len(points), -1)
    rng = np.random.default_rng(seed)
    cent = [pts[rng.integers(len(pts))]]
    for _ in range(1, k):
        d2 = np.min(((pts[:, None] - np.asarray(cent)[None]) ** 2).sum(-1), axis=1)
        # all points on the centres already (duplicates): any point will do
        cent.append(pts[rng.choice(len(pts), p=d2 / d2.sum())] if d2.sum() > 0 else pts[0])
    cent = np.asarray(cent)
    for _ in range(iters):
        d2 = ((pts[:, None] - cent[None]) ** 2).sum(-1)
        assign = np.argmin(d2, axis=1)
        new = cent.copy()
        for j in range(k):
            members = assign == j
            if members.any():
                new[j] = pts[members].mean(0)
            else:
                far = np.argmax(d2[np.arange(len(pts)), assign])
                new[j], assign[far] = pts[far], j
        if np.allclose(new, cent):
            break
        cent = new
    assign = np.argmin(((pts[:, None] - cent[None]) ** 2).sum(-1), axis=1)
    return cent, assign
