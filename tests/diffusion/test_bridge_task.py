"""The paired digits bridge task (bridge_task.py): its edge operator is scipy's Sobel filter
magnitude, its loss is `ddbm.loss` applied row by row (vmapped, each row at its own scalar
log-SNR) with the backbone on [c_in x_t, x_T], and one Adam step on a fixed batch and key
lowers that loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import ndimage

from netlab import configlib
from netlab.diffusion import bridge_task, ddbm
from netlab.errors import UserError

TINY = {
    "model.depth": "1",
    "model.width": "16",
    "model.num_heads": "2",
    "model.patch": "4",
    "train.batch_size": "4",
}


def _task(**over):
    cfg = configlib.load("configs/diffusion/digits_bridge.py:cpu", None, dict(TINY, **over))
    return bridge_task.DigitsBridge(cfg)


def test_edge_map_is_the_scipy_sobel_magnitude():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (3, 8, 8, 1)).astype(np.float32)
    x[0] = bridge_task.digits.load()["test_x"][0]
    u = (x[..., 0].astype(np.float64) + 1) / 2
    want = []
    for img in u:  # scipy smooths along every other axis: one 2-D image at a time
        gy, gx = (ndimage.sobel(img, axis=a, mode="constant", cval=0.0) for a in (0, 1))
        want.append(np.clip(np.hypot(gx, gy) / bridge_task.EDGE_SCALE, 0, 1) * 2 - 1)
    np.testing.assert_allclose(bridge_task.edge_map(x)[..., 0], np.stack(want), atol=1e-6)


def test_loss_is_ddbm_loss_and_one_step_lowers_it():
    task = _task()
    shapes = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
    rng = np.random.default_rng(0)  # no init compile; non-zero output layers: all of F matters
    params = jax.tree.map(lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype), shapes)
    batch = jax.tree.map(jnp.asarray, task.train_batch(3))
    key = jax.random.key(7)
    tx = optax.adam(3e-3)

    def by_rows(params):  # the DDBM loss of each row at its own scalar log-SNR, by hand
        k_t, k_eps = jax.random.split(key)
        u = jax.random.uniform(k_t, (4, 1, 1, 1))
        lam = task.logsnr_max - u * (task.logsnr_max - task.logsnr_T)
        eps = jax.random.normal(k_eps, (4, 8, 8, 1))

        def net(x_in, logsnr, x_T):
            inp = jnp.concatenate([x_in, x_T], -1)
            cond = jnp.full((x_in.shape[0],), -logsnr / 8.0 * 100.0)
            return task.model.apply({"params": params}, inp, cond)[..., :1]

        den = ddbm.denoiser(net, task.logsnr_T, task.sigma_0, task.sigma_T, task.cov)

        def row(x0, x_T, eps, lam):  # (1, 8, 8, 1) arrays, a scalar log-SNR
            return ddbm.loss(den, x0, x_T, eps, lam, *stats)

        stats = (task.logsnr_T, task.sigma_0, task.sigma_T, task.cov)
        rows = jax.vmap(row)(
            batch["x"][:, None], batch["x_T"][:, None], eps[:, None], lam[:, 0, 0, 0]
        )
        return rows.mean()

    @jax.jit
    def run(params):
        def loss(p):
            return task.loss_fn(p, {}, batch, key, True)[0]

        l0, g = jax.value_and_grad(loss)(params)
        upd, _ = tx.update(g, tx.init(params), params)
        return l0, by_rows(params), loss(optax.apply_updates(params, upd))

    l0, manual, l1 = (float(v) for v in run(params))
    np.testing.assert_allclose(l0, manual, rtol=1e-5)
    assert l1 < l0, (l0, l1)


def test_bad_values_are_one_line_errors():
    with pytest.raises(UserError, match="bridge.sampler"):
        _task(**{"bridge.sampler": "dbm"})
    with pytest.raises(UserError, match="bridge.order"):
        _task(**{"bridge.order": "2", "bridge.eta": "0.5"})
    with pytest.raises(UserError, match="bridge.logsnr_max"):
        _task(**{"bridge.logsnr_max": "-2.0"})
