"""ImageDiffusion (CIFAR-10 / ImageNet-latent configs): config loading, a loss step on a user npz,
deterministic batches, the grid picture, tfds mock data when tensorflow-datasets is installed."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from netlab import configlib
from netlab.diffusion.image_task import ImageDiffusion, rgb_grid
from netlab.errors import UserError

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "diffusion"


def _latents(tmp_path, n=40, side=8):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 1000, n)
    x = (rng.standard_normal((n, side, side, 4)) + (label % 4)[:, None, None, None]).astype(
        np.float32
    ) / 0.18215
    np.savez(tmp_path / "lat.npz", x=x, label=label)
    return str(tmp_path / "lat.npz")


@pytest.mark.parametrize("name", ["cifar10_dit", "imagenet_latent_dit"])
@pytest.mark.parametrize("preset", ["cpu", "gpu", "pod"])
def test_configs_load(name, preset):
    c = configlib.load(str(CONFIGS / f"{name}.py"), preset)
    assert c.task == "diffusion.image" and c.data.image_size % c.model.patch == 0


@pytest.mark.slow
def test_npz_latents_train_and_evaluate(tmp_path):
    c = configlib.load(
        str(CONFIGS / "imagenet_latent_dit.py"),
        "cpu",
        {
            "data.source": "npz",
            "data.path": _latents(tmp_path),
            "data.image_size": 8,
            "model.patch": 2,
            "eval.num_samples": 10,
        },
    )
    task = ImageDiffusion(c)
    b1, b2 = task.train_batch(3), task.train_batch(3)
    np.testing.assert_array_equal(b1["x"], b2["x"])  # a pure function of the step
    assert b1["x"].shape == (8, 8, 8, 4) and abs(float(b1["x"].std()) - 1.1) < 0.3  # scaled latents
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, batch, rng):
        (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(p, {}, batch, rng, True)
        u, s = opt.update(g, s)
        return optax.apply_updates(p, u), s, loss

    batch = jax.tree.map(jnp.asarray, b1)
    losses = []
    for i in range(8):
        params, state, loss = step(params, state, batch, jax.random.key(i % 2))
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-2] < losses[0] and losses[-1] < losses[1]
    c.diffusion.sample_steps = 3
    scalars, images = task.evaluate(params, {}, 0, str(tmp_path))
    assert images["samples"].dtype == np.uint8 and images["samples"].shape[-1] == 3
    assert set(scalars) >= {"sample_std_c0", "data_std_c0"}


def test_rgb_grid_layout():
    imgs = np.zeros((3, 2, 2, 3), np.float32)
    imgs[1] = 1.0
    g = rgb_grid(imgs, cols=2)
    assert g.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert (g[1:3, 4:6] == 255).all() and (g[1:3, 1:3] == 0).all()


def test_unet_backbone_builds(tmp_path):
    c = configlib.load(
        str(CONFIGS / "cifar10_dit.py"),
        "cpu",
        {
            "data.source": "npz",
            "data.path": _latents(tmp_path, 4, 32),
            "data.channels": 4,
            "model.backbone": "unet",
            "model.width": 32,
            "model.channel_mult": (1, 2),
            "model.num_res_blocks": 1,
            "model.attention_resolutions": (8,),
        },
    )
    task = ImageDiffusion(c)
    shapes = jax.eval_shape(task.init_variables, jax.random.key(0))
    assert "conv_in" in shapes["params"] and "label_embed" in shapes["params"]
    c.model.backbone = "vit"
    with pytest.raises(UserError, match="model.backbone='vit': unknown backbone") as err:
        ImageDiffusion(c)
    assert "\n" not in str(err.value)


def test_missing_npz_path_is_one_line():
    c = configlib.load(str(CONFIGS / "imagenet_latent_dit.py"), "cpu", {"data.source": "npz"})
    with pytest.raises(ValueError, match="needs data.path") as err:
        ImageDiffusion(c)
    assert "\n" not in str(err.value)


def test_cifar10_with_tfds_mock_data():
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="tensorflow-datasets not installed (data extra)"
    )
    c = configlib.load(str(CONFIGS / "cifar10_dit.py"), "cpu")
    with tfds.testing.mock_data(num_examples=20):
        task = ImageDiffusion(c)
        b = task.train_batch(0)
    assert b["x"].shape == (32, 32, 32, 3) and b["x"].min() >= -1 and b["x"].max() <= 1
