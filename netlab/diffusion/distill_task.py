"""Few-step students distilled from a trained digits DiT: consistency distillation or CTM (task
`diffusion.digits_distill`, configs/diffusion/digits_distill.py, `distill.method=cd|ctm`).

The methods are consistency.py's (Song et al. 2023, Alg. 2: `distillation_loss`, Alg. 1:
`sample`) and ctm.py's (Kim et al. 2024: `soft_consistency_loss` + `dsm_loss`, gamma-sampling);
this task gives them a teacher, a student network, the digits data and the digits evaluation.

Teacher: the newest checkpoint of `distill.teacher_workdir`, a `diffusion.digits` run
(configs/diffusion/digits_dit.py), rebuilt from that run's own `model` and `diffusion` groups
(its config.json) and read with Orbax directly (a model pillar does not import the engine). Its
raw parameters are used (train the teacher with `optimizer.ema_stds=()` to evaluate the same
weights). It denoises conditionally on each row's label (guidance 1). A missing workdir, a run of
another task, or a checkpoint that does not fit the rebuilt model is a one-line UserError when
the task is built.

Student: the teacher's own network F, initialised from the teacher's weights (both papers
initialise the student from the teacher). In the samplers' VP convention the teacher's
v-prediction is EDM's preconditioning with sigma_data = 1 and F = -v (x0 = alpha x_t - sigma v,
alpha = 1 / sqrt(1 + sigma_ve^2): c_skip = 1 / (1 + sigma_ve^2), c_out = sigma_ve alpha,
c_in = alpha), and the DiT's noise input is 100 c_noise (task._noise_cond), so with
sigma_data = 1 in both scalings the CTM student's g(x, t, t) starts as the teacher's denoiser
exactly and the CD student's f starts as it up to c_skip and c_out's shift by sigma_min. CTM's
second time s reaches the DiT as a second sinusoidal time embedding (`s_embed`, its output layer
zero at init) added to the conditioning vector (`DiT(extra_cond=...)`); the authors' network
embeds s the same way (a second time embedding), their backbone is an EDM U-Net.

Loss (per example a sum over pixels, then the batch mean; d = squared L2, the papers use LPIPS for
large images):
- cd: n ~ U{1..N-1} on the Karras grid sigma_1 = sigma_min < ... < sigma_N = sigma_max
  (`distill.num_points` N, rho 7), x_{n+1} = x0 + sigma_{n+1} z, one teacher Heun step to
  sigma_n, `consistency.distillation_loss` against the target network.
- ctm: on the descending grid, t = sigma_i (i ~ U{0..N-2}), u = k teacher Heun steps further
  (k ~ U{1..min(K, N-1-i)}, K = `distill.ctm_max_teacher_steps`; the authors draw k with
  P ~ k^m up to N-1), s ~ U{u..sigma_min} on the grid: `ctm.soft_consistency_loss`, plus
  w x `ctm.dsm_loss` at sigma ~ logN(p_mean, p_std). `distill.dsm_balance`: "fixed", w =
  `distill.dsm_weight`; "adaptive" (the authors'), w = `distill.dsm_weight` x
  `ctm.balance_weight`, the ratio of the two losses' gradient norms at the output layer's
  kernel (no gradient through w; logged as train/dsm_weight). The K Heun steps always run (a
  row with k < K repeats its last sigma: a zero-length Heun step is the identity), so the
  compiled step has a fixed shape.
Target network theta^-: with `distill.target_ema` = 0, sg(theta) (the authors' JAX CD code);
else model_state `distill_target`, mu theta^- + (1 - mu) theta after each step's loss (so the
target lags the parameters by one step).

Sampling (`distill.sample_steps` network calls, from x = sigma_max z with the unit noise z that
`DigitsDiffusion.sample` draws for the same seed): cd: Alg. 1 at the taus of the descending
(NFE + 1)-point Karras grid without sigma_min; ctm: gamma-sampling (`distill.gamma`, 0 =
deterministic jumps) along the same grid. Evaluation: the digits Frechet distance of
`DigitsDiffusion.evaluate` with the teacher's FD classifier (its workdir's fd_classifier.npz,
when present), plus `nfe`.
"""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from netlab.diffusion import consistency, ctm
from netlab.diffusion.task import DigitsDiffusion
from netlab.errors import UserError
from netlab.nn import layers
from netlab.registry import check_choice, check_range

