"""AdjointDPM on the exact Gaussian-mixture denoiser: the adjoint gradients of a loss on the
sample with respect to the initial noise and to the conditioning (the mixture's means), and
those with respect to a small DiT's class embeddings, equal backpropagation through the same
PF-ODE solver."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import adjoint_dpm
from netlab.diffusion.dit import DiT
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


def test_adjoint_gradient_of_a_dit_class_embedding_equals_backprop():
    """The guided-optimisation setting of bench/adjoint_guidance.py on a tiny untrained DiT:
    d loss(x0) / d (label table) by the adjoint equals backpropagation through the same solver
    up to its discretisation error (Heun, 64 steps in u)."""
    with jax.enable_x64(True):
        dit = DiT(image_size=4, channels=1, patch=2, width=8, depth=1, num_heads=2,
                  num_classes=3, dtype=jnp.float64)  # fmt: skip
        x = jnp.zeros((1, 4, 4, 1))
        shapes = nn.unbox(
            jax.eval_shape(dit.init, jax.random.key(0), x, jnp.zeros(1), jnp.zeros(1, int))
        )
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape)), shapes)
        params = params["params"]
        labels = jnp.arange(4) % 3
        x_T = jnp.asarray(rng.standard_normal((4, 4, 4, 1)))
        target = jnp.asarray(rng.standard_normal((4, 4, 4, 1)))

        def denoise(x, logsnr, table):  # v-prediction -> x0 = alpha x_t - sigma v
            p = dict(params, label_embed=table)
            v = dit.apply({"params": p}, x, jnp.full((4,), -logsnr * 12.5), labels)
            return jax.nn.sigmoid(logsnr) ** 0.5 * x - jax.nn.sigmoid(-logsnr) ** 0.5 * v

        def loss(table, gradient):
            x0 = adjoint_dpm.sample(denoise, x_T, table, -4.0, 4.0, 64, "heun", gradient)
            return jnp.sum((x0 - target) ** 2)

        @jax.jit
        def both(table):
            return jax.grad(loss)(table, "adjoint"), jax.grad(loss)(table, "backprop")

        ga, gb = both(params["label_embed"])
    # measured 1.2e-5 (256 steps: 1.8e-7, second order); weights of std 0.3 make the ODE stiffer
    assert np.linalg.norm(ga - gb) <= 1e-4 * np.linalg.norm(gb), (ga, gb)
    assert np.linalg.norm(gb[:3]) > 1e-3  # the used rows get a real gradient
