"""DiGress: discrete denoising diffusion for graph generation (Vignac et al., ICLR 2023).

Graphs are dense: node types x [B, n] in {0..Kx-1}, edge types e [B, n, n] in {0..Ke-1} with type
0 = "no edge", a node mask [B, n] (real nodes first). Every node and every node pair is corrupted
independently by the marginal-preserving categorical chain (paper Sec. 4.1)

    Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 m^T,     m = the training marginal of the types,

the same family as ``netlab.diffusion.discrete.marginal_preserving`` (D3PM eq. 2 closed form; the
graph pillar may not import the diffusion pillar, so the few lines it needs are written here).
Edge noise is symmetric: one draw per unordered pair (the upper triangle, mirrored), and the
diagonal and padding stay "no edge". alpha_bar is the squared-cosine curve (Nichol & Dhariwal
2021, as DiGress).

Denoiser (App. B): the noisy one-hot graph plus extra features computed from it (Sec. 4.3 / App.
B.2) goes through input MLPs, :class:`netlab.graph.graph_transformer.GraphTransformerLayer` s and
output MLPs, with the input types added back to the output logits and edge logits symmetrised.
Extra features ("all", "cycles" or "none"):

- cycle counts from powers of the adjacency (App. B.2 trace formulas): per node the number of 3-,
  4- and 5-cycles through it, per graph the number of 3-, 4-, 5- and 6-cycles, divided by 10 and
  clipped at 1 as the authors' code;
- spectral features of the combinatorial Laplacian L = D - A (padding rows get 2n on the diagonal
  so their eigenvalues sort last): the number of connected components (eigenvalues < 1e-5), the
  first 5 non-zero eigenvalues (divided by n), and the first 2 non-zero eigenvectors as node
  features;
- the noise level t / T and the node fraction n / n_max in y.

Where we differ from the authors' code: eigenvector signs are fixed (sum of cubes >= 0) so the
denoiser is permutation-equivariant on graphs with a simple spectrum (theirs depend on the
eigensolver's signs); their "not in the largest component" indicator is not computed.

Loss (Sec. 4.2): cross-entropy of the predicted clean types over real nodes plus ``lam`` (5 in the
paper) times that over real node pairs (i != j), each averaged over its entries. Sampling (Sec.
4.2, ancestral): p(z_s | z_t) = sum_x0 q(z_s | z_t, x0) p(x0 | z_t), each posterior
``q ∝ (z_t Q_t^T) ⊙ (x0 Qbar_s)`` normalised before mixing, node counts drawn from the training
histogram. Conditional generation: ``cond`` [B, dc] is appended to y when given (the hook for
DiGress's guidance; nothing here trains a regressor).

Registered as ``model.name = "digress"`` with ``TASK = "generation"``; :class:`GraphGeneration`
(config ``task = "graph.generation"``, configs/graph/digress.py) trains it on
``netlab.graph.spectre_data`` and scores samples with ``netlab.graph.gen_metrics``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError
from netlab.graph import builder, gen_metrics, spectre_data
from netlab.graph import datasets as D
from netlab.graph.graph_transformer import GraphTransformerLayer, edge_mask
from netlab.graph.registries import MODELS
from netlab.registry import check_choice, check_range

FEATURES = ("all", "cycles", "none")


# -- noise -------------------------------------------------------------------------------------


def cosine_alpha_bar(T: int, s: float = 0.008) -> np.ndarray:
    """(T+1,) alpha_bar_t = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) pi/2)^2, beta <= 0.999."""
    check_range("diffusion.T", T, 1, None, integer=True)
    t = np.arange(T + 1) / T
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    beta = np.minimum(1 - f[1:] / f[:-1], 0.999)
    return np.concatenate([np.ones(1), np.cumprod(1 - beta)])


def qbar(alpha_bar, m):
    """Qbar_t (K, K) = alpha_bar I + (1 - alpha_bar) 1 m^T, rows = from-type."""
    return alpha_bar * jnp.eye(m.shape[0], dtype=m.dtype) + (1 - alpha_bar) * m[None, :]


def q_marginal(probs, alpha_bar, m):
    """x0 Qbar_t for rows of probabilities (..., K); alpha_bar broadcasts against (...)."""
    a = jnp.expand_dims(alpha_bar, -1)
    return a * probs + (1 - a) * m


def symmetrise_edges(e, node_mask):
    """Keep the strict upper triangle, mirror it, zero ("no edge") diagonal and padding."""
    n = e.shape[-1]
    upper = jnp.triu(jnp.ones((n, n), bool), 1)
    e = jnp.where(upper, e, 0)
    e = e + jnp.swapaxes(e, -1, -2)
    return jnp.where(edge_mask(node_mask), e, 0)


def apply_noise(key, x0, e0, node_mask, alpha_bar_t, m_x, m_e):
    """(x_t, e_t) ~ q(. | x0, e0) at per-graph alpha_bar_t [B]; edges symmetric."""
    kx, ke = jax.random.split(key)
    Kx, Ke = m_x.shape[0], m_e.shape[0]
    px = q_marginal(jax.nn.one_hot(x0, Kx, dtype=m_x.dtype), alpha_bar_t[:, None], m_x)
    pe = q_marginal(jax.nn.one_hot(e0, Ke, dtype=m_e.dtype), alpha_bar_t[:, None, None], m_e)
    x_t = jnp.where(node_mask, jax.random.categorical(kx, jnp.log(px + 1e-30)), 0)
    e_t = symmetrise_edges(jax.random.categorical(ke, jnp.log(pe + 1e-30)), node_mask)
    return x_t, e_t


def reverse_probs(z_t, p0, alpha_bar_t, alpha_bar_s, m):
    """sum_x0 q(z_s | z_t, x0) p0(x0) (..., K) for integer z_t (...), probabilities p0 (..., K)
    and scalar alpha_bars; each x0's posterior is normalised before mixing (DiGress's sampler)."""
    K = m.shape[0]
    beta = 1.0 - alpha_bar_t / alpha_bar_s
    lik = (1 - beta) * jax.nn.one_hot(z_t, K, dtype=m.dtype) + beta * m[z_t][..., None]
    joint = lik[..., None, :] * qbar(alpha_bar_s, m)  # (..., K_x0, K_s)
    per_x0 = joint / jnp.maximum(joint.sum(-1, keepdims=True), 1e-30)
    probs = jnp.einsum("...j,...jk->...k", p0, per_x0)
    return probs / jnp.maximum(probs.sum(-1, keepdims=True), 1e-30)


# -- extra features ----------------------------------------------------------------------------


def _diag(a):
    return jnp.diagonal(a, axis1=-2, axis2=-1)


def cycle_counts(adj):
    """Exact k-cycle counts from powers of a 0/1 symmetric adjacency [B, n, n] (zero diagonal):
    (per node [B, n, 3] for k = 3, 4, 5; per graph [B, 4] for k = 3..6). App. B.2 formulas; the
    per-node 5-cycle count 2 c5(i) = A^5_ii - 2 A^3_ii d_i + 5 A^3_ii - (A diag A^3)_i
    - 2 ((A ⊙ A^2) d)_i is written out here (its sum over i gives the paper's graph count,
    tr A^5 - 5 sum_i A^3_ii (d_i - 1) = 10 C5) and is checked against networkx."""
    a2 = adj @ adj
    a3 = a2 @ adj
    a4 = a3 @ adj
    a5 = a4 @ adj
    a6 = a5 @ adj
    d = adj.sum(-1)
    tri = _diag(a3)
    n3 = tri / 2
    n4 = (_diag(a4) - d * (d - 1) - (adj @ d[..., None])[..., 0]) / 2
    walks = (adj @ tri[..., None])[..., 0] + 2 * ((adj * a2) @ d[..., None])[..., 0]
    n5 = (_diag(a5) - 2 * tri * d + 5 * tri - walks) / 2  # degenerate walks: a triangle + a spur
    d2 = _diag(a2)
    c6 = (
        _diag(a6).sum(-1)
        - 3 * jnp.square(tri).sum(-1)
        + 9 * (adj * jnp.square(a2)).sum((-2, -1))
        - 6 * (d2 * _diag(a4)).sum(-1)
        + 6 * _diag(a4).sum(-1)
        - 4 * tri.sum(-1)
        + 4 * (d2**3).sum(-1)
        + 3 * a3.sum((-2, -1))
        - 12 * jnp.square(d2).sum(-1)
        + 4 * d2.sum(-1)
    ) / 12
    per_graph = jnp.stack([n3.sum(-1) / 3, n4.sum(-1) / 4, n5.sum(-1) / 5, c6], -1)
    return jnp.stack([n3, n4, n5], -1), per_graph


def spectral_features(adj, node_mask, k_vals: int = 5, k_vecs: int = 2):
    """(components [B, 1], first non-zero eigenvalues / n [B, k_vals], eigenvectors [B, n, k_vecs])
    of L = D - A; entries past the graph's spectrum are 0."""
    n_max = adj.shape[-1]
    real = node_mask.astype(adj.dtype)
    lap = jnp.eye(n_max, dtype=adj.dtype) * adj.sum(-1)[..., None] - adj
    lap = lap + jnp.eye(n_max, dtype=adj.dtype) * (2.0 * n_max * (1 - real))[..., None]
    ev, vecs = jnp.linalg.eigh(lap)
    n = real.sum(-1, keepdims=True)
    n_comp = (jnp.where(jnp.arange(n_max) < n, ev, 1.0) < 1e-5).sum(-1, keepdims=True)
    idx = n_comp + jnp.arange(max(k_vals, k_vecs))
    ok = idx < n
    idx = jnp.minimum(idx, n_max - 1)
    vals = jnp.where(ok, jnp.take_along_axis(ev, idx, -1), 0.0)[:, :k_vals] / jnp.maximum(n, 1)
    v = jnp.take_along_axis(vecs, idx[:, None, :k_vecs], -1) * ok[:, None, :k_vecs]
    sign = jnp.where((v**3).sum(1, keepdims=True) < 0, -1.0, 1.0)
    v = v * sign * real[..., None]
    return n_comp.astype(adj.dtype), vals, v


