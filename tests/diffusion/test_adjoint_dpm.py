"""AdjointDPM on the exact Gaussian-mixture denoiser: the adjoint gradients of a loss on the
sample with respect to the initial noise and to the conditioning (the mixture's means) equal
backpropagation through the same PF-ODE solver."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import adjoint_dpm
from netlab.diffusion.oracle import GaussianMixture

STDS, WEIGHTS = np.array([[0.6, 0.7], [0.8, 0.6]]), np.array([0.4, 0.6])


def _denoise(x, logsnr, means):
    return GaussianMixture(means, STDS, WEIGHTS).denoise(x, logsnr)


def test_adjoint_gradients_equal_backprop_through_the_sampler():
    rng = np.random.default_rng(0)
    means = jnp.asarray([[-1.0, 0.5], [1.0, -0.5]])
    x_T, target = rng.standard_normal((8, 2)), rng.standard_normal((8, 2))
    with jax.enable_x64(True):

        def loss(x_T, means, gradient):
            x0 = adjoint_dpm.sample(_denoise, x_T, means, -6.0, 6.0, 128, "heun", gradient)
            return jnp.sum((x0 - target) ** 2)

        @jax.jit
        def both(x_T, means):
            vg = jax.value_and_grad(loss, argnums=(0, 1))
            return vg(x_T, means, "adjoint"), vg(x_T, means, "backprop")

        (va, ga), (vb, gb) = both(jnp.asarray(x_T), jnp.asarray(means, jnp.float64))
    assert float(va) == float(vb)
    for u, v in zip(ga, gb):
        assert np.linalg.norm(u - v) <= 3e-5 * np.linalg.norm(v), (u, v)
        assert np.linalg.norm(v) > 1e-3  # a real gradient
