"""Cas-DM stop-gradient, SSIM against a direct numpy computation, LPIPS from a weights file."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.diffusion import cas_dm, image_metrics, lpips


class _Tiny(nn.Module):
    """A backbone-shaped stand-in `(x, noise_cond, labels) -> image` that compiles in a blink."""

    @nn.compact
    def __call__(self, x, noise_cond, labels=None):
        h = nn.silu(nn.Conv(8, (3, 3))(x) + nn.Dense(8)(noise_cond[:, None])[:, None, None])
        return nn.Conv(1, (3, 3))(h)


def _tiny():
    return _Tiny()


def _setup(stop_gradient=True):
    model = cas_dm.CasDM(_tiny(), _tiny(), stop_gradient=stop_gradient)
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.uniform(-1, 1, (3, 4, 4, 1)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal(x0.shape), jnp.float32)
    alpha, sigma = jnp.float32(0.8), jnp.float32(0.6)
    x_t = alpha * x0 + sigma * eps
    t = jnp.full((3,), 2.0)
    params = jax.jit(model.init)(jax.random.key(0), x_t, alpha, sigma, t)["params"]
    # Move off the zero-initialised output layers so every path carries gradient.
    params = jax.tree.map(
        lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)), params
    )
    return model, params, (x_t, alpha, sigma, t, x0, eps)


def _grads(stop_gradient):
    """Gradients of (x0 + metric terms, eps term), one compile per stop_gradient setting."""
    model, params, (x_t, alpha, sigma, t, x0, eps) = _setup(stop_gradient)

    def losses(p):
        eps_hat, x0_hat = model.apply({"params": p}, x_t, alpha, sigma, t)
        _, parts = cas_dm.cas_dm_loss(eps_hat, x0_hat, eps, x0, image_metrics.ssim_distance)
        return jnp.stack([parts["x0_mse"] + parts["metric"], parts["eps_mse"]])

    jac = jax.jit(jax.jacrev(losses))(params)
    return jax.tree.map(lambda j: j[0], jac), jax.tree.map(lambda j: j[1], jac)


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(tree)))


@pytest.mark.slow
def test_metric_loss_gradient_wrt_eps_module_is_exactly_zero():
    g, g_eps = _grads(True)
    assert all(np.all(np.asarray(leaf) == 0.0) for leaf in jax.tree.leaves(g["eps_module"]))
    assert _norm(g["x0_module"]) > 1e-3
    # Without the stop-gradient the same loss does reach the eps-module (the test can fail).
    assert _norm(_grads(False)[0]["eps_module"]) > 1e-3
    # And the eps-module still learns from its own eps loss.
    assert _norm(g_eps["eps_module"]) > 1e-3


def _ssim_numpy(x, y, win, sigma=1.5, data_range=2.0):
    g = image_metrics.gaussian_window(win, sigma).astype(np.float64)
    w2 = np.outer(g, g)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n, h, w, c = x.shape
    out = np.zeros(n)
    for b in range(n):
        vals = []
        for ch in range(c):
            for i in range(h - win + 1):
                for j in range(w - win + 1):
                    px, py = x[b, i : i + win, j : j + win, ch], y[b, i : i + win, j : j + win, ch]
                    mx, my = np.sum(w2 * px), np.sum(w2 * py)
                    vx, vy = np.sum(w2 * (px - mx) ** 2), np.sum(w2 * (py - my) ** 2)
                    cov = np.sum(w2 * (px - mx) * (py - my))
                    vals.append(
                        (2 * mx * my + c1)
                        * (2 * cov + c2)
                        / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                    )
        out[b] = np.mean(vals)
    return out


def test_ssim_matches_direct_computation():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 9, 10, 2))
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1)
    got = np.asarray(image_metrics.ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    np.testing.assert_allclose(got, _ssim_numpy(x, y, 7), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(image_metrics.ssim_distance(jnp.asarray(x), jnp.asarray(x))), 0.0, atol=1e-6
    )


def _lpips_file(path, rng):
    shapes = {
        0: (64, 3, 11, 11),
        3: (192, 64, 5, 5),
        6: (384, 192, 3, 3),
        8: (256, 384, 3, 3),
        10: (256, 256, 3, 3),
    }
    d = {}
    for i, s in shapes.items():
        d[f"features.{i}.weight"] = (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(
            np.float32
        )
        d[f"features.{i}.bias"] = 0.01 * rng.standard_normal(s[0]).astype(np.float32)
    for l, c in enumerate((64, 192, 384, 256, 256)):
        d[f"lin{l}.model.1.weight"] = rng.uniform(0, 1, (1, c, 1, 1)).astype(np.float32)
    np.savez(path, **d)
    return d


def test_lpips_from_file(tmp_path):
    rng = np.random.default_rng(2)
    raw = _lpips_file(tmp_path / "w.npz", rng)
    metric = lpips.metric_from_file(tmp_path / "w.npz")
    x = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
    y = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
    dxy, dyx, dxx = (np.asarray(jax.jit(metric)(a, b)) for a, b in ((x, y), (y, x), (x, x)))
    assert np.all(dxy > 0) and np.allclose(dxy, dyx, rtol=1e-5) and np.allclose(dxx, 0.0, atol=1e-7)
    torch = pytest.importorskip(
        "torch", reason="torch (bench extra) gives the independent LPIPS check"
    )
    f = torch.nn.functional
    h = (
        torch.tensor(np.asarray(x)).permute(0, 3, 1, 2) - torch.tensor(lpips.SHIFT)[:, None, None]
    ) / torch.tensor(lpips.SCALE)[:, None, None]
    k = (
        torch.tensor(np.asarray(y)).permute(0, 3, 1, 2) - torch.tensor(lpips.SHIFT)[:, None, None]
    ) / torch.tensor(lpips.SCALE)[:, None, None]
    total = 0.0
    for n, (i, stride, pad) in enumerate(lpips.CONVS):
        wt, bt = torch.tensor(raw[f"features.{i}.weight"]), torch.tensor(raw[f"features.{i}.bias"])
        h, k = (torch.relu(f.conv2d(z, wt, bt, stride=stride, padding=pad)) for z in (h, k))
        nh, nk = (z / (z.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for z in (h, k))
        total = total + (torch.tensor(raw[f"lin{n}.model.1.weight"]) * (nh - nk) ** 2).sum(1).mean(
            (1, 2)
        )
        if n < 2:
            h, k = f.max_pool2d(h, 3, 2), f.max_pool2d(k, 3, 2)
    np.testing.assert_allclose(dxy, total.numpy(), rtol=1e-3)


def test_lpips_missing_key_is_one_line(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros(1))
    with pytest.raises(ValueError, match="lacks features.0.weight") as err:
        lpips.load_weights(tmp_path / "bad.npz")
    assert "\n" not in str(err.value)