def extra_features(e_t, node_mask, kind: str, dtype=jnp.float32):
    """(node extras [B, n, f_x], graph extras [B, f_y]) of the noisy graph, no gradient."""
    b, n = node_mask.shape
    if kind == "none":
        return jnp.zeros((b, n, 0), dtype), jnp.zeros((b, 0), dtype)
    adj = (e_t > 0).astype(dtype) * edge_mask(node_mask)
    adj = adj * (1 - jnp.eye(n, dtype=adj.dtype))
    node_c, graph_c = cycle_counts(adj)
    node_f, graph_f = [jnp.minimum(node_c / 10, 1.0)], [jnp.minimum(graph_c / 10, 1.0)]
    if kind == "all":
        comp, vals, vecs = spectral_features(adj, node_mask)
        node_f.append(vecs)
        graph_f += [comp / n, vals]
    out = jnp.concatenate(node_f, -1), jnp.concatenate(graph_f, -1)
    return jax.tree.map(jax.lax.stop_gradient, out)


# -- denoiser ----------------------------------------------------------------------------------


@MODELS.register("digress")
class DiGress(nn.Module):
    """p(x0, e0 | x_t, e_t): logits (node [B, n, Kx], edge [B, n, n, Ke], symmetric)."""

    TASK = "generation"

    num_node_types: int = 1
    num_edge_types: int = 2
    dx: int = 64
    de: int = 16
    dy: int = 16
    num_layers: int = 2
    heads: int = 4
    features: str = "all"
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_choice("model.features", self.features, FEATURES)
        check_range("model.num_layers", self.num_layers, 1, None, integer=True)
        check_range("model.num_edge_types", self.num_edge_types, 2, None, integer=True)
        if self.dx % self.heads:
            raise UserError(
                f"model.dx={self.dx} must be a multiple of model.heads={self.heads}: "
                "change one of them"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x_t, e_t, t_frac, node_mask, cond=None, train: bool = False):
        b, n = node_mask.shape
        cdt = self.dtype or jnp.float32
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        xm = node_mask[..., None].astype(cdt)
        em = edge_mask(node_mask)[..., None].astype(cdt)
        x1 = jax.nn.one_hot(x_t, self.num_node_types, dtype=cdt) * xm
        e1 = jax.nn.one_hot(e_t, self.num_edge_types, dtype=cdt) * em
        fx, fy = extra_features(e_t, node_mask, self.features, cdt)
        frac = node_mask.sum(-1, keepdims=True).astype(cdt) / n
        y = [t_frac[:, None].astype(cdt), frac, fy]
        y = jnp.concatenate(y + ([cond.astype(cdt)] if cond is not None else []), -1)

        def mlp(h, hidden, out, name):
            h = nn.relu(nn.Dense(hidden, name=f"{name}0", **kw)(h))
            return nn.relu(nn.Dense(out, name=f"{name}1", **kw)(h))

        x = mlp(jnp.concatenate([x1, fx], -1), 2 * self.dx, self.dx, "in_x") * xm
        e = mlp(e1, 2 * self.de, self.de, "in_e")
        e = 0.5 * (e + jnp.swapaxes(e, 1, 2)) * em
        y = mlp(y, 2 * self.dy, self.dy, "in_y")
        for i in range(self.num_layers):
            x, e, y = GraphTransformerLayer(
                self.dx, self.de, self.dy, self.heads, dropout=self.dropout, name=f"layer{i}", **kw
            )(x, e, y, node_mask, train=train)
        out_x = nn.Dense(self.num_node_types, name="out_x1", **kw)(
            nn.relu(nn.Dense(2 * self.dx, name="out_x0", **kw)(x))
        )
        out_e = nn.Dense(self.num_edge_types, name="out_e1", **kw)(
            nn.relu(nn.Dense(2 * self.de, name="out_e0", **kw)(e))
        )
        out_x = (out_x + x1) * xm
        out_e = (out_e + e1) * em
        return out_x, 0.5 * (out_e + jnp.swapaxes(out_e, 1, 2))