METHODS = ("cd", "ctm")
DSM_BALANCE = ("fixed", "adaptive")
SIGMA_DATA = 1.0  # makes the v-prediction teacher's network the EDM-preconditioned F (above)
TRAIN_RECIPE = "python -m netlab.main --config configs/diffusion/digits_dit.py:cpu --workdir DIR"


def _flat(tree, prefix=""):
    """{"a/b": leaf} of a nested mapping (a parameter tree or Orbax's metadata of one)."""
    out = {}
    for key, value in tree.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _restore_params(workdir: str, abstract):
    """The newest `ckpt/<step>/params` of a netlab workdir, checked against `abstract`."""
    import orbax.checkpoint as ocp

    ckdir = os.path.join(workdir, "ckpt")
    steps = [int(s) for s in os.listdir(ckdir) if s.isdigit()] if os.path.isdir(ckdir) else []
    if not steps:
        raise UserError(
            f"distill.teacher_workdir={workdir!r} holds no checkpoint; train it with {TRAIN_RECIPE}"
        )
    item = os.path.join(ckdir, str(max(steps)), "params")
    meta = ocp.StandardCheckpointer().metadata(item)
    saved, ours = _flat(getattr(meta, "item_metadata", meta)), _flat(abstract)
    for key in sorted(set(saved) | set(ours)):
        a, b = saved.get(key), ours.get(key)
        if a is None or b is None or tuple(a.shape) != tuple(b.shape):
            raise UserError(
                f"distill.teacher_workdir={workdir!r}: its checkpoint does not fit the model of "
                f"its config.json (params/{key}: {getattr(a, 'shape', 'missing')} saved, "
                f"{getattr(b, 'shape', 'missing')} built); give an unmodified digits_dit run"
            )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), abstract
    )
    return ocp.StandardCheckpointer().restore(item, target), max(steps)


def load_teacher(config, policy=None):
    """(teacher DigitsDiffusion task, its parameters, step) from `distill.teacher_workdir`."""
    workdir = os.path.abspath(str(config.distill.teacher_workdir or "."))
    key = f"distill.teacher_workdir={config.distill.teacher_workdir!r}"
    path = os.path.join(workdir, "config.json")
    if not config.distill.teacher_workdir or not os.path.isfile(path):
        raise UserError(
            f"{key} is not a training run (no config.json); train one with {TRAIN_RECIPE}"
        )
    with open(path) as f:
        saved = json.load(f)
    if saved.get("task") != "diffusion.digits":
        raise UserError(
            f"{key} is a {saved.get('task')!r} run; the teacher must be a 'diffusion.digits' run "
            f"({TRAIN_RECIPE})"
        )
    tc = ml_collections.ConfigDict(config.to_dict())
    tc.task = "diffusion.digits"
    tc.model = ml_collections.ConfigDict(saved["model"])
    tc.diffusion = ml_collections.ConfigDict(saved["diffusion"])
    teacher = DigitsDiffusion(tc, policy)
    abstract = nn.unbox(jax.eval_shape(teacher.init_variables, jax.random.key(0)))["params"]
    params, step = _restore_params(workdir, abstract)
    return teacher, params, step


