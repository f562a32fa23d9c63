"""LASER: Barbero, Velingker, Saberi, Bronstein & Di Giovanni, "Locality-Aware Graph Rewiring in
GNNs" (ICLR 2024). Sparse, locality-aware rewiring against over-squashing, on GCN.

Rewiring (host, once; the authors' global variant ``laser_global.py``): with Â = A + I, the
connectivity μ = Â^8 (walk counts) and the orbits O_r(i) = {j : SPD(i, j) = r}, for every
r = 2..R (R = ``max_hop``) and every node i, LASER connects i to the

    b_r(i) = min(|O_r(i)|, max(min_add, round(ρ · |O_r(i)|)))

members of O_r(i) with the **lowest** μ_ij (the least connected, where over-squashing bites),
ties broken uniformly at random (seeded). The added edges of orbit r form snapshot r; snapshot 1
is the original graph. The model sums one GCN convolution per snapshot in every layer,

    h^(t+1) = h^(t) + ReLU( Σ_{r=1..R} GCNConv_{r,t}(snapshot r, h^(t)) ),

each snapshot normalised with its own self-loops (PyG ``GCNConv``), so the rewiring keeps
locality (only r-hop edges, r <= R) and sparsity (about ρ of each orbit).

Deliberate differences from the authors' code: added edges are symmetrised (undirected rewiring)
where the code adds one direction to lower-index nodes only; every layer sees the snapshots
separately (the release passes them separately only to its last layer); round(·) is
floor(x + 1/2); the dense μ costs O(n³) (Planetoid-sized graphs). Snapshot lists are padded to
multiples of 128 edges, or to ``max_added_edges`` when set (overflow: a one-line error naming it).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import edge_sets, gcn
from netlab.graph import layers as L
from netlab.graph.drew import hop_lists
from netlab.graph.registries import MODELS


def connectivity(senders, receivers, num_nodes: int, power: int = 8) -> np.ndarray:
    """μ = (A + I)^power (float64, dense): the number of walks of length ``power`` in Â."""
    a = np.eye(int(num_nodes))
    a[np.asarray(receivers), np.asarray(senders)] = 1.0
    return np.linalg.matrix_power(a, int(power))


def orbit_budget(orbit_size, rho: float, min_add: int):
    """b = min(|O|, max(min_add, floor(ρ |O| + 1/2))) per orbit size."""
    size = np.asarray(orbit_size)
    return np.minimum(size, np.maximum(min_add, np.floor(rho * size + 0.5).astype(size.dtype)))


def laser_selection(senders, receivers, num_nodes, max_hop=3, rho=0.5, min_add=1, seed=0):
    """{r: int32 [M_r, 2] rows (i, j)}: for r = 2..max_hop, the orbit members j each node i
    connects to (b_r(i) of them, lowest μ_ij first, ties uniformly at random)."""
    n = int(num_nodes)
    mu = connectivity(senders, receivers, n)
    rng = np.random.default_rng(seed)
    out = {}
    for r, (hs, hr) in hop_lists(senders, receivers, n, max_hop).items():
        if r == 1:
            continue
        starts = np.searchsorted(hr, np.arange(n + 1))
        rows = []
        for i in range(n):
            js = hs[starts[i] : starts[i + 1]]
            if len(js):
                b = int(orbit_budget(len(js), rho, min_add))
                pick = js[np.lexsort((rng.random(len(js)), mu[i, js]))[:b]]
                rows.append(np.stack([np.full(len(pick), i), pick], 1))
        out[r] = np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, 2), np.int32)
    return out


def snapshot_edges(selection: np.ndarray):
    """Both directions of the selected pairs, each once, sorted by (receiver, sender)."""
    both = np.concatenate([selection, selection[:, ::-1]])
    both = np.unique(both, axis=0)
    order = np.lexsort((both[:, 1], both[:, 0]))
    return both[order, 1].astype(np.int32), both[order, 0].astype(np.int32)  # senders, receivers


@MODELS.register("laser")
class LASER(nn.Module):
    """LASER-GCN node classifier: Linear encoder -> num_layers × [h + ReLU(Σ_r GCNConv_r)] with
    dropout -> Linear head; ``max_hop`` = R, ``rho`` = ρ, ``min_add``, ``seed`` (tie breaks)."""

    TASK = "node"
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 3
    max_hop: int = 3
    rho: float = 0.5
    min_add: int = 1
    seed: int = 0
    max_added_edges: int = 0
    dropout: float = 0.0
    input_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.max_hop < 1 or not 0.0 <= self.rho <= 1.0 or self.min_add < 0:
            raise UserError(
                f"model.max_hop={self.max_hop}, model.rho={self.rho}, model.min_add="
                f"{self.min_add}: use max_hop >= 1, 0 <= rho <= 1 and min_add >= 0"
            )
        super().__post_init__()

    def prepare_graph(self, graph):
        """The numpy :class:`Graph` with snapshots r = 2..max_hop in ``graph.norm``
        (`netlab.graph.edge_sets`, names ``laser{r}``)."""
        s, r, n, _, _ = edge_sets.real_edges(graph)
        norm = dict(graph.norm or {})
        sel = laser_selection(s, r, n, self.max_hop, self.rho, self.min_add, self.seed)
        for k, pairs in sel.items():
            hs, hr = snapshot_edges(pairs)
            fix = "lower model.rho / model.max_hop"
            edge_sets.add(
                norm, f"laser{k}", hs, hr, graph, self.max_added_edges, "model.max_added_edges", fix
            )
        return graph.replace(norm=norm)

    def snapshot(self, graph, k: int):
        return graph if k == 1 else edge_sets.graph_with(graph, f"laser{k}", "LASER")

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = L.Dropout(self.input_dropout)(x, deterministic=not train)
        h = L.dense(self.hidden, True, "encoder", **kw)(x)
        snaps = [self.snapshot(graph, k) for k in range(1, self.max_hop + 1)]
        for t in range(self.num_layers):
            agg = sum(
                gcn.GCNConv(self.hidden, name=f"conv{t}_snap{k + 1}", **kw)(g, h)
                for k, g in enumerate(snaps)
            )
            h = h + L.Dropout(self.dropout)(nn.relu(agg), deterministic=not train)
        return L.dense(self.num_classes, True, "head", **kw)(h)


__all__ = ["LASER", "connectivity", "laser_selection", "orbit_budget", "snapshot_edges"]
