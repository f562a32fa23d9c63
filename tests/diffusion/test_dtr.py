"""DTR (netlab/diffusion/dtr.py): the closed-form masks against a numpy transcription, the
cosine-schedule timestep map against netlab's schedule and the task's noise conditioning, and the
model against DiT (identical parameter tree; beta = 1 is DiT to float32 rounding) in one jitted
call."""

import functools

import jax
import numpy as np
import pytest

from netlab.diffusion import dtr
from netlab.diffusion.dit import DiT
from netlab.diffusion.schedules import Schedule
from netlab.diffusion.task import _noise_cond, build_backbone
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, patch=2, width=32, depth=2, num_heads=2, num_classes=3)
X = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
T, Y = np.array([3.0, 60.0], np.float32), np.array([0, 3])
STEPS = np.arange(1000)


def _numpy_masks(channels, beta=0.8, alpha=4.0, num=1000):
    n = int(np.floor(beta * channels))
    out = np.zeros((num, channels))
    for t in range(num):
        start = int(np.round((t / (num - 1)) ** alpha * (channels - n)))
        out[t, start : start + n] = 1
    return out


@jax.jit
def _closed_forms(logsnr):  # one compile for every jnp closed form below
    return {
        "masks": dtr.masks(STEPS, 32),
        "start": dtr.window(STEPS, 32)[0],
        "ones": dtr.masks(STEPS, 32, beta=1.0),
        "t": dtr.timestep(_noise_cond(logsnr)),
    }


U = STEPS[5:-5] / 999.0  # away from the cosine schedule's clipped ends


@pytest.fixture(scope="module")
def forms():
    return jax.device_get(_closed_forms(np.asarray(Schedule(name="cosine").logsnr(U), np.float32)))


def test_masks_are_the_sliding_window_and_adjacent_steps_share_all_but_one(forms, channels=32):
    m, start, n = forms["masks"], forms["start"], int(0.8 * channels)
    np.testing.assert_array_equal(m, _numpy_masks(channels))
    assert dtr.window(0, channels)[1] == n
    assert (m.sum(1) == n).all()
    assert start[0] == 0 and start[-1] == channels - n and (np.diff(start) >= 0).all()
    overlap = (m[1:] * m[:-1]).sum(1)  # shared active channels of t and t + 1
    np.testing.assert_array_equal(overlap, n - np.diff(start))  # the window moved by diff(start)
    assert overlap.min() >= n - 1  # a step moves the window by at most one channel
    assert (m[0] * m[-1]).sum() == 2 * n - channels  # the extremes share 2n - C channels
    assert (forms["ones"] == 1).all()


def test_timestep_inverts_the_cosine_schedule_through_the_task_conditioning(forms):
    np.testing.assert_array_equal(forms["t"], STEPS[5:-5])


def test_bad_values_are_refused():
    for beta, alpha, key in ((0.0, 4.0, "dtr_ratio"), (1.5, 4.0, "dtr_ratio"), (0.8, 0, "alpha")):
        with pytest.raises(UserError, match=key):
            dtr.check(beta, alpha)


def _shapes(model):
    return jax.eval_shape(lambda k: model.init(k, X, T, Y), jax.random.key(0))


@jax.jit
def _forwards(p):
    return [
        DiT(**KW).apply(p, X, T, Y, True),
        dtr.DTR(**KW, dtr_ratio=1.0).apply(p, X, T, Y, True),
        dtr.DTR(**KW).apply(p, X, T, Y, True),
    ]


def test_no_extra_parameters_and_all_ones_masks_are_dit():
    shapes = _shapes(DiT(**KW))
    assert _shapes(dtr.DTR(**KW)) == shapes  # same names, shapes and dtypes: zero added
    rng = np.random.default_rng(1)  # random weights: adaLN-Zero blocks are the identity at init
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    dit, ones, masked = jax.device_get(_forwards(params))
    # to rounding: the masked path multiplies by ones, which XLA may fuse in another order
    np.testing.assert_allclose(ones, dit, rtol=1e-5, atol=1e-5)
    assert not np.allclose(masked, dit, atol=1e-3)


def test_a_config_builds_it_by_path_and_bad_values_fail_at_build_time():
    m = {"backbone": "netlab.diffusion.dtr:build", "depth": 2, "width": 32, "num_heads": 2}
    m.update(patch=2, dtr_ratio=0.5)
    build = functools.partial(build_backbone, data_shape=(8, 8, 1), num_classes=3, policy=Policy())
    model = build(m)
    assert isinstance(model, dtr.DTR) and (model.dtr_ratio, model.dtr_alpha) == (0.5, 4.0)
    with pytest.raises(UserError, match="dtr_ratio"):
        build(dict(m, dtr_ratio=0.0))