class DistilledDigits(DigitsDiffusion):
    """A CD or CTM student of a digits DiT (module docstring)."""

    def __init__(self, config, policy=None):
        d = config.distill
        self.method = check_choice("distill.method", d.method, METHODS)
        self.num_points = check_range("distill.num_points", int(d.num_points), 2, integer=True)
        self.sigma_min = check_range("distill.sigma_min", float(d.sigma_min), 1e-6)
        self.sigma_max = check_range("distill.sigma_max", float(d.sigma_max), self.sigma_min)
        self.rho = check_range("distill.rho", float(d.rho), 1e-3)
        self.target_ema = check_range("distill.target_ema", float(d.target_ema), 0.0, 1.0)
        self.nfe = check_range("distill.sample_steps", int(d.sample_steps), 1, integer=True)
        self.gamma = check_range("distill.gamma", float(d.gamma), 0.0, 1.0)
        self.max_k = check_range(
            "distill.ctm_max_teacher_steps", int(d.ctm_max_teacher_steps), 1, integer=True
        )
        self.dsm_weight = check_range("distill.dsm_weight", float(d.dsm_weight), 0.0)
        self.dsm_balance = check_choice(
            "distill.dsm_balance", d.get("dsm_balance", "fixed"), DSM_BALANCE
        )
        check_range("distill.p_std", float(d.p_std), 0.0)
        self.teacher, self.teacher_params, self.teacher_step = load_teacher(config, policy)
        if self.method == "ctm" and not hasattr(self.teacher.model, "trunk"):
            raise UserError(
                f"distill.method='ctm' needs a DiT teacher (model.backbone='dit'), not "
                f"{config.distill.teacher_workdir!r}'s {self.teacher.config.model.backbone!r}"
            )
        self.teacher_workdir = os.path.abspath(str(d.teacher_workdir))
        # the Karras grid sigma_1 = sigma_min < ... < sigma_N = sigma_max (float64, host)
        self.sigmas = consistency.karras_sigmas(
            self.num_points, self.sigma_min, self.sigma_max, self.rho
        )
        super().__init__(config, policy)

    def build_model(self):
        self.s_embed = (
            layers.TimestepEmbedder(self.teacher.model.width) if self.method == "ctm" else None
        )
        return self.teacher.model

    # --- networks -------------------------------------------------------------------------------
    def init_variables(self, rng):
        params = {"net": jax.tree.map(jnp.asarray, self.teacher_params)}
        if self.s_embed is not None:
            emb = nn.unbox(self.s_embed.init(rng, jnp.zeros((1,), jnp.float32))["params"])
            emb["fc2"] = jax.tree.map(jnp.zeros_like, emb["fc2"])  # s unused at init
            params["s_embed"] = emb
        out = {"params": params}
        if self.target_ema:
            out["distill_target"] = params
        return out

    def net(self, params, x, c_noise, labels, c_noise_s=None):
        """F(c_in x, c_noise[, c_noise(s)]) = -(the DiT's v output); c_noise per row or scalar."""

        def rows(c):
            return jnp.broadcast_to(jnp.reshape(c, (-1,)), (x.shape[0],)).astype(x.dtype)

        extra = None
        if c_noise_s is not None:
            extra = self.s_embed.apply({"params": params["s_embed"]}, 100.0 * rows(c_noise_s))
        out = self.model.apply(
            {"params": params["net"]}, x, 100.0 * rows(c_noise), labels, extra_cond=extra
        )
        out = out[0] if isinstance(out, tuple) else out
        return -out.astype(x.dtype)

    def consistency_fn(self, labels):
        """f(params, x, sigma) of consistency.py for rows with `labels`."""
        return consistency.consistency_fn(
            lambda p, x, c: self.net(p, x, c, labels), SIGMA_DATA, self.sigma_min
        )

    def ctm_g(self, labels):
        """g(params, x, t, s) of ctm.py for rows with `labels`."""
        return ctm.preconditioned(lambda p, x, ct, cs: self.net(p, x, ct, labels, cs), SIGMA_DATA)

    def teacher_denoiser(self, labels):
        """denoise(x_vp, logsnr) -> x0_hat of the teacher (logsnr per row or scalar)."""

        def denoise(x, logsnr):
            lam = jnp.broadcast_to(jnp.reshape(logsnr, (-1,)), (x.shape[0],)).astype(x.dtype)
            return self.teacher.model_output(self.teacher_params, x, lam, labels)[0]

        return denoise

    # --- loss -----------------------------------------------------------------------------------
    def distill_loss(self, params, target, x0, labels, key):
        """(loss, metrics) of `distill.method` on clean rows x0 with their labels; key order:
        cd (grid index, z), ctm (t index, k, s index, z, DSM sigma, DSM z)."""
        n, dt = x0.shape[0], x0.dtype
        shape = (n,) + (1,) * (x0.ndim - 1)
        denoise = self.teacher_denoiser(labels)
        if self.method == "cd":
            k_n, k_z = jax.random.split(key)
            sig = jnp.asarray(self.sigmas, dt)
            i = jax.random.randint(k_n, (n,), 0, self.num_points - 1)
            z = jax.random.normal(k_z, x0.shape, dt)
            per = consistency.distillation_loss(
                self.consistency_fn(labels),
                params,
                target,
                denoise,
                x0,
                z,
                sig[i + 1].reshape(shape),
                sig[i].reshape(shape),
            )
            return per.mean(), {"cd_loss": per.mean()}
        keys = jax.random.split(key, 6)
        big_n, sig = self.num_points, jnp.asarray(self.sigmas[::-1].copy(), dt)
        i = jax.random.randint(keys[0], (n,), 0, big_n - 1)
        kmax = jnp.minimum(self.max_k, big_n - 1 - i)
        k = 1 + jnp.floor(jax.random.uniform(keys[1], (n,)) * kmax).astype(jnp.int32)
        u = i + k
        s = u + jnp.floor(jax.random.uniform(keys[2], (n,)) * (big_n - u)).astype(jnp.int32)
        path = [sig[i + jnp.minimum(j, k)].reshape(shape) for j in range(self.max_k + 1)]
        x_t = x0 + path[0] * jax.random.normal(keys[3], x0.shape, dt)
        g = self.ctm_g(labels)
        d = self.config.distill
        sigma = jnp.exp(float(d.p_mean) + float(d.p_std) * jax.random.normal(keys[4], (n,), dt))
        z_dsm = jax.random.normal(keys[5], x0.shape, dt)

        def ctm_term(p):
            s_ = sig[s].reshape(shape)
            return ctm.soft_consistency_loss(g, p, target, denoise, x_t, path, s_, self.sigma_min)

        def dsm_term(p):
            return ctm.dsm_loss(g, p, x0, z_dsm, sigma.reshape(shape), SIGMA_DATA)

        ctm_per, dsm_per = ctm_term(params), dsm_term(params)
        weight = jnp.asarray(self.dsm_weight, dt)
        if self.dsm_balance == "adaptive":  # the authors': equal last-layer gradient norms
            weight = weight * self.balance(params, ctm_term, dsm_term)
        loss = ctm_per.mean() + weight * dsm_per.mean()
        return loss, {"ctm_loss": ctm_per.mean(), "dsm_loss": dsm_per.mean(), "dsm_weight": weight}

    @staticmethod
    def balance(params, ctm_term, dsm_term):
        """`ctm.balance_weight` on the kernel of the DiT's output layer (`final`), the layer the
        authors take (their U-Net's last conv weight)."""

        def on_last(term):
            def f(kernel):
                final = dict(params["net"]["final"], kernel=kernel)
                return term(dict(params, net=dict(params["net"], final=final))).mean()

            return f

        kernel = params["net"]["final"]["kernel"]
        return ctm.balance_weight(on_last(ctm_term), on_last(dsm_term), kernel)

    def loss_fn(self, params, model_state, batch, rng, train):
        x0 = jnp.asarray(batch["x"]).astype(self.float_dtype)
        labels = jnp.asarray(batch["label"], jnp.int32)
        sg = jax.lax.stop_gradient
        target = model_state["distill_target"] if self.target_ema else sg(params)
        loss, out = self.distill_loss(params, target, x0, labels, rng)
        if self.target_ema:
            mu = self.target_ema
            new = jax.tree.map(lambda t, p: mu * t + (1.0 - mu) * sg(p), target, params)
            model_state = dict(model_state, distill_target=new)
        return loss, (out, model_state)

    # --- sampling and evaluation ----------------------------------------------------------------
    def sample_sigmas(self, nfe):
        """The descending (nfe + 1)-point Karras grid from sigma_max to sigma_min (host)."""
        grid = consistency.karras_sigmas(nfe + 1, self.sigma_min, self.sigma_max, self.rho)
        return [float(v) for v in grid[::-1]]

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _distill_sample(self, params, z, labels, nfe, key):
        sigmas = self.sample_sigmas(nfe)
        if self.method == "cd":
            f = self.consistency_fn(labels)
            return consistency.sample(f, params, z, sigmas[:-1], key, self.sigma_min)
        g = self.ctm_g(labels)
        return ctm.sample(g, params, z, sigmas, self.gamma, key, self.sigma_min)

    def sample(self, params, n, labels=None, method=None, steps=None, scale=None, seed=0):
        """n samples in `steps` (default `distill.sample_steps`) student calls, from the unit noise
        `DigitsDiffusion.sample` draws for `seed`."""
        key = jax.random.key(seed)
        z = jax.random.normal(jax.random.fold_in(key, 1), (n,) + self.data_shape, self.float_dtype)
        labels = jnp.zeros((n,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
        out = self._distill_sample(
            params, z, labels, int(steps or self.nfe), jax.random.fold_in(key, 2)
        )
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))

    def evaluate(self, params, model_state, step, workdir):
        own = os.path.join(self.teacher_workdir, "fd_classifier.npz")
        src = self.teacher_workdir if os.path.isfile(own) else workdir
        scalars, images = super().evaluate(params, model_state, step, src)
        return dict(scalars, nfe=float(self.nfe)), images
