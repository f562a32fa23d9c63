"""DiMR (netlab/diffusion/dimr.py): TD-LN with a constant time function is an RMS norm with a fixed
gain, shapes, conditioning, one gradient step. One jitted call; random weights (scaled normal)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.diffusion import losses
from netlab.diffusion.dimr import NOISE_COND_PER_LOGSNR, DiMR, TDLayerNorm
from netlab.diffusion.task import DigitsDiffusion, _noise_cond, build_backbone
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, patch=2, width=8, depth=2, num_heads=2, conv_width=4)
KW.update(conv_depth=1, kernel=3, num_classes=3)
B = 3
X = np.random.default_rng(0).normal(size=(B, 8, 8, 1)).astype(np.float32)
T, Y = np.array([-30.0, 0.0, 40.0], np.float32), np.array([0, 1, 3])


def _apply(p, x, t, y):
    return DiMR(**KW).apply(p, x, t, y)


@jax.jit
def _run(p):
    xs, ts = np.concatenate([X] * 3), np.concatenate([T, T, T + 7])
    ys = np.concatenate([Y, Y + 1, Y]) % 4
    out = _apply(p, xs, ts, ys)
    res = {"base": out[:B], "label": out[B : 2 * B], "noise": out[2 * B :]}
    target = np.tanh(X)

    def loss(q):
        return jnp.mean((_apply(q, X, T, Y) - target) ** 2)

    val, grad = jax.value_and_grad(loss)(p)
    step = 1e-2 / optax.tree.norm(grad)  # a short step along the gradient
    res["loss0"], res["loss1"] = val, loss(jax.tree.map(lambda a, g: a - step * g, p, grad))
    return res


@pytest.fixture(scope="module")
def res():
    shapes = nn.unbox(jax.eval_shape(lambda k: DiMR(**KW).init(k, X, T, Y), jax.random.key(0)))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    return jax.device_get(_run(params))


def test_shapes_conditioning_and_one_step(res):
    assert res["base"].shape == (B, 8, 8, 1)
    for case in ("label", "noise"):
        assert np.abs(res[case] - res["base"]).max() > 1e-3, case
    assert float(res["loss1"]) < float(res["loss0"])


def test_td_ln_with_a_constant_time_function_is_a_fixed_gain_rms_norm():
    """w = -1 makes s = sigmoid(b) independent of tau: the output is x / RMS(x) * gain with the
    fixed gain s p0 + (1 - s) p1 (numpy); with w = 0 the gain follows tau."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 5, 6)).astype(np.float32)
    tau = np.array([-3.0, -0.5, 0.0, 4.0], np.float32)
    b, p0, p1 = rng.normal(size=(3, 6)).astype(np.float32)
    s = 1 / (1 + np.exp(-b.astype(np.float64)))
    ref = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)
    ref = ref * (s * p0 + (1 - s) * p1)
    params = {"params": {"w": -np.ones(6, np.float32), "b": b, "p0": p0, "p1": p1}}
    moving = {"params": dict(params["params"], w=np.zeros(6, np.float32))}
    fixed, moving = jax.jit(jax.vmap(TDLayerNorm().apply, (0, None, None)))(
        jax.tree.map(lambda a, b: np.stack([a, b]), params, moving), x, tau
    )
    np.testing.assert_allclose(fixed, ref, rtol=1e-5, atol=1e-6)
    assert np.abs(moving - ref).max() > 1e-2
    # the time input is the true log-SNR / 4
    assert _noise_cond(np.float32(2.0)) / NOISE_COND_PER_LOGSNR == pytest.approx(2.0)


def test_config_builds_dimr_and_rejects_bad_values():
    path = "configs/diffusion/digits_uvit.py:backbone=dimr"
    model = build_backbone(configlib.load(path).model, (8, 8, 1), 10, Policy())
    assert isinstance(model, DiMR) and model.patch == 2 and model.kernel == 7
    with pytest.raises(UserError, match="model.patch"):
        over = {"model.patch": "3"}
        build_backbone(configlib.load(path, overrides=over).model, (8, 8, 1), 10, Policy())


TINY = {
    "model.width": "8",
    "model.depth": "1",
    "model.num_heads": "2",
    "model.dimr_conv_width": "4",
    "model.dimr_conv_depth": "1",
    "model.dimr_kernel": "3",
    "train.batch_size": "4",
}


def test_branch_loss_equals_a_numpy_transcription_and_off_is_the_final_branch_loss():
    """Branch 1's term: its sown 4 x 4 v-prediction against the 2 x 2 box sums / 2 of x0 and x_t,
    v-weighted MSE (numpy); the task loss is final + 1/4 x it. With model.dimr_branch_loss=0
    the network has no branch-1 head and the loss (same weights otherwise) is the final one."""
    path = "configs/diffusion/digits_uvit.py:backbone=dimr"
    on = DigitsDiffusion(configlib.load(path, overrides=TINY))
    off = DigitsDiffusion(
        configlib.load(path, overrides=dict(TINY, **{"model.dimr_branch_loss": "0"}))
    )
    assert on.model.branch_loss == 0.25 and off.model.branch_loss == 0.0
    shapes = nn.unbox(jax.eval_shape(on.init_variables, jax.random.key(0)))["params"]
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    off_params = {k: v for k, v in params.items() if not k.startswith("branch1")}
    assert set(params) - set(off_params) == {"branch1_norm", "branch1_out"}
    assert jax.tree.structure(off_params) == jax.tree.structure(
        nn.unbox(jax.eval_shape(off.init_variables, jax.random.key(0)))["params"]
    )
    batch, key = on.train_batch(0), jax.random.key(5)

    @jax.jit
    def run(params, off_params):
        x0, x_t, _, logsnr, labels, k_model = on.noised(batch, key)
        _, _, cols = on._apply(params, x_t, logsnr, labels, k_model, True)
        low = losses.branches(cols)["branch1"]["out"]
        loss_on, (m_on, _) = on.loss_fn(params, {}, batch, key, True)
        loss_off, (m_off, _) = off.loss_fn(off_params, {}, batch, key, True)
        return x0, x_t, logsnr, low, loss_on, m_on, loss_off, m_off

    x0, x_t, logsnr, low, loss_on, m_on, loss_off, m_off = jax.device_get(run(params, off_params))
    assert low.shape == (4, 4, 4, 1) and "branch/branch1" not in m_off

    def down(x):
        return x.astype(np.float64).reshape(4, 4, 2, 4, 2, 1).sum((2, 4)) / 2

    lam = logsnr.astype(np.float64)[:, None, None, None]
    alpha, sigma = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
    x0_hat = alpha * down(x_t) - sigma * low  # v-parameterisation at 4 x 4
    term = np.mean((1 + np.exp(lam[:, 0, 0, 0])) * ((x0_hat - down(x0)) ** 2).mean((1, 2, 3)))
    assert float(m_on["branch/branch1"]) == pytest.approx(term, rel=1e-4)
    assert float(loss_on) == pytest.approx(float(loss_off) + 0.25 * term, rel=1e-5)
    assert float(m_on["x0_mse"]) == float(m_off["x0_mse"])  # the final branch is unchanged