def loss_terms(logits_x, logits_e, x0, e0, node_mask, lam: float = 5.0):
    """(loss, ce_x, ce_e): CE over real nodes + lam CE over real pairs i != j (means)."""
    n = node_mask.shape[-1]
    mx = node_mask.astype(logits_x.dtype)
    me = (edge_mask(node_mask) & ~jnp.eye(n, dtype=bool)).astype(logits_e.dtype)
    cex = -jnp.take_along_axis(jax.nn.log_softmax(logits_x), x0[..., None], -1)[..., 0]
    cee = -jnp.take_along_axis(jax.nn.log_softmax(logits_e), e0[..., None], -1)[..., 0]
    ce_x = (cex * mx).sum() / jnp.maximum(mx.sum(), 1.0)
    ce_e = (cee * me).sum() / jnp.maximum(me.sum(), 1.0)
    return ce_x + lam * ce_e, ce_x, ce_e


def type_marginals(x, e, node_mask, num_node_types: int, num_edge_types: int):
    """Host numpy marginals (m_x, m_e) of node types over real nodes and edge types over real
    ordered pairs i != j (the "no edge" type included), the chain's limit."""
    x, e, node_mask = np.asarray(x), np.asarray(e), np.asarray(node_mask, bool)
    pair = node_mask[:, :, None] & node_mask[:, None, :] & ~np.eye(e.shape[-1], dtype=bool)
    m_x = np.bincount(x[node_mask], minlength=num_node_types).astype(np.float64)
    m_e = np.bincount(e[pair], minlength=num_edge_types).astype(np.float64)
    return m_x / m_x.sum(), m_e / m_e.sum()


