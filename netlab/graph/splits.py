"""Random node splits on the largest connected component: the evaluation protocol of GRAND
(Chamberlain et al., ICML 2021, §4 "Experimental setup"), from Shchur et al. 2018 ("Pitfalls of GNN
evaluation") through Klicpera et al.'s APPNP / GDC code.

The protocol (``data.split_protocol``):

1. keep the largest (weakly) connected component, nodes renumbered in increasing original order;
2. a *development* set of 1500 nodes is drawn; every other node of the component is a test node;
3. 20 training nodes per class are drawn from the development set with the split seed; the rest of
   the development set is the validation set.

Two variants of step 2:

- ``lcc_random``: the development set is drawn once with a fixed seed (``DEVELOPMENT_SEED``, as in
  Klicpera et al.'s GDC ``data.py``, which GRAND's ``data.py`` says it copies from), so the test set
  is the same for every split seed and only the training / validation draw changes;
- ``lcc_grand``: GRAND's released code (``data.py`` ``set_train_val_test_split(seed, ...)``, called
  by ``run_GNN.py`` with ``seed = np.random.randint(0, 1000)`` per run): the development set is
  drawn with the split seed too (a fresh ``RandomState(seed)`` for each of steps 2 and 3), so the
  test set changes with the seed.

GRAND's runs draw the split seed at random per run; here it is ``data.split``, so a sweep over
seeds 0..k-1 is reproducible. The node order and draws follow numpy's legacy ``RandomState`` as the
reference code does; the exact split indices of a run of the authors' code depend on its seed and on
PyG's node order, which this matches for Planetoid files (nodes kept in file order).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from netlab.errors import UserError

DEVELOPMENT_SEED = 1684992425  # the fixed development-set seed of Klicpera et al.'s code (recalled)
PROTOCOLS = ("given", "lcc_random", "lcc_grand")


def largest_component(senders, receivers, num_nodes: int) -> np.ndarray:
    """Sorted node indices of the largest weakly connected component (the first one on ties)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    s, r = np.asarray(senders), np.asarray(receivers)
    adj = coo_matrix((np.ones(len(s)), (s, r)), shape=(num_nodes, num_nodes))
    _, label = connected_components(adj, directed=True, connection="weak")
    return np.flatnonzero(label == np.argmax(np.bincount(label)))


def subgraph(ds, keep: np.ndarray):
    """The node dataset restricted to the nodes ``keep`` (sorted), renumbered 0..len(keep)-1; only
    edges with both ends kept remain (in the original (receiver, sender) order)."""
    keep = np.asarray(keep)
    new = np.full(ds.num_nodes, -1, np.int64)
    new[keep] = np.arange(len(keep))
    s, r = new[np.asarray(ds.senders)], new[np.asarray(ds.receivers)]
    e = (s >= 0) & (r >= 0)
    return dataclasses.replace(
        ds,
        x=ds.x[keep],
        y=ds.y[keep],
        senders=s[e].astype(ds.senders.dtype),
        receivers=r[e].astype(ds.receivers.dtype),
        train_mask=ds.train_mask[keep],
        val_mask=ds.val_mask[keep],
        test_mask=ds.test_mask[keep],
    )


def random_split(
    y,
    seed: int,
    num_development: int = 1500,
    num_per_class: int = 20,
    development_seed: int | None = DEVELOPMENT_SEED,
):
    """(train, val, test) boolean masks of the protocol's steps 2-3 for labels ``y``;
    ``development_seed=None`` draws the development set with ``seed`` (GRAND's code)."""
    y = np.asarray(y)
    n = len(y)
    if num_development > n:
        raise UserError(
            f"random split: {num_development} development nodes requested but the graph has {n}; "
            "use a larger graph or fewer development nodes"
        )
    dev_seed = seed if development_seed is None else development_seed
    dev = np.random.RandomState(dev_seed).choice(n, num_development, replace=False)
    rs = np.random.RandomState(seed)
    train = []
    for c in range(int(y.max()) + 1):
        pool = dev[y[dev] == c]
        if len(pool) < num_per_class:
            raise UserError(
                f"random split: class {c} has {len(pool)} development nodes, fewer than "
                f"{num_per_class} per class"
            )
        train.extend(rs.choice(pool, num_per_class, replace=False))
    masks = [np.zeros(n, bool) for _ in range(3)]
    masks[0][train] = True
    masks[1][dev] = True
    masks[1][train] = False
    masks[2][:] = True
    masks[2][dev] = False
    return tuple(masks)


def lcc_random(ds, seed: int, **kwargs):
    """The dataset on its largest connected component with the random split of ``seed``."""
    lcc = subgraph(ds, largest_component(ds.senders, ds.receivers, ds.num_nodes))
    train, val, test = random_split(lcc.y, seed, **kwargs)
    return dataclasses.replace(lcc, train_mask=train, val_mask=val, test_mask=test)


def apply_protocol(ds, protocol: str, seed: int, **kwargs):
    """``given``: the dataset's own split (``ds`` unchanged); ``lcc_random``: :func:`lcc_random`
    (fixed development set); ``lcc_grand``: :func:`lcc_random` with the development set drawn with
    ``seed`` too (GRAND's released code). ``kwargs`` go to :func:`random_split`."""
    from netlab.registry import check_choice

    check_choice("data.split_protocol", protocol, PROTOCOLS)
    if protocol == "given":
        return ds
    if protocol == "lcc_grand":
        kwargs = dict(kwargs, development_seed=None)
    return lcc_random(ds, seed, **kwargs)


__all__ = [
    "DEVELOPMENT_SEED",
    "PROTOCOLS",
    "apply_protocol",
    "largest_component",
    "lcc_random",
    "random_split",
    "subgraph",
]
