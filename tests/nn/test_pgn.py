"""PGN (Jia et al. 2024): the exact receptive field. Output step t depends on every input step
s <= t (the O(1) path: one linear map from each past input) and on none s > t (jax.jacobian)."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.nn import pgn

T, D_IN, F = 6, 2, 3
RNG = np.random.default_rng(0)


def test_output_depends_on_exactly_the_past_and_present():
    model = pgn.PGN(features=F, max_len=T)
    x = RNG.normal(size=(T, D_IN)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    params = jax.tree.map(lambda s: RNG.normal(size=s.shape).astype(np.float32) * 0.5, shapes)
    jac = np.asarray(jax.jit(jax.jacobian(lambda x: model.apply(params, x)))(x))  # (T,F,T,D_IN)
    reach = np.abs(jac).max(axis=(1, 3))  # reach[t, s]
    past = np.tril(np.ones((T, T), bool))
    assert reach[past].min() > 1e-4  # every s <= t, including the oldest (s = 0, t = T - 1)
    assert (reach[~past] == 0).all()


def test_tpgn_shapes():
    model = pgn.TPGN(period=4, horizon=5, hidden=8)
    x = jnp.zeros((2, 12, 3))
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x))
    assert out.shape == (2, 5, 3)
