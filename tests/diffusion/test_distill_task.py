"""CD / CTM distillation from a digits teacher (distill_task.py, configs/diffusion/
digits_distill.py): on one batch and key the task's loss equals consistency.py's / ctm.py's loss
composed by hand from the teacher's and student's networks (the student F = -v of the DiT, its
noise input 100 c_noise, sigma_data = 1), CTM's student starts as the teacher's denoiser
(g(x, t, t) = D(x, t)), the adaptive DSM weight is the ratio of the two losses' gradient norms
at the output kernel (computed here on the by-hand losses), and a missing teacher or a run of
another task or model is a one-line UserError."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from netlab import configlib
from netlab.diffusion import consistency, ctm
from netlab.diffusion.distill_task import DistilledDigits
from netlab.diffusion.task import DigitsDiffusion
from netlab.errors import UserError

TEACHER = {"model.width": "8", "model.depth": "0", "model.num_heads": "1", "model.patch": "4"}


def _teacher(path, task="diffusion.digits", width="8"):
    """A digits_dit run folder: config.json and ckpt/0/params with random normal(0, 0.3) leaves
    (so every branch of the DiT, zero-initialised gates included, is active)."""
    cfg = configlib.load(
        "configs/diffusion/digits_dit.py", "cpu", {**TEACHER, "model.width": width}
    )
    shapes = nn.unbox(jax.eval_shape(DigitsDiffusion(cfg).init_variables, jax.random.key(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: 0.3 * rng.standard_normal(s.shape, np.float32), shapes)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(dict(cfg.to_dict(), task=task)))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path / "ckpt" / "0" / "params", params["params"])
    return params["params"]


def _student(method, teacher_dir, **extra):
    over = {
        **extra,
        "distill.teacher_workdir": str(teacher_dir),
        "train.batch_size": "8",
        "distill.num_points": "6",
        "distill.ctm_max_teacher_steps": "2",
        "distill.target_ema": "0.9",
        "distill.dsm_weight": "0.3",
    }
    return DistilledDigits(configlib.load("configs/diffusion/digits_distill.py", method, over))


def test_losses_are_the_librarys_and_ctm_starts_at_the_teacher(tmp_path):
    teacher_params = _teacher(tmp_path / "teacher")
    fixed = {"distill.dsm_balance": "fixed"}
    tasks = {m: _student(f"method={m}", tmp_path / "teacher", **fixed) for m in ("cd", "ctm")}
    adaptive = _student("method=ctm", tmp_path / "teacher")  # the default (the authors')
    variables = {m: jax.jit(t.init_variables)(jax.random.key(0)) for m, t in tasks.items()}
    batch = jax.tree.map(jnp.asarray, tasks["cd"].train_batch(3))
    x0, labels, key = batch["x"], batch["label"], jax.random.key(7)
    dit = tasks["cd"].teacher.model
    eps = 0.002

    def teacher(x_vp, logsnr):  # the v-prediction teacher: x0 = alpha x - sigma v
        lam = jnp.broadcast_to(jnp.reshape(logsnr, (-1,)), (8,))
        v = dit.apply({"params": teacher_params}, x_vp, -lam / 8.0 * 100.0, labels)
        a, s = (jnp.sqrt(jax.nn.sigmoid(sign * lam)).reshape(-1, 1, 1, 1) for sign in (1, -1))
        return a * x_vp - s * v

    def net(p, x, c, c_s=None):
        rows = lambda c: jnp.broadcast_to(jnp.reshape(c, (-1,)), (8,))  # noqa: E731
        extra = None
        if c_s is not None:
            emb = tasks["ctm"].s_embed
            extra = emb.apply({"params": p["s_embed"]}, 100.0 * rows(c_s))
        return -dit.apply({"params": p["net"]}, x, 100.0 * rows(c), labels, extra_cond=extra)

    @jax.jit
    def run(variables):
        out = {}
        for m, task in tasks.items():
            params, target = variables[m]["params"], variables[m]["distill_target"]
            state = {"distill_target": target}
            loss, (_, new) = task.loss_fn(params, state, batch, key, True)
            out[m] = loss
            out[m + "_target"] = new["distill_target"]
        v = variables["ctm"]
        out["adaptive"] = adaptive.loss_fn(
            v["params"], {"distill_target": v["distill_target"]}, batch, key, True
        )[0]
        # CD by hand (key order: grid index, z); the grid sigma_1 = eps < ... < sigma_6 = 80
        p, tgt = variables["cd"]["params"], variables["cd"]["distill_target"]
        sig = jnp.asarray(consistency.karras_sigmas(6, eps, 80.0), jnp.float32)
        k_n, k_z = jax.random.split(key)
        i = jax.random.randint(k_n, (8,), 0, 5)
        f = consistency.consistency_fn(net, 1.0, eps)
        col = lambda v: v.reshape(-1, 1, 1, 1)  # noqa: E731
        z = jax.random.normal(k_z, x0.shape)
        out["cd_lib"] = consistency.distillation_loss(
            f, p, tgt, teacher, x0, z, col(sig[i + 1]), col(sig[i])
        ).mean()
        # CTM by hand (key order: t index, k, s index, z, DSM sigma, DSM z) on the descending grid
        p, tgt = variables["ctm"]["params"], variables["ctm"]["distill_target"]
        ks = jax.random.split(key, 6)
        desc = sig[::-1]
        i = jax.random.randint(ks[0], (8,), 0, 5)
        k = 1 + jnp.floor(jax.random.uniform(ks[1], (8,)) * jnp.minimum(2, 5 - i)).astype(int)
        s = i + k + jnp.floor(jax.random.uniform(ks[2], (8,)) * (6 - i - k)).astype(int)
        path = [col(desc[i + jnp.minimum(j, k)]) for j in range(3)]
        x_t = x0 + path[0] * jax.random.normal(ks[3], x0.shape)
        g = ctm.preconditioned(lambda p, x, ct, cs: net(p, x, ct, cs), 1.0)
        sd = jnp.exp(-1.2 + 1.2 * jax.random.normal(ks[4], (8,)))

        def terms(kernel):  # (CTM loss, DSM loss) with the output kernel replaced
            q = dict(p, net=dict(p["net"], final=dict(p["net"]["final"], kernel=kernel)))
            lib = ctm.soft_consistency_loss(g, q, tgt, teacher, x_t, path, col(desc[s]), eps)
            z = jax.random.normal(ks[5], x0.shape)
            return lib.mean(), ctm.dsm_loss(g, q, x0, z, col(sd), 1.0).mean()

        kernel = p["net"]["final"]["kernel"]
        lib, dsm = terms(kernel)
        out["ctm_lib"] = lib + 0.3 * dsm
        ga, gb = (jax.grad(lambda k, j=j: terms(k)[j])(kernel) for j in (0, 1))
        w = jnp.linalg.norm(ga) / (jnp.linalg.norm(gb) + 1e-4)
        out["adaptive_lib"] = lib + 0.3 * w * dsm
        out["w"] = w
        # at init the CTM student's g(x, t, t) is the teacher's denoiser (VE coordinates)
        t = col(sig[i + 1])
        out["g_tt"] = g(p, x_t, t, t)
        out["teacher"] = teacher(x_t / jnp.sqrt(1.0 + t**2), -2.0 * jnp.log(t))
        return out

    out = run(variables)
    for m in ("cd", "ctm", "adaptive"):
        np.testing.assert_allclose(out[m], out[m + "_lib"], rtol=2e-5)
        if m == "adaptive":
            assert 1e-3 < out["w"] < 1e4 and abs(out["w"] - 1) > 1e-3  # unclipped, not 1
            continue
        # the target follows the parameters (here equal: mu t + (1 - mu) p = p)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            out[m + "_target"],
            variables[m]["params"],
        )
    assert float(out["cd"]) > 0 and float(out["ctm"]) > 0
    np.testing.assert_allclose(out["g_tt"], out["teacher"], rtol=1e-4, atol=1e-5)


def test_missing_or_foreign_teacher_is_a_one_line_error(tmp_path):
    _teacher(tmp_path / "gan", task="diffusion.digits_gan")
    _teacher(tmp_path / "wide", width="16")
    # a run of the right task whose checkpoint does not fit its config.json's model
    (tmp_path / "wide" / "config.json").write_text(
        (tmp_path / "wide" / "config.json").read_text().replace('"width": 16', '"width": 8')
    )
    for name, words in (("nope", "no config.json"), ("gan", "digits_gan"), ("wide", "not fit")):
        with pytest.raises(UserError) as e:
            _student("method=cd", tmp_path / name)
        msg = str(e.value)
        assert "distill.teacher_workdir" in msg and words in msg and "\n" not in msg, msg
