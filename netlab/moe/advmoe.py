"""AdvMoE: adversarially robust MoE training by alternating router and expert updates. Zhang, Chen,
Liu, Chen, Hong, Wang, Lin & Liu, ICCV 2023, "Robust Mixture-of-Experts Training for Convolutional
Neural Networks" (arXiv 2308.10110), Sec. 4.

Plain adversarial training of an MoE couples two things that need robustness separately: which
expert an input goes to (the router) and what that expert computes (the backbone). AdvMoE splits
the robust objective into a router problem and a backbone problem and alternates one step of each
per batch, each on fresh adversarial examples:

    x' = PGD(x)  (L-inf, radius eps, `steps` signed-gradient steps of size `step_size` from a random
                  start in the ball, maximising KL(f(x) || f(x')): TRADES' inner problem)
    L(theta; x, x') = CE(f(x), y) + beta KL(f(x) || f(x'))     (TRADES, Zhang et al. 2019, eq. 5)
    router phase:   phi   <- phi   - step(grad_phi L)      on x' from PGD at (phi, theta)
    backbone phase: theta <- theta - step(grad_theta L)    on a new x' from PGD at the new phi

phi are the routers' parameters (every leaf under a key named `router`), theta everything else
(experts, attention, embeddings, head). Each phase has its own optimizer state, wrapped in
`optax.multi_transform` with `set_to_zero` on the other part, so a phase leaves the other part's
parameters bit-identical (momentum and weight decay included).

Two ways to use it:
- `train_step(...)`: the paper's per-batch alternation (router step, then backbone step) as a pure
  function of (params, opt_states, batch, key), for a training loop that owns its optimizers.
- `config.adv_moe` in the MoE digits task (`netlab.moe.task.MoEDigits`, the ViT / conv MoE
  models): the trainer's one optimizer step per batch trains on TRADES with fresh PGD examples
  and alternates the phases by step parity (even: router, odd: backbone), by stopping the gradient
  of the other part. With the trainer's single optimizer the other part still feels momentum and
  weight decay; use `optimizer.name=sgd` without them for exact alternation, or `train_step`.

Where this differs from the authors' code (OPTML-Group/Robust-MoE-CNN): their router is one
image-level network picking a channel group per image, and its phase adds a router-label
cross-entropy (alpha CE(router(x), y mod E)); our routers are the MoE layers' own (token-level)
routers and both phases minimise the same TRADES loss (the paper's bi-level form). Defaults are
the paper's training attack (eps 8/255, 2 steps of 5/255 on [0, 1] images, beta 6) rescaled to
the digits' [-1, 1] range.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from netlab.errors import UserError

ROUTER, BACKBONE = "router", "backbone"
PHASES = (ROUTER, BACKBONE)


@dataclasses.dataclass(frozen=True)
class AdvConfig:
    eps: float = 16 / 255  # L-inf radius (the paper's 8/255 on [0, 1], here on [-1, 1])
    step_size: float = 10 / 255
    steps: int = 2
    beta: float = 6.0  # TRADES weight
    lo: float = -1.0  # valid input range (digits: [-1, 1])
    hi: float = 1.0
    router_key: str = "router"  # parameters under a key containing this are the router's


def from_config(cfg, key: str = "adv_moe"):
    """An AdvConfig from a config group (None when absent or `enabled` is False); one-line
    UserErrors for bad values."""
    if cfg is None or not cfg.get("enabled", False):
        return None
    kw = {f.name: cfg[f.name] for f in dataclasses.fields(AdvConfig) if f.name in cfg}
    c = AdvConfig(**kw)
    for name in ("eps", "step_size"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UserError(f"{key}.{name}={value!r}: expected a number > 0 (e.g. 16/255 = 0.063)")
    if isinstance(c.steps, bool) or not isinstance(c.steps, int) or c.steps < 1:
        raise UserError(f"{key}.steps={c.steps!r}: expected an integer >= 1 PGD steps (e.g. 2)")
    if not c.beta >= 0:
        raise UserError(f"{key}.beta={c.beta!r}: expected a number >= 0 (TRADES weight, e.g. 6)")
    if not c.hi > c.lo:
        raise UserError(f"{key}.lo={c.lo!r}, {key}.hi={c.hi!r}: expected lo < hi")
    return c


def labels(params, router_key: str = "router"):
    """ROUTER for every leaf with a path key containing `router_key`, else BACKBONE."""

    def label(path, _):
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        return ROUTER if any(router_key in k for k in keys) else BACKBONE

    return jax.tree_util.tree_map_with_path(label, params)


def phase_mask(params, phase, router_key: str = "router"):
    """Params whose gradient flows only into `phase`'s part (a traced 0 = router / 1 = backbone
    works too): the other part is `stop_gradient`-ed, values unchanged."""
    lab = labels(params, router_key)
    on_router = phase == 0 if not isinstance(phase, str) else phase == ROUTER

    def mask(p, label):
        keep = on_router if label == ROUTER else jnp.logical_not(on_router)
        frozen = jax.lax.stop_gradient(p)
        return frozen + jnp.asarray(keep, p.dtype) * (p - frozen)

    return jax.tree.map(mask, params, lab)


def kl(p_logits, q_logits):
    """Mean over the batch of KL(softmax p || softmax q)."""
    logp, logq = jax.nn.log_softmax(p_logits, -1), jax.nn.log_softmax(q_logits, -1)
    return jnp.mean(jnp.sum(jnp.exp(logp) * (logp - logq), -1))


def pgd(objective, x, key, c: AdvConfig):
    """L-inf PGD (Madry et al. 2018) maximising objective(x'): random start in the eps-ball,
    `c.steps` steps x' <- clip(x' + step_size sign(grad), ball, [lo, hi])."""
    lo, hi = jnp.maximum(x - c.eps, c.lo), jnp.minimum(x + c.eps, c.hi)
    x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -c.eps, c.eps), lo, hi)
    grad = jax.grad(objective)

    def step(x_adv, _):
        g = grad(x_adv)
        return jnp.clip(x_adv + c.step_size * jnp.sign(g), lo, hi), None

    x_adv, _ = jax.lax.scan(step, x_adv, None, length=c.steps)
    return jax.lax.stop_gradient(x_adv)


def trades_loss(forward, params, x, y, key, c: AdvConfig):
    """(TRADES loss on fresh PGD examples + the model's aux loss, metrics). `forward(params, x,
    key) -> (logits, aux_loss)`; the attack sees the parameters but moves none of them."""
    k_attack, k_clean, k_adv = jax.random.split(key, 3)
    clean, aux_loss = forward(params, x, k_clean)
    target = jax.lax.stop_gradient(clean)
    frozen = jax.lax.stop_gradient(params)
    x_adv = pgd(lambda z: kl(target, forward(frozen, z, k_adv)[0]), x, k_attack, c)
    adv, _ = forward(params, x_adv, k_adv)
    ce = optax.softmax_cross_entropy_with_integer_labels(clean, y).mean()
    robust = kl(clean, adv)
    metrics = {
        "cross_entropy": ce,
        "trades_kl": robust,
        "adv_accuracy": (adv.argmax(-1) == y).mean(),
        "accuracy": (clean.argmax(-1) == y).mean(),
    }
    return ce + c.beta * robust + aux_loss, metrics


def phase_optimizer(tx: optax.GradientTransformation, phase: str, router_key: str = "router"):
    """`tx` on `phase`'s parameters, exact zero updates on the other part."""
    other = BACKBONE if phase == ROUTER else ROUTER
    return optax.multi_transform(
        {phase: tx, other: optax.set_to_zero()}, lambda p: labels(p, router_key)
    )


def phase_step(forward, params, opt_state, x, y, key, c: AdvConfig, tx):
    """One phase: fresh PGD examples, the TRADES gradient, `tx` (a `phase_optimizer`) update."""
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: trades_loss(forward, p, x, y, key, c), has_aux=True
    )(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, dict(metrics, loss=loss)


def init(params, txs: dict):
    """Optimizer states {phase: state} for `txs` {phase: phase_optimizer}."""
    return {phase: txs[phase].init(params) for phase in PHASES}


def train_step(forward, params, opt_states, x, y, key, c: AdvConfig, txs: dict):
    """The paper's alternation on one batch: a router step, then a backbone step on new PGD
    examples made with the updated router. -> (params, opt_states, metrics of both phases)."""
    k_router, k_backbone = jax.random.split(key)
    params, s_r, m_r = phase_step(
        forward, params, opt_states[ROUTER], x, y, k_router, c, txs[ROUTER]
    )
    params, s_b, m_b = phase_step(
        forward, params, opt_states[BACKBONE], x, y, k_backbone, c, txs[BACKBONE]
    )
    metrics = {f"router_{k}": v for k, v in m_r.items()}
    metrics.update({f"backbone_{k}": v for k, v in m_b.items()})
    return params, {ROUTER: s_r, BACKBONE: s_b}, metrics
