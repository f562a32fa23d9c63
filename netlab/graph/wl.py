"""1-WL colour refinement and the accuracy bound it implies for message-passing GNNs.

Colour refinement (Weisfeiler & Leman 1968; the 1-WL test): every node starts with a colour (its
label or feature row, or one colour for all), and each round replaces a node's colour by the pair
(own colour, multiset of its in-neighbours' colours), relabelled to small integers, until the
partition of the nodes stops splitting. Morris et al. (AAAI 2019) and Xu et al. (ICLR 2019) show
that an MPNN cannot tell apart two nodes (or graphs) with the same stable colour (histogram).

Hence the bound of Zopf, "1-WL expressiveness is (almost) all you need" (2022, §3): a 1-WL-bounded
model gives every node (graph) of a colour class the same prediction, so at most the majority
label of each class can be right: ``bound = Σ_classes max_label count / n`` over the evaluated
nodes (graphs). Computed here on the host (numpy); colours refine the disjoint union of all graphs
at once, so colours (and histograms) are comparable across graphs.

``python -m netlab.graph.wl cora citeseer csl exp`` prints the bound for Planetoid node labels
(public split, test mask and all nodes; with the features as initial colours and with structure
only) and for the synthetic graph sets of :mod:`netlab.graph.synthetic_wl` (CSL, EXP-style pairs).
"""

from __future__ import annotations

import sys

import jraph
import numpy as np

from netlab.graph import graphs as G


def initial_colors(features=None, num_nodes=None) -> np.ndarray:
    """Integer colours of equal feature rows (one colour for all when ``features`` is None)."""
    if features is None:
        return np.zeros(int(num_nodes), np.int64)
    f = np.asarray(features).reshape(len(features), -1)
    return np.unique(f, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def refine(senders, receivers, num_nodes: int, colors=None, max_rounds=None) -> np.ndarray:
    """Stable 1-WL colours [num_nodes] (int, 0..k-1) of the graph with edges senders -> receivers.

    A node's new colour is the id of (colour, sorted colours of its in-neighbours); an undirected
    graph lists both directions. Stops when the number of colours stops growing (refinement only
    splits classes), or after ``max_rounds``. Colour ids are canonical (ordered by signature), so
    two runs on relabelled copies of a graph give the same colour histogram.
    """
    n = int(num_nodes)
    c = initial_colors(None, n) if colors is None else np.asarray(colors, np.int64)
    c = np.unique(c, return_inverse=True)[1].reshape(-1)
    s, r = np.asarray(senders, np.int64), np.asarray(receivers, np.int64)
    order = np.argsort(r, kind="stable")
    s, r = s[order], r[order]
    starts = np.searchsorted(r, np.arange(n + 1))
    rounds = n if max_rounds is None else int(max_rounds)
    for _ in range(rounds):
        sig = [(c[v], tuple(sorted(c[s[starts[v] : starts[v + 1]]]))) for v in range(n)]
        keys = sorted(set(sig))
        index = {k: i for i, k in enumerate(keys)}
        new = np.array([index[k] for k in sig], np.int64)
        if len(keys) == len(np.unique(c)):
            return new
        c = new
    return c


def colors(graph, features=None, max_rounds=None) -> np.ndarray:
    """Stable colours of a padded :class:`netlab.graph.graphs.Graph` or a host
    ``jraph.GraphsTuple`` (one graph or a batch: the disjoint union is refined). Padding nodes of a
    ``Graph`` get colour -1 and padding edges are ignored. ``features`` [N, ...]: initial colours
    from equal rows (default: one colour for all)."""
    if isinstance(graph, G.Graph):
        mask = np.asarray(graph.node_mask)
        em = np.asarray(graph.edge_mask)
        s, r = np.asarray(graph.senders)[em], np.asarray(graph.receivers)[em]
        n = int(mask.sum())  # real nodes come first
        f = None if features is None else np.asarray(features)[:n]
        out = np.full(mask.shape[0], -1, np.int64)
        out[:n] = refine(s, r, n, initial_colors(f, n), max_rounds)
        return out
    n = int(np.sum(graph.n_node))
    f = None if features is None else np.asarray(features)
    return refine(graph.senders, graph.receivers, n, initial_colors(f, n), max_rounds)


def graph_classes(graphs, features=None) -> np.ndarray:
    """WL class id per graph of a list of host ``jraph.GraphsTuple`` (each one graph): graphs share
    an id iff their stable colour histograms (refined jointly) are equal, i.e. 1-WL cannot tell them
    apart. ``features``: optional list of per-graph initial-colour rows."""
    union = jraph.batch_np(list(graphs))
    f = None if features is None else np.concatenate([np.asarray(x) for x in features])
    c = colors(union, f)
    bounds = np.concatenate([[0], np.cumsum(np.asarray(union.n_node))])
    hists = [tuple(np.bincount(c[a:b], minlength=c.max() + 1)) for a, b in zip(bounds, bounds[1:])]
    return np.unique(np.array(hists), axis=0, return_inverse=True)[1].reshape(-1)


def accuracy_bound(classes, labels, mask=None) -> float:
    """Σ over colour classes of the majority-label count / number of items, over ``mask``: the best
    accuracy any model can reach that predicts the same label within each class."""
    classes, labels = np.asarray(classes), np.asarray(labels)
    if mask is not None:
        classes, labels = classes[np.asarray(mask)], labels[np.asarray(mask)]
    if classes.size == 0:
        return float("nan")
    pairs, counts = np.unique(np.stack([classes, labels]), axis=1, return_counts=True)
    best = {}
    for k, cnt in zip(pairs[0], counts):
        best[k] = max(best.get(k, 0), int(cnt))
    return sum(best.values()) / classes.size


def node_accuracy_bound(dataset, mask: str = "test", use_features: bool = True) -> float:
    """The 1-WL bound for a ``datasets.NodeDataset``'s node labels on its ``mask`` nodes ("train",
    "val", "test" or "all"), with the feature rows (or one colour) as initial colours."""
    c = refine(
        dataset.senders,
        dataset.receivers,
        dataset.num_nodes,
        initial_colors(dataset.x if use_features else None, dataset.num_nodes),
    )
    m = None if mask == "all" else getattr(dataset, f"{mask}_mask")
    return accuracy_bound(c, dataset.y, m)


def main(argv=None):
    from netlab.graph import datasets as D
    from netlab.graph import synthetic_wl

    for name in argv if argv else ["cora", "citeseer", "csl", "exp"]:
        if name in ("csl", "exp"):
            data = synthetic_wl.csl() if name == "csl" else synthetic_wl.exp_pairs(100)
            graphs, y = [g for g, _ in data], [label for _, label in data]
            print(
                f"{name} ({len(graphs)} graphs) 1-WL bound:",
                accuracy_bound(graph_classes(graphs), y),
            )
            continue
        ds = D.load(name)
        for feats in (True, False):
            row = [f"{m}={node_accuracy_bound(ds, m, feats):.4f}" for m in ("test", "all")]
            print(f"{name} 1-WL bound ({'features' if feats else 'structure only'}):", *row)


if __name__ == "__main__":
    main(sys.argv[1:])
