"""Graph-generation metrics of the SPECTRE / DiGress protocol (host-side, networkx + numpy).

MMD (GraphRNN, You et al. 2018; SPECTRE, Martinkus et al. 2022; as DiGress reports it): each graph
becomes a histogram, each histogram is normalised to sum 1, and two sets X (n) and Y (m) are
compared by the biased squared MMD with self-pairs included,

    MMD^2 = mean_{x,x'} k(x, x') + mean_{y,y'} k(y, y') - 2 mean_{x,y} k(x, y),

with the Gaussian total-variation kernel ``k(p, q) = exp(-TV(p, q)^2 / (2 sigma^2))``,
``TV = 1/2 sum |p - q|`` over the histograms zero-padded to a common length (the ``gaussian_tv``
kernel of the SPECTRE code; not the Gaussian-EMD kernel of the first GraphRNN release). The three
statistics and their sigmas, as in that code:

- degree: ``nx.degree_histogram`` (counts of degree 0, 1, ...), sigma 1;
- clustering: the local clustering coefficients in 100 bins on [0, 1], sigma 0.1;
- spectrum: eigenvalues of the normalised Laplacian in 200 bins on [-1e-5, 2], sigma 1.

The 4-node orbit MMD needs the ORCA binary and is not computed.

Validity: planar = connected and planar (``nx.check_planarity``). SBM, simplified: DiGress fits a
block model with graph-tool (``minimize_blockmodel_dl`` plus merge-split sweeps); here the blocks
are Louvain communities (``nx.community.louvain_communities``, seed 0), a block smaller than the
minimum size merged into the block it shares most edges with (a crude merge sweep). The rest
follows DiGress's test: 2-5 blocks of 20-40 nodes each, every within-block and between-block-pair
edge density p_hat tested against p_in / p_out with the Wald statistic
W = (p_hat - p)^2 / (p_hat (1 - p_hat) + 1e-6), and the graph is valid when the mean of
1 - chi2_1.cdf(W) exceeds 0.9.

Uniqueness (generated graphs not isomorphic to an earlier generated one) and novelty (not
isomorphic to any training graph) bucket graphs by their Weisfeiler-Lehman hash
(``nx.weisfeiler_lehman_graph_hash``; equal hashes are necessary for isomorphism) and confirm
candidates with ``nx.is_isomorphic``. V.U.N. = valid and unique and novel.
"""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
from scipy.stats import chi2


def degree_hist(g: nx.Graph) -> np.ndarray:
    return np.asarray(nx.degree_histogram(g), np.float64)


def clustering_hist(g: nx.Graph, bins: int = 100) -> np.ndarray:
    c = list(nx.clustering(g).values())
    return np.histogram(c, bins=bins, range=(0.0, 1.0))[0].astype(np.float64)


def spectral_hist(g: nx.Graph, bins: int = 200) -> np.ndarray:
    lap = nx.normalized_laplacian_matrix(g).toarray()
    ev = np.linalg.eigvalsh(lap)
    return np.histogram(ev, bins=bins, range=(-1e-5, 2.0))[0].astype(np.float64)


STATS = {"degree": (degree_hist, 1.0), "clustering": (clustering_hist, 0.1)}
STATS["spectral"] = (spectral_hist, 1.0)


def _normalise_pad(hists: list, length: int) -> np.ndarray:
    out = np.zeros((len(hists), length))
    for i, h in enumerate(hists):
        out[i, : len(h)] = h / max(h.sum(), 1e-12)
    return out


def gaussian_tv_mmd2(xs: list, ys: list, sigma: float) -> float:
    """Biased MMD^2 between two lists of histograms under the Gaussian-TV kernel."""
    length = max(len(h) for h in [*xs, *ys])
    x, y = _normalise_pad(xs, length), _normalise_pad(ys, length)

    def gram(a, b):
        tv = 0.5 * np.abs(a[:, None, :] - b[None, :, :]).sum(-1)
        return np.exp(-(tv**2) / (2 * sigma**2))

    return float(gram(x, x).mean() + gram(y, y).mean() - 2 * gram(x, y).mean())


def mmd(generated: list, reference: list, stat: str) -> float:
    """MMD^2 of ``stat`` ("degree", "clustering", "spectral") between two lists of graphs."""
    fn, sigma = STATS[stat]
    return gaussian_tv_mmd2([fn(g) for g in generated], [fn(g) for g in reference], sigma)


def is_planar_valid(g: nx.Graph) -> bool:
    return g.number_of_nodes() > 0 and nx.is_connected(g) and nx.check_planarity(g)[0]


