"""Every diffusion registry entry, built from a config: each backbone takes one Trainer step (with
`train.remat` on, which must reach it), each sampler makes one sampling call on the closed-form
Gaussian-mixture denoiser. The covered names must equal the registry's, so a new entry without a
case here fails. The DiT case is DiT-MoE's shape: every second block's MLP is a stand-in sparse
MLP (tests/diffusion/parts.py) named by import path, whose sown auxiliary loss must reach the
task loss; another test checks which blocks get it."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion import guidance, samplers, schedules
from netlab.diffusion.dit import DiT
from netlab.diffusion.oracle import GaussianMixture
from netlab.diffusion.registries import BACKBONES, DISCRETE_SAMPLERS, SAMPLERS
from netlab.diffusion.task import Toy2D, build_backbone
from netlab.nn.precision import Policy
from netlab.train.trainer import Trainer
from tests.diffusion.parts import SownMlp

DIGITS = "configs/diffusion/digits_dit.py:cpu"
TINY_DIT = {
    "model.depth": "2",
    "model.width": "16",
    "model.num_heads": "2",
    "model.patch": "4",
    "train.batch_size": "8",
    "eval.num_samples": "8",
    "diffusion.sample_steps": "3",
}


def _rgb_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "rgb.npz",
        x=rng.uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32),
        label=rng.integers(0, 10, 16),
    )
    return str(tmp_path / "rgb.npz")


BACKBONE_CASES = {  # the x0 weighting makes loss = x0_mse + aux losses exactly
    "dit": lambda tmp: (
        DIGITS,
        dict(
            TINY_DIT, **{"diffusion.weighting": "x0", "model.mlp": "tests.diffusion.parts:SownMlp"}
        ),
    ),
    "unet": lambda tmp: (
        "configs/diffusion/cifar10_dit.py:cpu",
        {
            "data.source": "npz",
            "data.path": _rgb_npz(tmp),
            "data.image_size": "8",
            "model.backbone": "unet",
            "model.width": "32",
            "model.channel_mult": "(1,)",
            "model.num_res_blocks": "1",
            "model.attention_resolutions": "()",
            "model.num_heads": "2",
            "train.batch_size": "4",
        },
    ),
    "mlp": lambda tmp: (
        "configs/diffusion/toy2d.py:cpu",
        {"model.width": "16", "model.depth": "1", "train.batch_size": "16"},
    ),
    "rin": lambda tmp: (
        "configs/diffusion/digits_rin.py:backbone=rin",
        dict(
            TINY_DIT,
            **{"model.depth": "1", "model.rin_compute": "1", "model.rin_interface": "8"},
            **{"model.rin_latents": "2", "model.rin_self_cond": "0"},  # one pass per step
        ),
    ),
    "flowdcn": lambda tmp: (
        "configs/diffusion/digits_rin.py:backbone=flowdcn",
        dict(TINY_DIT, **{"model.depth": "1", "model.dcn_groups": "2"}),
    ),
    "token_routing": lambda tmp: (
        "configs/diffusion/digits_rin.py:backbone=dit,routing=dynamic",
        dict(TINY_DIT, **{"model.depth": "1"}),
    ),
    "uvit": lambda tmp: (  # with simple diffusion's multiscale loss (the config's default)
        "configs/diffusion/digits_uvit.py:backbone=uvit",
        dict(
            TINY_DIT,
            **{"model.width": "32", "model.num_res_blocks": "1"},
            **{"model.vit_width": "16", "model.depth": "1"},
        ),
    ),
    "dic": lambda tmp: (
        "configs/diffusion/digits_uvit.py:backbone=dic",
        dict(TINY_DIT, **{"model.width": "8", "model.dic_depths": "(1, 1, 1, 1, 1)"}),
    ),
    "dimr": lambda tmp: (
        "configs/diffusion/digits_uvit.py:backbone=dimr",
        dict(
            TINY_DIT,
            **{"model.width": "8", "model.depth": "1", "model.patch": "2"},
            **{"model.dimr_conv_width": "4", "model.dimr_conv_depth": "1"},
            **{"model.dimr_kernel": "3"},
        ),
    ),
    "edm2_unet": lambda tmp: (  # test_edm2_unet compiles a step of EDM2's optimizer
        "configs/diffusion/digits_edm2.py:backbone=edm2_unet",
        dict(TINY_DIT, **{"model.width": "8", "model.num_blocks": "1"}),
    ),
}


def test_every_backbone_and_sampler_has_a_case():
    assert sorted(BACKBONE_CASES) == BACKBONES.names()
    assert sorted(SAMPLER_KWARGS) == SAMPLERS.names()


# Traced with the Trainer step, not compiled (13-25 s each on 2 cores): their own test files
# compile a gradient step (test_unet trains the U-Net); the trace still proves the config builds
# them and that remat reaches them.
TRACE_ONLY = ("dic", "dimr", "edm2_unet", "unet", "uvit")


@pytest.mark.parametrize("name", sorted(BACKBONE_CASES))
def test_backbone_trains_one_step_with_remat(name, tmp_path):
    path, over = BACKBONE_CASES[name](tmp_path)
    cfg = configlib.load(path, overrides=dict(over, **{"train.remat": "full"}))
    assert cfg.model.backbone == name
    if name == "dit":
        with cfg.unlocked():  # optional keys the digits config does not declare
            cfg.model.mlp_every, cfg.model.mlp_kwargs = 2, {"hidden": 8, "weight": 0.25}
    trainer = Trainer(cfg, devices=jax.devices()[:1])
    batch = trainer.global_batch(0)
    if name in TRACE_ONLY:  # abstract state: neither init nor the step is compiled
        with trainer.context():
            state = jax.eval_shape(trainer._init, jax.random.key(cfg.seed))
    else:
        state = trainer.init_state()
    jaxpr = str(jax.make_jaxpr(trainer._train_step)(state, batch))
    assert "remat" in jaxpr or "checkpoint" in jaxpr  # train.remat reached the backbone
    if name in TRACE_ONLY:
        return
    state, metrics = trainer.train_step(state, batch)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
    assert float(metrics["grad_norm"]) > 0
    if name == "dit":  # the sparse MLP's sown loss is part of the task loss
        balance = float(metrics["aux/load_balance"])
        assert balance > 0 and float(metrics["aux/train_mode"]) == 1.0  # train=True got there
        assert float(metrics["loss"]) == pytest.approx(float(metrics["x0_mse"]) + balance, rel=1e-5)
        x, t, y = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,)), jnp.zeros((2,), jnp.int32)
        shapes = jax.eval_shape(trainer.task.model_output, state.params, x, t, y)  # no aux here
        assert shapes[0].shape == (2, 8, 8, 1)
    if name == "token_routing":  # the gates' budget term is part of the task loss
        assert float(metrics["aux/routing_budget"]) > 0


# Options that keep each sampler's call cheap (and exercise the options path).
SAMPLER_KWARGS = {
    "ddim": {"eta": 0.5},
    "ddpm": {},
    "heun": {"churn": 1.0},
    "dpmpp_2m": {},
    "unipc": {},
    "dc_solver": {"fit_iters": 3, "fit_points": 4, "reference_steps": 12},
    "cfg_pc": {"num_corrector": 2, "delta": 0.05},
    "flow_euler": {},
    "flow_heun": {},
}
COND = GaussianMixture(np.array([[1.0, 0.5]]), np.array([[0.4, 0.6]]), np.array([1.0]))
UNCOND = GaussianMixture(
    np.array([[-1.0, 0.5], [1.0, 0.5]]), np.full((2, 2), 0.6), np.array([0.5, 0.5])
)


def _oracle(x, logsnr, labels):
    """Label 0: the conditional Gaussian; label 1 (null): the two-mode mixture."""
    return jnp.where((labels == 0)[:, None], COND.denoise(x, logsnr), UNCOND.denoise(x, logsnr))


@pytest.mark.parametrize("name", sorted(SAMPLER_KWARGS))
def test_sampler_from_config_on_the_oracle(name):
    over = {
        "diffusion.sampler": name,
        "diffusion.sampler_kwargs": SAMPLER_KWARGS[name],
        "diffusion.sample_steps": "4",
    }
    d = configlib.load("configs/diffusion/toy2d.py:cpu", overrides=over).diffusion
    kwargs = d.sampler_kwargs.to_dict() if d.sampler_kwargs else {}
    samplers.check(d.sampler, kwargs, data_shape=(2,), num_steps=d.sample_steps)
    grid = jnp.asarray(
        schedules.sampling_grid(schedules.Schedule(d.schedule), d.sample_steps, d.grid), jnp.float32
    )
    denoise = guidance.classifier_free(_oracle, jnp.zeros((16,), jnp.int32), 1, jnp.float32(1.5))
    x = jax.random.normal(jax.random.key(0), (16, 2))
    sched = schedules.Schedule(d.schedule)
    out = jax.jit(
        lambda x, k: samplers.sample(denoise, x, grid, d.sampler, k, schedule=sched, **kwargs)
    )(x, jax.random.key(1))
    assert out.shape == (16, 2) and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.abs(out - x).max()) > 1e-3


def test_sampler_kwargs_reach_the_sampler_through_the_task():
    """ddim with eta = 1 from the config is DDPM, sample for sample."""
    over = {
        "model.width": "16",
        "model.depth": "1",
        "diffusion.sampler": "ddim",
        "diffusion.sampler_kwargs": {"eta": 1.0},
    }
    task = Toy2D(configlib.load("configs/diffusion/toy2d.py:cpu", overrides=over))
    params = nn.unbox(task.init_variables(jax.random.key(0)))["params"]
    ddim_eta1 = task.sample(params, 8, steps=3)
    np.testing.assert_array_equal(ddim_eta1, task.sample(params, 8, method="ddpm", steps=3))


def test_dit_puts_the_sparse_mlp_in_every_second_block():
    model = DiT(
        image_size=8,
        channels=1,
        patch=4,
        width=16,
        depth=4,
        num_heads=2,
        sparse_mlp=functools.partial(SownMlp, hidden=8),
        sparse_every=2,
    )
    x, t = jnp.ones((2, 8, 8, 1)), jnp.zeros(2)
    variables = jax.eval_shape(model.init, jax.random.key(0), x, t)
    for i in range(4):
        mlp = variables["params"][f"block{i}"]["mlp"]
        assert set(mlp) == ({"sparse_in", "sparse_out"} if i % 2 else {"fc1", "fc2"}), (i, mlp)
    apply = functools.partial(model.apply, labels=None, train=True, mutable=["aux_loss"])
    _, cols = jax.eval_shape(apply, variables, x, t)
    assert sorted(cols["aux_loss"]) == ["block1", "block3"]


def test_float64_policy_computes_in_float64():
    """Loss, denoiser output and sampling grid are float64 in a float64 run (traced, not run)."""
    with jax.enable_x64(True):
        over = {
            "model.width": "16",
            "model.depth": "1",
            "train.compute_dtype": "float64",
            "train.batch_size": "8",
        }
        task = Toy2D(configlib.load("configs/diffusion/toy2d.py:cpu", overrides=over))
        params = nn.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]
        loss, (metrics, _) = jax.eval_shape(
            functools.partial(task.loss_fn, train=True),
            params,
            {},
            task.train_batch(0),
            jax.random.key(0),
        )
        assert loss.dtype == jnp.float64 and metrics["x0_mse"].dtype == jnp.float64
        x0_hat, _ = jax.eval_shape(
            task.model_output,
            params,
            jnp.zeros((3, 2), jnp.float64),
            jnp.zeros((3,), jnp.float64),
            None,
        )
        assert x0_hat.dtype == jnp.float64 and task.sampling_grid(4).dtype == jnp.float64
        samples = jax.eval_shape(
            lambda p: task._sample(
                p,
                jnp.zeros((4, 2)),
                task.sampling_grid(4),
                jnp.zeros((4,), jnp.int32),
                "unipc",
                jnp.float64(1.0),
                jax.random.key(0),
            ),
            params,
        )
        assert samples.dtype == jnp.float64
        raw = jax.eval_shape(task.model.apply, {"params": params}, jnp.zeros((3, 2)), jnp.zeros(3))
        assert raw.dtype == jnp.float64  # the network's own output
        for name, path in [("dit", DIGITS), ("unet", DIGITS)]:
            over = {
                "model.backbone": name,
                "model.width": "32",
                "model.depth": "1",
                "train.compute_dtype": "float64",
            }
            model = build_backbone(
                configlib.load(path, overrides=over).model,
                (8, 8, 1),
                10,
                Policy(jnp.float64, jnp.float64),
            )
            x, t, y = jnp.zeros((2, 8, 8, 1)), jnp.zeros(2), jnp.zeros(2, jnp.int32)
            variables = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
            assert jax.eval_shape(model.apply, variables, x, t, y).dtype == jnp.float64, name


DISCRETE_SAMPLER_CASES = ("radd_cached", "tau_leaping")


def test_every_discrete_sampler_samples_from_the_text_config():
    """Each masked-diffusion sampler, named in the RADD byte config, reveals every token of a batch
    (a constant predictor stands in for the network; both samplers in one program)."""
    from netlab.diffusion.radd_task import MASK, RADDText

    assert sorted(DISCRETE_SAMPLER_CASES) == DISCRETE_SAMPLERS.names()
    fns = {}
    for name in DISCRETE_SAMPLER_CASES:
        over = {"diffusion.sampler": name, "diffusion.compare_with": "", "data.seq_len": "6"}
        task = RADDText(configlib.load("configs/diffusion/radd_text.py:cpu", overrides=over))
        fns[name] = task.samplers[name]
    flat = lambda x: jnp.full((*x.shape, MASK), -jnp.log(MASK))  # noqa: E731
    out = jax.jit(lambda k: {n: f(flat, k, 2, 6, 8, MASK) for n, f in fns.items()})(
        jax.random.key(0)
    )
    for name, (x, calls) in out.items():
        assert x.shape == (2, 6) and bool(jnp.all(x < MASK)), name
    # Network calls, counted by replaying the 8 tau-leaping steps with the same draws: one per step
    # without the cache; with it, the first step plus every step that follows a change.
    from netlab.diffusion import discrete, discrete_samplers

    alphas = discrete.linear_alpha(discrete_samplers.time_grid(8))[0].at[-1].set(1.0)
    probs = jnp.exp(flat(jnp.zeros((2, 6), jnp.int32)))
    x, changed = jnp.full((2, 6), MASK, jnp.int32), []
    for i in range(8):
        key = jax.random.fold_in(jax.random.key(0), i)
        new = discrete_samplers.tau_step(key, x, probs, alphas[i], alphas[i + 1], MASK)
        changed.append(bool(jnp.any(new != x)))
        x = new
    np.testing.assert_array_equal(out["tau_leaping"][0], x)
    assert int(out["tau_leaping"][1]) == 8
    assert int(out["radd_cached"][1]) == 1 + sum(changed[:-1]) < 8
    np.testing.assert_array_equal(out["radd_cached"][0], out["tau_leaping"][0])
