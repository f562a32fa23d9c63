"""DDNM / DDNM+: each operator's A^+ is the Moore-Penrose pseudo-inverse (numpy's pinv of the
dense matrix, A A^+ A = A) with the SVD it reports; noise-free DDNM lands on A x = y; with the
exact mixture denoiser DDNM's samples sit in the consistent set around the posterior mode; DDNM+
keeps every range-space coordinate at DDIM's variance sigma_s^2 in both of its regimes."""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.diffusion import ddnm, schedules
from netlab.diffusion.oracle import GaussianMixture

RNG = np.random.default_rng(0)
RANK2 = RNG.standard_normal((3, 2)) @ RNG.standard_normal((2, 5))  # 3 x 5 of rank 2
CASES = {  # name: (operator, shape of one example)
    "inpainting": (ddnm.inpainting(RNG.random((4, 4, 1)) < 0.5), (4, 4, 1)),
    "super_resolution": (ddnm.super_resolution(2), (4, 4, 2)),
    "colorization": (ddnm.colorization(), (2, 2, 3)),
    "deblur": (ddnm.deblur([1.0, 2.0, 3.0, 2.0, 1.0], 5, 4), (5, 4, 1)),
    "general": (ddnm.general(RANK2), (5,)),
}


def _dense(fn, shape):
    """The matrix of a linear map on flattened examples of `shape` (traceable)."""
    d = int(np.prod(shape))
    out = fn(jnp.eye(d, dtype=jnp.float64).reshape((d,) + shape))
    return out.reshape(d, -1).T


def test_operators_pseudo_inverse_and_svd():
    with jax.enable_x64(True):

        @jax.jit
        def matrices():
            out = {}
            for name, (op, shape) in CASES.items():
                y_shape = jax.eval_shape(op.A, jnp.zeros((1,) + shape)).shape[1:]
                out[name] = (_dense(op.A, shape), _dense(op.pinv, y_shape), _dense(op.vt, shape))
            return out

        for name, (a, p, vt) in jax.tree.map(np.asarray, matrices()).items():
            op, shape = CASES[name]
            np.testing.assert_allclose(a @ p @ a, a, atol=1e-10, err_msg=name)
            np.testing.assert_allclose(p, np.linalg.pinv(a, rcond=1e-8), atol=1e-8, err_msg=name)
            # vt is orthogonal and carries A's singular values: A V vanishes where they are 0
            np.testing.assert_allclose(vt @ vt.T, np.eye(len(vt)), atol=1e-10, err_msg=name)
            spectral_shape = jax.eval_shape(op.vt, jnp.zeros((1,) + shape)).shape[1:]
            s = np.broadcast_to(op.singulars, spectral_shape).ravel()
            ref = np.linalg.svd(a, compute_uv=False)
            np.testing.assert_allclose(np.sort(s[s > 0]), np.sort(ref[ref > 1e-8]), rtol=1e-8)
            assert np.abs((a @ vt.T)[:, s == 0]).max(initial=0.0) < 1e-10, name


def _oracle(shape, seed):
    """A two-component mixture over examples of `shape` and its denoiser on (N, *shape)."""
    d = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    gm = GaussianMixture(rng.standard_normal((2, d)), np.full((2, d), 0.5), np.array([0.4, 0.6]))
    return gm, lambda x, l: gm.denoise(x.reshape(x.shape[0], -1), l).reshape(x.shape)


def test_noise_free_ddnm_output_satisfies_the_measurement():
    """Two DDNM steps (log-SNR -2 -> 1 -> sigma = 0) with the exact mixture denoiser for each
    operator: the output is the last x^0|t, and A x = y to float precision (the full sampler is
    checked on a mixture below)."""
    rng = np.random.default_rng(1)  # host inputs: no PRNG to compile
    inputs = {
        name: tuple(rng.standard_normal((4,) + shape).astype(np.float32) for _ in range(3))
        for name, (_, shape) in CASES.items()
    }

    @jax.jit
    def run(inputs):
        out = {}
        for i, (name, (op, shape)) in enumerate(CASES.items()):
            _, denoise = _oracle(shape, i)
            x_true, x, noise = inputs[name]
            y = op.A(x_true)
            for l_t, l_s in [(-2.0, 1.0), (1.0, jnp.inf)]:
                x, _ = ddnm.step(denoise, x, l_t, l_s, op, y, noise, eta=0.85)
            out[name] = (op.A(x) - y, y)
        return out

    errs = {n: float(jnp.abs(d).max() / jnp.abs(y).max()) for n, (d, y) in run(inputs).items()}
    assert max(errs.values()) < 1e-5, errs


