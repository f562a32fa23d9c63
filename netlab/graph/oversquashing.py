"""Over-squashing diagnostics: Jacobian sensitivity between node pairs against their commute time.

Di Giovanni, Giusti, Barbero, Luise, Liò & Bronstein, "On over-squashing in message passing neural
networks: the impact of width, depth, and topology" (ICML 2023). For an MPNN
h^(t+1)_v = σ(c_r Ω h^(t)_v + c_a W Σ_u A_vu h^(t)_u) the sensitivity ‖∂h_v^(m) / ∂x_u‖ is bounded
by (c_σ w p)^m (S^m)_vu with S = c_r I + c_a A (their sensitivity bound), and the obstruction
summed over layers is governed by the commute time (their topology result)

    τ(u, v) = vol(G) · (L⁺_uu + L⁺_vv − 2 L⁺_uv),   L = D − A,   vol(G) = Σ_v d_v = 2m,

i.e. vol(G) times the effective resistance R_uv. Pairs with a large commute time receive little
gradient from each other: the scatter of sensitivity against τ shows it for a trained model.

- :func:`sensitivity`: S[t, u] = Σ_{out channels d} Σ_{in channels f} |∂h_{v_t, d} / ∂x_{u, f}|
  for target nodes v_t, from reverse-mode products (``jax.vjp``) one target at a time, so memory
  stays at one [D, N, F] block (never the full [N, D, N, F] Jacobian).
- :func:`commute_times`: dense, from the Laplacian pseudo-inverse (host, O(n³); Planetoid-sized
  graphs). Pairs in different connected components get ``inf``; within a component vol is the
  component's volume (the commute time of the random walk restricted to it).
- :func:`plot`: heatmap of the sensitivity and its scatter against τ, written to a PNG.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from netlab.graph import graphs as G


def sensitivity(fn, x, targets):
    """[T, N] summed absolute Jacobian entries of ``fn`` (x [N, F] -> h [N, D]) for rows ``targets``
    of h with respect to every row of x (see the module docstring)."""
    x = jnp.asarray(x)
    h, pullback = jax.vjp(fn, x)
    d = h.shape[-1]

    def one(v):
        cot = jnp.zeros((d,) + h.shape, h.dtype).at[jnp.arange(d), v, jnp.arange(d)].set(1.0)
        (grads,) = jax.vmap(pullback)(cot)  # [D, N, F]
        return jnp.abs(grads).sum(axis=(0, 2))

    return jax.lax.map(one, jnp.asarray(targets, jnp.int32))


def edge_list(graph):
    """(senders, receivers, num_nodes) of the real part of a padded :class:`Graph`."""
    em = np.asarray(graph.edge_mask)
    n = int(np.asarray(graph.node_mask).sum())
    return np.asarray(graph.senders)[em], np.asarray(graph.receivers)[em], n


def commute_times(senders, receivers, num_nodes: int, edge_weight=None) -> np.ndarray:
    """[n, n] commute times of the random walk on the undirected graph with these edges (both
    directions listed, or either: A is symmetrised as max(A, Aᵀ)); ``inf`` across components."""
    n = int(num_nodes)
    w = np.ones(len(senders)) if edge_weight is None else np.asarray(edge_weight, np.float64)
    a = sp.coo_matrix((w, (np.asarray(receivers), np.asarray(senders))), shape=(n, n)).toarray()
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0.0)
    deg = a.sum(1)
    lap_pinv = np.linalg.pinv(np.diag(deg) - a, hermitian=True)
    dg = np.diag(lap_pinv)
    resistance = dg[:, None] + dg[None, :] - 2.0 * lap_pinv
    _, comp = connected_components(sp.csr_matrix(a), directed=False)
    vol = np.bincount(comp, weights=deg)[comp]
    same = comp[:, None] == comp[None, :]
    out = np.where(same, vol[:, None] * resistance, np.inf)
    np.fill_diagonal(out, 0.0)
    return out


def graph_commute_times(graph: G.Graph) -> np.ndarray:
    """:func:`commute_times` of the real nodes of a padded :class:`Graph`."""
    s, r, n = edge_list(graph)
    w = np.asarray(graph.edge_weight)[np.asarray(graph.edge_mask)]
    return commute_times(s, r, n, w)


def plot(sens, commute, path, targets=None, title: str = "") -> str:
    """Write a PNG: left, log10 sensitivity [T, N] as a heatmap (targets × source nodes; exact
    zeros, i.e. pairs outside the receptive field, in grey); right, the nonzero sensitivities
    against commute time ([T, N] rows of τ for the same targets) over pairs u ≠ v in one component.
    Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sens, commute = np.asarray(sens, np.float64), np.asarray(commute, np.float64)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    logs = np.ma.masked_where(sens <= 0, np.log10(np.where(sens > 0, sens, 1.0)))
    im = ax0.imshow(logs, aspect="auto", interpolation="nearest", cmap=cmap)
    ax0.set_xlabel("source node u")
    ax0.set_ylabel("target node v")
    if targets is not None and len(targets) <= 32:
        ax0.set_yticks(range(len(targets)), [str(int(t)) for t in targets])
    fig.colorbar(im, ax=ax0, label="log10 Σ|∂h_v/∂x_u|")
    pairs = np.isfinite(commute) & (commute > 0)
    ok = pairs & (sens > 0)
    ax1.scatter(commute[ok], sens[ok], s=4, alpha=0.5)
    ax1.set_yscale("log")
    ax1.set_xlabel("commute time τ(u, v)")
    ax1.set_ylabel("sensitivity")
    ax1.set_title(f"{int((pairs & ~ok).sum())} of {int(pairs.sum())} pairs have sensitivity 0")
    fig.suptitle(title or "Jacobian sensitivity vs commute time")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


__all__ = ["commute_times", "edge_list", "graph_commute_times", "plot", "sensitivity"]
