"""Graph ViT / Graph MLP-Mixer: the spectral partition covers every node in balanced parts, 1-hop
overlap gives A_P = M Mᵀ (symmetric, diagonal = patch sizes); both models separate two CSL graphs
that GIN maps to equal outputs, and are invariant to node relabelling with the partition carried
along; a batch whose patches overflow the copy budget is a one-line error naming the knob."""

import jax
import numpy as np
import pytest

from netlab.graph import gin, graph_mixer, padding, synthetic_wl
from netlab.graph.padding import GraphBudgetError
from tests.graph.host_params import random_params


def test_partition_and_patch_structure():
    s, r = synthetic_wl.csl_edges(41, 3)
    s, r = np.concatenate([s, r]), np.concatenate([r, s])
    labels = graph_mixer.spectral_partition(s, r, 41, 6)
    sizes = np.bincount(labels, minlength=6)
    assert sizes.sum() == 41 and sizes.max() - sizes.min() <= 1
    bag = graph_mixer.patch_bag(s, r, 41, 6, 0, 4)
    assert sorted(bag.node.tolist()) == list(range(41))  # no overlap: a partition
    bag = graph_mixer.patch_bag(s, r, 41, 6, 1, 4)
    member = np.zeros((6, 41))
    member[bag.sub, bag.node] = 1
    a = np.zeros((41, 41))
    a[r, s] = 1
    np.testing.assert_array_equal(member, np.minimum(np.eye(6)[labels].T @ (np.eye(41) + a), 1))
    ap = bag.sub_extra["adj"]
    np.testing.assert_array_equal(ap, ap.T)
    np.testing.assert_array_equal(np.diag(ap), member.sum(1))
    # copy edges are exactly the graph's edges inside each patch
    edges = {
        (int(bag.sub[u]), int(bag.node[u]), int(bag.node[v]))
        for u, v in zip(bag.senders, bag.receivers)
    }
    want = {(p, a_, b) for p in range(6) for a_, b in zip(s, r) if member[p, a_] and member[p, b]}
    assert edges == want
    # few graphs' worth of copies: the budget error names the knob
    small = graph_mixer.GraphMixer(num_patches=6, copy_factor=1)
    g = padding.batch([synthetic_wl.to_graphs_tuple(s, r, 41)], padding.Budget(48, 168, 2))
    with pytest.raises(GraphBudgetError, match="model.copy_factor"):
        small.prepare_graph(g)


def test_mixer_and_vit_separate_csl_pair_gin_does_not_and_are_invariant():
    s2, r2 = synthetic_wl.csl_edges(41, 2)
    s3, r3 = synthetic_wl.csl_edges(41, 3)
    perm = np.random.default_rng(0).permutation(41)
    graphs = [(s2, r2), (s3, r3), (perm[s2], perm[r2]), (perm[s3], perm[r3])]
    gts = [synthetic_wl.to_graphs_tuple(s, r, 41) for s, r in graphs]
    host = padding.batch(gts, padding.Budget(168, 656, 5))
    parts = []
    for gt in gts[:2]:
        parts.append(graph_mixer.spectral_partition(gt.senders, gt.receivers, 41, 4))
    inv = np.argsort(perm)
    parts += [p[inv] for p in parts]  # node perm[v] of the relabelled copy keeps v's patch
    kw = dict(hidden=8, num_classes=3, num_patches=4, gnn_layers=2, mixer_layers=1, rw_steps=4)
    models = [graph_mixer.GraphMixer(**kw), graph_mixer.GraphViT(heads=2, **kw)]
    g = padding.to_device(models[0].prepare_graph(host, partitions=parts))
    gin_model = gin.GraphClassifier(hidden=8, num_classes=3, num_layers=3)

    params = [random_params(m, g, 1) for m in models + [gin_model]]

    @jax.jit
    def run(params, g):
        return [m.apply(v, g, g.nodes)[:4] for m, v in zip(models + [gin_model], params)]

    *mixers, out_gin = (np.asarray(o) for o in run(params, g))
    assert np.linalg.norm(out_gin[0] - out_gin[1]) < 1e-5  # GIN: CSL(41,2) = CSL(41,3)
    for out in mixers:
        assert np.linalg.norm(out[0] - out[1]) > 1e-3
        np.testing.assert_allclose(out[2:], out[:2], rtol=1e-4, atol=1e-5)