def test_ddnm_on_a_mixture_stays_consistent_near_the_posterior_mode():
    """Modes at +-1.5 (1, 1, 1); y = A m_plus for A = [1, 1, 0] / sqrt 2: the posterior given
    A x = y is the + component conditioned on the line, whose mode is m_plus. Unconstrained
    sampling puts 40% of the samples at the other mode."""
    m = np.full(3, 1.5)
    gm = GaussianMixture(np.stack([-m, m]), np.full((2, 3), 0.5), np.array([0.4, 0.6]))
    a = np.array([[1.0, 1.0, 0.0]]) / np.sqrt(2.0)
    op = ddnm.general(a)
    grid = jnp.asarray(schedules.sampling_grid(schedules.Schedule("cosine"), 16, final="zero"))
    x_T = np.random.default_rng(1).standard_normal((512, 3)).astype(np.float32)
    y = jnp.broadcast_to(jnp.asarray(a @ m, jnp.float32), (512, 1))

    @jax.jit
    def run(x_T, key):  # eta = 0.85, the authors' default
        restored = ddnm.sample(gm.denoise, x_T, grid, op, y, key)
        free = ddnm.sample(gm.denoise, x_T, grid, ddnm.inpainting(np.zeros(3)), y, key)
        return restored, free

    restored, free = map(np.asarray, run(x_T, jax.random.key(2)))
    np.testing.assert_allclose(restored @ a.T, np.asarray(y), atol=1e-5)
    d_restored = np.linalg.norm(restored - m, axis=1).mean()
    d_free = np.linalg.norm(free - m, axis=1).mean()
    assert d_restored < 0.5 * d_free, (d_restored, d_free)
    # the conditioned component has mean m_plus and spread 0.5 in the two null-space directions
    # (E|N(0, 0.25 I_2)| = 0.63); DDNM is not an exact posterior sampler, so only roughly
    np.testing.assert_allclose(restored.mean(0), m, atol=0.1)
    assert 0.3 < d_restored < 0.8, d_restored


def test_ddnm_plus_keeps_ddim_variance_in_the_range_space():
    """One DDNM+ step with a fixed clean estimate c: given x, the randomness is y's noise and the
    fresh noise. Singular values 2 (the full correction, added noise sqrt(sigma_s^2 -
    a^2 sigma_y^2 / s^2)) and 0.1 (the shrunk correction): both range coordinates of x_s have
    variance sigma_s^2; the null coordinates eta^2 sigma_s^2."""
    with jax.enable_x64(True):
        v = np.linalg.qr(np.random.default_rng(1).standard_normal((4, 4)))[0]
        a_mat = np.diag([2.0, 0.1]) @ v[:, :2].T  # 2 x 4, singular values 2 and 0.1
        op = ddnm.general(a_mat)
        n, sigma_y, eta = 40000, 0.2, 0.6
        c = jnp.asarray([0.3, -0.2, 0.5, 0.1])
        x_star = np.array([1.0, 0.5, -0.5, 0.2])
        denoise = lambda x, l: jnp.broadcast_to(c, x.shape)  # noqa: E731

        rng = np.random.default_rng(2)
        y = np.asarray(op.A(x_star[None])) + sigma_y * rng.standard_normal((n, 2))
        noise = rng.standard_normal((n, 4))

        @jax.jit
        def run(y, noise):
            # l_s = 0: alpha = sigma = 1/sqrt 2, a sigma_y / s = 0.07 (s = 2), 1.41 (s = 0.1)
            x_s, _ = ddnm.step(denoise, jnp.zeros((n, 4)), 1.0, 0.0, op, y, noise, eta, sigma_y)
            return op.vt(x_s)

        spectral = np.asarray(run(y, noise))
        var = spectral.var(0)
        sigma_s2 = 0.5
        np.testing.assert_allclose(var[:2], sigma_s2, rtol=0.03)
        np.testing.assert_allclose(var[2:], eta**2 * sigma_s2, rtol=0.03)
