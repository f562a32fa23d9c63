"""Co-GNN: all nodes on STANDARD equals the environment MPNN exactly (Gumbel noise on); edge
weights are broadcast_u · listen_v with straight-through gradients; permutation equivariance."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph import cognn, padding

N, F = 9, 5


def graph(perm=None, seed=0):
    rng = np.random.default_rng(seed)
    s, r = rng.integers(0, N, 16), rng.integers(0, N, 16)
    x = rng.normal(size=(N, F)).astype(np.float32)
    if perm is not None:  # node i becomes node perm[i]
        s, r, x = perm[s], perm[r], x[np.argsort(perm)]
    g = padding.from_edges(s, r, N, nodes=x, symmetrize=True, budget=padding.Budget(N + 3, 48, 2))
    return padding.to_device(g)


def test_all_standard_equals_environment_mpnn_and_equivariance():
    g, gp = graph(), graph(perm := np.random.default_rng(5).permutation(N))
    model = cognn.CoGNN(hidden=6, num_classes=3, num_layers=2, env_aggr="sum", dropout=0.0)

    def env_mpnn(p, g):
        h = g.nodes @ p["encoder"]["kernel"] + p["encoder"]["bias"]
        for i in range(2):
            h = nn.relu(cognn.WeightedConv(6, "sum").apply({"params": p[f"env{i}"]}, g, h))
        return h @ p["decoder"]["kernel"] + p["decoder"]["bias"]

    @jax.jit
    def run(g, gp, key):
        fresh = nn.unbox(model.init(jax.random.key(0), g, g.nodes))["params"]
        forced = jax.tree.map(lambda v: v, fresh)
        for act in ("act_in", "act_out"):  # logits (+50, -50): listen = broadcast = yes everywhere
            forced[act]["lin"]["kernel"] = jnp.zeros_like(fresh[act]["lin"]["kernel"])
            forced[act]["lin"]["bias"] = jnp.array([50.0, -50.0])
        noisy = model.apply({"params": forced}, g, g.nodes, train=True, rngs={"dropout": key})
        ev = lambda gg: model.apply({"params": fresh}, gg, gg.nodes)  # noqa: E731
        return noisy, env_mpnn(forced, g), ev(g), ev(gp)

    noisy, env, a, b = map(np.asarray, run(g, gp, jax.random.key(3)))
    np.testing.assert_array_equal(noisy, env)
    # Equivariance of the learned (eval, noise-free) actions on the permuted graph.
    np.testing.assert_allclose(b[:N][perm], a[:N], rtol=1e-5, atol=1e-5)


def test_edge_weights_are_broadcast_times_listen_with_straight_through_gradient():
    g = graph(seed=2)
    rng = np.random.default_rng(0)
    li, lo = (jnp.asarray(rng.normal(size=(N + 3, 2)), jnp.float32) for _ in range(2))

    def weights(li, lo):
        return cognn.action_weights(g, None, lambda *_: li, lambda *_: lo, tau=0.5)

    both = jax.jit(lambda li, lo: (weights(li, lo), jax.grad(lambda a: weights(a, lo).sum())(li)))
    w, grad = both(li, lo)
    w = np.asarray(w)
    listen, bcast = np.asarray(li.argmax(-1) == 0), np.asarray(lo.argmax(-1) == 0)
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    np.testing.assert_array_equal(w, (bcast[s] & listen[r]).astype(np.float32))
    assert np.abs(np.asarray(grad)).sum() > 0  # softmax gradient through the one-hot sample