def is_sbm_valid(g: nx.Graph, p_in=0.3, p_out=0.005, k=(2, 5), size=(20, 40)) -> bool:
    """The simplified SBM test of the module doc (Louvain blocks, Wald test, mean p > 0.9)."""
    if g.number_of_edges() == 0:
        return False
    blocks = [set(b) for b in nx.community.louvain_communities(g, seed=0)]
    while len(blocks) > 1 and min(len(b) for b in blocks) < size[0]:  # merge too-small blocks
        small = blocks.pop(int(np.argmin([len(b) for b in blocks])))
        links = [nx.cut_size(g, small, b) for b in blocks]
        blocks[int(np.argmax(links))] |= small
    blocks = [sorted(b) for b in blocks]
    sizes = [len(b) for b in blocks]
    if not (k[0] <= len(blocks) <= k[1]) or min(sizes) < size[0] or max(sizes) > size[1]:
        return False
    label = np.empty(g.number_of_nodes(), int)
    for i, b in enumerate(blocks):
        label[b] = i
    a = nx.to_numpy_array(g, nodelist=range(g.number_of_nodes()))
    pvals = []
    for i in range(len(blocks)):
        for j in range(i, len(blocks)):
            sub = a[np.ix_(label == i, label == j)]
            if i == j:
                n = sizes[i]
                p_hat, p = sub.sum() / max(n * (n - 1), 1), p_in
            else:
                p_hat, p = sub.mean(), p_out
            w = (p_hat - p) ** 2 / (p_hat * (1 - p_hat) + 1e-6)
            pvals.append(1.0 - chi2.cdf(abs(w), 1))
    return float(np.mean(pvals)) > 0.9


VALIDITY = {"planar": is_planar_valid, "sbm": is_sbm_valid}


def _wl_hash(g) -> str:
    with warnings.catch_warnings():  # networkx >= 3.5 warns that hashes changed in 3.5
        warnings.simplefilter("ignore", UserWarning)
        return nx.weisfeiler_lehman_graph_hash(g)


def _find_iso(g, buckets: dict) -> bool:
    h = _wl_hash(g)
    return any(nx.is_isomorphic(g, other) for other in buckets.get(h, ()))


def _bucket(graphs) -> dict:
    out: dict = {}
    for g in graphs:
        out.setdefault(_wl_hash(g), []).append(g)
    return out


def unique_flags(graphs: list) -> np.ndarray:
    """True where a graph is not isomorphic to an earlier one of the list."""
    seen: dict = {}
    flags = []
    for g in graphs:
        flags.append(not _find_iso(g, seen))
        seen.setdefault(_wl_hash(g), []).append(g)
    return np.array(flags, bool)


def novel_flags(graphs: list, train: list) -> np.ndarray:
    """True where a graph is isomorphic to no training graph."""
    buckets = _bucket(train)
    return np.array([not _find_iso(g, buckets) for g in graphs], bool)


def evaluate(generated: list, train: list, test: list, kind: str) -> dict:
    """Validity, uniqueness, novelty, V.U.N. (fractions) and the three MMD^2 against ``test``."""
    valid = np.array([VALIDITY[kind](g) for g in generated], bool)
    unique, novel = unique_flags(generated), novel_flags(generated, train)
    out = {
        "validity": float(valid.mean()),
        "uniqueness": float(unique.mean()),
        "novelty": float(novel.mean()),
        "vun": float((valid & unique & novel).mean()),
    }
    for stat in STATS:
        out[f"mmd_{stat}"] = mmd(generated, test, stat)
    return out


def draw_graphs(rows: dict, per_row: int = 6, kind: str | None = None) -> np.ndarray:
    """A picture (uint8 H x W x 3, matplotlib Agg) of graphs drawn with networkx: one row per
    ``rows`` entry (title -> list of graphs), the first ``per_row`` graphs of each. Planar graphs
    are drawn with ``nx.planar_layout`` when planar, others with a seeded spring layout; with
    ``kind`` each panel is titled valid / invalid by :data:`VALIDITY`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axs = plt.subplots(
        len(names), per_row, figsize=(1.8 * per_row, 1.9 * len(names)), squeeze=False
    )
    for r, name in enumerate(names):
        for c in range(per_row):
            ax = axs[r, c]
            ax.set_axis_off()
            if c >= len(rows[name]):
                continue
            g = rows[name][c]
            planar = g.number_of_nodes() > 0 and nx.check_planarity(g)[0]
            pos = nx.planar_layout(g) if planar else nx.spring_layout(g, seed=0)
            nx.draw_networkx(g, pos, ax=ax, node_size=8, width=0.5, with_labels=False)
            label = f"{g.number_of_nodes()}n {g.number_of_edges()}e"
            if kind is not None:
                label += " valid" if VALIDITY[kind](g) else " invalid"
            ax.set_title(label, fontsize=7)
        axs[r, 0].text(
            -0.05,
            0.5,
            name,
            transform=axs[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


__all__ = ["draw_graphs", "evaluate", "gaussian_tv_mmd2", "mmd", "novel_flags", "unique_flags"]