def sample(apply_fn, key, node_counts, n_max: int, alpha_bar, m_x, m_e, cond=None):
    """Ancestral sampling from t = T to 0. ``apply_fn(x_t, e_t, t_frac, node_mask, cond)`` returns
    the denoiser's logits; node_counts [B] int. Returns (x, e, node_mask) at t = 0."""
    alpha_bar = jnp.asarray(alpha_bar, jnp.asarray(m_e).dtype)
    m_x, m_e = jnp.asarray(m_x), jnp.asarray(m_e)
    T = alpha_bar.shape[0] - 1
    b = node_counts.shape[0]
    node_mask = jnp.arange(n_max)[None, :] < node_counts[:, None]
    kx, ke, key = jax.random.split(key, 3)
    x = jnp.where(node_mask, jax.random.categorical(kx, jnp.log(m_x) * jnp.ones((b, n_max, 1))), 0)
    e_logits = jnp.log(m_e) * jnp.ones((b, n_max, n_max, 1))
    e = symmetrise_edges(jax.random.categorical(ke, e_logits), node_mask)

    def step(carry, t):
        x, e, key = carry
        key, kx, ke = jax.random.split(key, 3)
        t_frac = jnp.full((b,), t / T, alpha_bar.dtype)
        lx, le = apply_fn(x, e, t_frac, node_mask, cond)
        a_t, a_s = alpha_bar[t], alpha_bar[t - 1]
        px = reverse_probs(x, jax.nn.softmax(lx), a_t, a_s, m_x)
        pe = reverse_probs(e, jax.nn.softmax(le), a_t, a_s, m_e)
        x = jnp.where(node_mask, jax.random.categorical(kx, jnp.log(px + 1e-30)), 0)
        e = symmetrise_edges(jax.random.categorical(ke, jnp.log(pe + 1e-30)), node_mask)
        return (x, e, key), None

    (x, e, _), _ = jax.lax.scan(step, (x, e, key), jnp.arange(T, 0, -1))
    return x, e, node_mask


