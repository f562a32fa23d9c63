"""EDM2's optimizer pieces (Karras et al. 2024; netlab/train/edm2_optim.py): forced weight
normalisation of the stored weights (Eq. 66) and the inverse-square-root learning-rate decay, also
as the optimizer's `inv_sqrt` schedule."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.errors import UserError
from netlab.train import edm2_optim, optim


def test_forced_weight_norm_projects_stored_weights_only():
    params = {"mp_weight": np.full((3, 3, 4, 5), 3.0, np.float32), "bias": np.ones(5, np.float32)}
    grads = {
        k: 0.1 * np.arange(p.size, dtype=np.float32).reshape(p.shape) for k, p in params.items()
    }

    @jax.jit
    def steps(params, grads):
        tx = optax.chain(optax.sgd(0.1), edm2_optim.forced_weight_norm())
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    new = jax.device_get(steps(params, grads))
    rms = np.sqrt(np.mean(new["mp_weight"] ** 2, axis=(0, 1, 2)))
    np.testing.assert_allclose(rms, 1.0, atol=1e-3)  # eps 1e-4 on an RMS of ~3
    np.testing.assert_allclose(new["bias"], params["bias"] - 0.1 * grads["bias"], rtol=1e-6)
    # The projection only rescales each output channel: the plain step's direction is kept.
    stepped = params["mp_weight"] - 0.1 * grads["mp_weight"]
    norms = np.sqrt(np.mean(stepped**2, axis=(0, 1, 2)))
    np.testing.assert_allclose(new["mp_weight"], stepped / norms, rtol=2e-4)


def test_lr_decay_matches_formula():
    sched = jax.jit(edm2_optim.lr_decay(0.01, ref_steps=100, warmup_steps=10))
    steps = np.array([0, 5, 10, 50, 100, 400, 10_000])
    want = 0.01 / np.sqrt(np.maximum(steps / 100, 1)) * np.minimum(steps / 10, 1)
    np.testing.assert_allclose(np.asarray(sched(steps)), want, rtol=1e-6)
    assert float(edm2_optim.lr_decay(0.01, 0)(10**6)) == pytest.approx(0.01)


def test_inv_sqrt_schedule_of_the_optimizer_config():
    """`optimizer.schedule="inv_sqrt"` (digits_edm2's U-Net) is EDM2's decay in closed form."""
    o = configlib.load("configs/diffusion/digits_edm2.py:backbone=edm2_unet").optimizer
    assert o.schedule == "inv_sqrt" and o.ref_steps > o.warmup_steps > 0
    sched = jax.jit(optim.learning_rate(o, total_steps=1500))
    steps = np.array([0, o.warmup_steps // 2, o.warmup_steps, o.ref_steps, 4 * o.ref_steps, 10**5])
    want = (
        o.lr / np.sqrt(np.maximum(steps / o.ref_steps, 1)) * np.minimum(steps / o.warmup_steps, 1)
    )
    np.testing.assert_allclose(np.asarray(sched(steps)), want, rtol=1e-6)
    bad = ml_collections.ConfigDict(dict(o.to_dict(), ref_steps=-1))
    with pytest.raises(UserError, match="optimizer.ref_steps"):
        optim.learning_rate(bad, 1500)
