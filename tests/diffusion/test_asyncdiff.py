"""AsyncDiff: sequential mode is the plain DDIM sampler; the parallel (shard_map) sampler is the
stale-input recursion, transcribed plainly in `asyncdiff.reference`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import asyncdiff, mlp, parameterization, samplers, schedules
from netlab.diffusion.task import _noise_cond

GRID = jnp.asarray(np.linspace(-6.0, 5.0, 7), jnp.float32)  # 6 steps


def _model():
    model = mlp.MlpDenoiser(dim=2, width=16, depth=6)
    x = jnp.zeros((1, 2))
    params = jax.jit(model.init)(jax.random.key(0), x, jnp.zeros((1,)))["params"]
    return model, params, jax.random.normal(jax.random.key(1), (5, 2))


def test_sequential_mode_is_ddim_and_parallel_rounds_follow_the_stale_input_recursion():
    """3 stages, stride 2 (4 devices): with warm-up over every step (no staleness) the shard_map
    sampler is the plain DDIM sampler; with 1 warm-up step it equals the plain transcription of
    the stale-input recursion (its last round is a partial one) and differs from sequential."""
    model, params, x_T = _model()
    staged = asyncdiff.mlp_stages(model, params)

    def denoise(x, logsnr):
        a, s = schedules.alpha_sigma(logsnr)
        inp = parameterization.network_input(x, a, s, "v")
        out = model.apply({"params": params}, inp, _noise_cond(jnp.full((x.shape[0],), logsnr)))
        return parameterization.denoised(x, out, a, s, "v")

    ddim = jax.jit(lambda x: samplers.ddim(denoise, x, GRID))(x_T)
    kw = dict(num_stages=3, stride=2, kind="v", noise_cond=_noise_cond)
    seq = asyncdiff.sample(staged, x_T, GRID, warmup=6, **kw)
    np.testing.assert_allclose(np.asarray(seq), np.asarray(ddim), rtol=1e-5, atol=1e-5)
    got = asyncdiff.sample(staged, x_T, GRID, warmup=1, **kw)
    want = jax.jit(functools.partial(asyncdiff.reference, staged, warmup=1, **kw))(x_T, GRID)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(got) - np.asarray(seq)).max() > 1e-3