def marginal_baseline(key, node_counts, n_max: int, m_e):
    """The chain's limit x_T as a baseline generator: every pair of real nodes an edge of type
    drawn from the training marginal ``m_e``, independently. Returns (e, node_mask)."""
    node_mask = jnp.arange(n_max)[None, :] < jnp.asarray(node_counts)[:, None]
    b = node_mask.shape[0]
    logits = jnp.log(jnp.asarray(m_e)) * jnp.ones((b, n_max, n_max, 1))
    return symmetrise_edges(jax.random.categorical(key, logits), node_mask), node_mask


# -- task ---------------------------------------------------------------------------------------

DATA_KEYS = ("name", "num_graphs", "num_nodes", "seed")


class GraphGeneration:
    """Unconditional DiGress training on a regenerated SPECTRE set, for the netlab trainer
    (config ``task = "graph.generation"``, ``model.name = "digress"``).

    ``data.name`` planar | sbm, ``data.num_graphs`` (200 in the paper's protocol; split
    128/32/40 by :func:`netlab.graph.spectre_data.split`), ``data.num_nodes`` (planar only, 64),
    ``data.seed``; ``diffusion.T`` (steps), ``diffusion.lam`` (edge CE weight, 5),
    ``diffusion.eval_samples`` (graphs sampled by ``evaluate``, scored with
    :func:`netlab.graph.gen_metrics.evaluate` against the test split, and drawn next to test
    graphs and marginal-baseline graphs in the picture ``samples``). Each step draws
    ``train.batch_size`` training graphs (a function of seed and step); the noise and t come from
    the trainer's key."""

    def __init__(self, config, policy=None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        self.fdt = builder.float_dtype(self.policy)
        d = config.data
        D.check_data_keys(d, DATA_KEYS, "GraphGeneration")
        spec = builder.model_spec(config, self.policy, "generation", defaults={"name": "digress"})
        check_choice("data.name", d.name, spectre_data.KINDS)
        diff = config.get("diffusion", {})
        self.T, self.lam = int(diff.get("T", 500)), float(diff.get("lam", 5.0))
        self.eval_samples = int(diff.get("eval_samples", 16))
        check_range("diffusion.T", self.T, 1, None, integer=True)
        self.kind, self.seed = str(d.name), int(d.get("seed", 0))
        kw = {"n": int(d.num_nodes)} if d.name == "planar" and "num_nodes" in d else {}
        graphs = spectre_data.generate(d.name, int(d.get("num_graphs", 200)), self.seed, **kw)
        self.train, _, self.test = spectre_data.split(graphs, self.seed)
        if not self.train:
            raise UserError(f"data.num_graphs={d.num_graphs}: too few graphs for a train split")
        self.e, self.mask = spectre_data.to_dense(self.train)
        self.x = np.zeros(self.mask.shape, np.int32)
        self.batch = int(config.train.batch_size) or len(self.train)
        m_x, m_e = type_marginals(self.x, self.e, self.mask, 1, 2)
        self.m_x, self.m_e = m_x.astype(self.fdt), m_e.astype(self.fdt)
        self.alpha_bar = cosine_alpha_bar(self.T).astype(self.fdt)
        self.model = spec(num_node_types=1, num_edge_types=2)

    def init_variables(self, rng):
        b = min(self.batch, len(self.train))
        t = jnp.zeros(b, self.fdt)
        return self.model.init(rng, self.x[:b], self.e[:b], t, self.mask[:b])

    def batch_axes(self):
        return {"x": ("batch", None), "e": ("batch", None, None), "mask": ("batch", None)}

    def global_batch_size(self):
        return self.batch

    def train_batch(self, step):
        rng = np.random.default_rng([self.seed, step, 7])
        idx = rng.choice(len(self.train), self.batch, replace=self.batch > len(self.train))
        return {"x": self.x[idx], "e": self.e[idx], "mask": self.mask[idx]}

    def loss_fn(self, params, model_state, batch, rng, train):
        kt, kn, kd = jax.random.split(rng, 3)
        x0, e0, mask = batch["x"], batch["e"], batch["mask"]
        t = jax.random.randint(kt, (x0.shape[0],), 1, self.T + 1)
        ab = jnp.asarray(self.alpha_bar)[t]
        x_t, e_t = apply_noise(kn, x0, e0, mask, ab, jnp.asarray(self.m_x), jnp.asarray(self.m_e))
        t_frac = t.astype(self.fdt) / self.T
        lx, le = self.model.apply(
            {"params": params}, x_t, e_t, t_frac, mask, train=train, rngs={"dropout": kd}
        )
        loss, ce_x, ce_e = loss_terms(lx, le, x0, e0, mask, self.lam)
        return loss, ({"ce_x": ce_x, "ce_e": ce_e}, model_state)

    def evaluate(self, params, model_state, step, workdir):
        def apply(x, e, t, mask, cond):
            return self.model.apply({"params": params}, x, e, t.astype(self.fdt), mask)

        counts = np.random.default_rng([self.seed, step, 8]).choice(
            self.mask.sum(1), self.eval_samples
        )
        n_max = self.mask.shape[1]
        run = jax.jit(
            lambda k: sample(
                apply, k, jnp.asarray(counts), n_max, self.alpha_bar, self.m_x, self.m_e
            )
        )
        _, e, mask = run(jax.random.key(self.seed + step))
        graphs = spectre_data.from_dense(e, mask)
        scalars = gen_metrics.evaluate(graphs, self.train, self.test, self.kind)
        base = spectre_data.from_dense(
            *marginal_baseline(jax.random.key(self.seed + step + 1), counts, n_max, self.m_e)
        )
        rows = {"DiGress samples": graphs, "test graphs": self.test, "marginal baseline": base}
        return scalars, {"samples": gen_metrics.draw_graphs(rows, kind=self.kind)}


__all__ = [
    "DiGress",
    "GraphGeneration",
    "apply_noise",
    "cosine_alpha_bar",
    "cycle_counts",
    "extra_features",
    "loss_terms",
    "marginal_baseline",
    "reverse_probs",
    "sample",
    "spectral_features",
    "type_marginals",
]
