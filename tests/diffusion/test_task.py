"""The diffusion tasks: DiT shapes and errors, training lowers the loss, sharded steps agree."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib, main
from netlab.diffusion.dit import DiT, preset
from netlab.errors import UserError
from netlab.train.trainer import Trainer

SMALL_DIT = {
    "model.depth": "1",
    "model.width": "32",
    "model.num_heads": "2",
    "train.batch_size": "16",
    "eval.num_samples": "20",
    "diffusion.sample_steps": "4",
}


def test_dit_shapes_presets_and_zero_init():
    model = DiT(image_size=8, channels=1, patch=2, width=32, depth=2, num_heads=2, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    variables = jax.jit(model.init)(jax.random.key(1), x, jnp.zeros(3), jnp.zeros(3, jnp.int32))
    out = jax.jit(model.apply)(variables, x, jnp.ones(3), jnp.array([0, 5, 10]))
    assert out.shape == x.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)  # adaLN-Zero: the final layer starts at zero
    assert preset("XL/2") == dict(depth=28, width=1152, num_heads=16, patch=2)
    with pytest.raises(UserError, match="unknown DiT preset"):
        preset("M/3")
    with pytest.raises(UserError, match="model.patch=3 does not divide the image size 8"):
        DiT(image_size=8, channels=1, patch=3, width=32, depth=1, num_heads=2).init(
            jax.random.key(0), x, jnp.zeros(3)
        )


def test_bf16_compute_keeps_float32_time_embedding():
    model = DiT(
        image_size=8, channels=1, patch=4, width=32, depth=1, num_heads=2, dtype=jnp.bfloat16
    )
    x = jnp.ones((2, 8, 8, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(2))
    p = jax.tree.leaves(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in p)
    apply = functools.partial(model.apply, capture_intermediates=True)
    _, inter = jax.eval_shape(apply, variables, x, jnp.array([937.3, 998.39]))
    t_emb = inter["intermediates"]["t_embed"]["__call__"][0]
    assert t_emb.dtype == jnp.float32


def test_toy_training_lowers_the_loss_and_samples_the_modes(tmp_path):
    cfg = configlib.load(
        "configs/diffusion/toy2d.py:cpu",
        overrides={"train.steps": "100", "optimizer.warmup_steps": "20", "eval.num_samples": "500"},
    )
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    init = trainer.init_state()
    held_out = (  # 5 batches and keys, stacked: the jitted loss maps one copy of loss_fn
        jax.tree.map(lambda *b: np.stack(b), *[trainer.global_batch(10_000 + i) for i in range(5)]),
        jax.vmap(jax.random.key)(jnp.arange(5)),
    )

    @jax.jit  # one program for the held-out loss (eager calls re-trace op by op)
    def loss(params):
        per_batch = lambda bk: trainer.task.loss_fn(params, {}, bk[0], bk[1], True)[0]
        return jnp.mean(jax.lax.map(per_batch, held_out))

    initial = loss(init.params)
    state = trainer.init_state()
    for step in range(100):  # held-out loss ~0.55x initial, sliced W2 ~0.3x untrained
        state, _ = trainer.train_step(state, trainer.global_batch(step))
    assert loss(state.params) < 0.75 * initial
    scalars, images = trainer.task.evaluate(state.params, {}, 100, str(tmp_path))
    untrained, _ = trainer.task.evaluate(trainer.init_state().params, {}, 0, str(tmp_path))
    assert scalars["sliced_wasserstein"] < 0.5 * untrained["sliced_wasserstein"]
    assert scalars["data_nll"] < untrained["data_nll"] - 0.5  # samples moved onto the modes
    assert images["samples"].dtype == np.uint8


def _two_steps(devices, **mesh):
    over = dict(SMALL_DIT, **{f"mesh.{k}": str(v) for k, v in mesh.items()})
    cfg = configlib.load("configs/diffusion/digits_dit.py:cpu", overrides=over)
    trainer = Trainer(cfg, devices=devices)
    state = trainer.init_state()
    for step in range(2):
        state, metrics = trainer.train_step(state, trainer.global_batch(step))
    return trainer, jax.device_get(state.params), float(metrics["loss"])


@functools.lru_cache(maxsize=1)
def _single_device_reference():
    return _two_steps(jax.devices()[:1], data=1)[1:]


# data x fsdp covers both axes (pure data parallelism: tests/train/test_sharding.py)
@pytest.mark.parametrize("mesh", [dict(data=2, fsdp=4)])
def test_sharded_dit_step_equals_single_device(mesh):
    ref, ref_loss = _single_device_reference()
    trainer, params, loss = _two_steps(jax.devices(), **mesh)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref)
    if mesh.get("fsdp", 1) > 1:
        spec = trainer.state_shardings.params["block0"]["attn"]["qkv"].spec
        assert spec[0] == "fsdp", spec


def test_digits_evaluation_reports_fd_and_a_grid(tmp_path, fast_digits_fd):
    # Two data-parallel devices: the FD classifier must not inherit the Trainer's batch sharding.
    cfg = configlib.load("configs/diffusion/digits_dit.py:cpu", overrides=SMALL_DIT)
    cfg.mesh.data = 2
    trainer = Trainer(cfg, devices=jax.devices()[:2])
    scalars, images = trainer.evaluate(trainer.init_state(), str(tmp_path))
    assert scalars["digits_fd"] > scalars["digits_fd_real_floor"] > 0
    assert (tmp_path / "fd_classifier.npz").exists()  # trained once, cached in the workdir
    assert images["samples"].ndim == 2 and images["samples"].dtype == np.uint8


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"diffusion.sampler": "plms"}, "diffusion.sampler='plms': unknown sampler; choose one of"),
        ({"model.backbone": "vit"}, "model.backbone='vit': unknown backbone"),
        ({"diffusion.schedule": "cosin"}, "did you mean 'cosine'"),
        ({"diffusion.parameterization": "score"}, "diffusion.parameterization='score'"),
        ({"diffusion.weighting": "snr"}, "diffusion.weighting='snr'"),
        ({"diffusion.time_sampling": "beta"}, "diffusion.time_sampling='beta'"),
        ({"diffusion.grid": "log"}, "diffusion.grid='log'"),
        (
            {"diffusion.sampler": "ddim", "diffusion.sampler_kwargs": {"etta": 1.0}},
            "diffusion.sampler_kwargs.etta: not an option of sampler 'ddim'; choose from eta; did",
        ),
        (
            {"diffusion.sampler": "dc_solver", "diffusion.sampler_kwargs": {"ratios": (1.0, 1.0)}},
            "2 ratios for 20 sampling steps",
        ),
        ({"diffusion.sample_steps": "0"}, "diffusion.sample_steps=0: expected an integer >= 1"),
        (
            {"model.patch": "3"},
            "model.patch=3 does not divide the image size 8; choose one of 1, 2, 4",
        ),
        ({"model.num_heads": "3"}, "model.num_heads=3"),
        ({"model.variant": "M/3"}, "model.variant='M/3'"),
        ({"model.backbone": "mlp"}, "model.backbone='mlp' needs vector data"),
        ({"model.backbone": "unet", "model.width": "48"}, "multiple of 32"),
        ({"model.mlp": "sparse"}, "model.mlp='sparse': unknown mlp"),
        ({"model.mlp": "moe"}, "model.mlp='moe' needs model.mlp_kwargs.num_experts"),
    ],
)
def test_bad_diffusion_config_is_one_line_at_construction(overrides, match):
    cfg = configlib.load("configs/diffusion/digits_dit.py:cpu", overrides=overrides)
    with pytest.raises(UserError, match=match) as err:
        Trainer(cfg, devices=jax.devices()[:1])
    assert "\n" not in str(err.value)


def test_cli_bad_sampler_exits_2_and_writes_nothing(tmp_path, capsys):
    work = tmp_path / "run"
    code = main.main(
        [
            "--config",
            "configs/diffusion/digits_dit.py:cpu",
            "--workdir",
            str(work),
            "--config.diffusion.sampler=dc_solvr",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "did you mean 'dc_solver'" in err, err
    assert not work.exists()


def test_mixture_log_prob_matches_scipy():
    from scipy import stats

    from netlab.diffusion.oracle import GaussianMixture

    mu, sd, w = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([[0.5, 1.0], [0.3, 0.2]]), [0.3, 0.7]
    x = np.random.default_rng(0).standard_normal((6, 2)) * 2
    want = np.log(
        sum(wk * stats.multivariate_normal(m, np.diag(s**2)).pdf(x) for wk, m, s in zip(w, mu, sd))
    )
    np.testing.assert_allclose(GaussianMixture(mu, sd, np.array(w)).log_prob(x), want, rtol=1e-10)
