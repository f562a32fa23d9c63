"""Neural Sheaf Diffusion (Bodnar, Di Giovanni, Chamberlain, Liò & Bronstein, NeurIPS 2022).

A cellular sheaf on an undirected graph gives each node v and edge e a d-dimensional stalk and each
incidence v ◁ e a restriction map F_{v◁e} ∈ R^{d×d}. For x ∈ R^{n d} the sheaf Laplacian
(Definition 2.1 / eq. 2) acts as
    (L_F x)_v = Σ_{e = {v,u}} F_{v◁e}^T (F_{v◁e} x_v - F_{u◁e} x_u),
i.e. diagonal blocks L_vv = Σ_e F_{v◁e}^T F_{v◁e} =: D_v and off-diagonal L_vu = -F_{v◁e}^T F_{u◁e};
the normalised Laplacian is Δ_F = D^{-1/2} L_F D^{-1/2}. With F = I_d this is the graph Laplacian
(normalised: I - D^{-1/2} A D^{-1/2}) ⊗ I_d.

NSD (eq. 6 and §4) learns the maps from features, F_{v◁e} = Φ(x_v, x_u) = σ(V [vec x_v || vec x_u]),
in three classes (§4, "Sheaf learners"): diagonal maps (d numbers), orthogonal maps O(d)
(Householder products or the Cayley transform of a skew-symmetric matrix), and general d×d maps.
The discrete diffusion layer (eq. 8, with the per-stalk residual weights ε of §5) on
X ∈ R^{(n d)×f}:
    X_{t+1} = (1 + tanh ε_t) ⊙ X_t - σ( Δ_{F(t)} (I_n ⊗ W_1^t) X_t W_2^t ),
σ = ELU; encoder X_0 = MLP(input) reshaped to n × d × f, decoder a linear map of vec(X_T).
`augmented=True` normalises with (D + I)^{-1/2} (as the authors' code does for stability);
`augmented=False` is the plain D^{-1/2} of the paper.

Edges: an undirected graph stored with both directions (netlab.graph.graphs conventions: sorted by
(receiver, sender), no self-loops, padding edges on the padding node). For directed edge e = s -> r
the learner produces the sender-side map M_e = F_{s◁{s,r}}; the receiver-side map is M_{rev(e)},
found with a sorted search over the (receiver, sender) keys inside jit.

Fixed extra stalk dimensions (`add_lp`, `add_hp`; searched over in the authors' sweeps, e.g.
config/orth_webkb_sweep.yml, and implemented in their `LaplacianBuilder.get_fixed_maps` /
`append_fixed_maps`): each
adds one stalk dimension whose restriction maps are not learned, so its block of the sheaf Laplacian
is a fixed graph operator (before normalisation: the degree on the diagonal, a constant ±1 off it):
    add_lp: off-diagonal +1, i.e. D + A, the signless Laplacian (maps with F_{s◁e} F_{r◁e} = -1;
            here F_{s◁e} = sign(r - s)); Δ itself is then a low-pass filter (largest on smooth
            signals), so the step x - Δx is high-pass on that dimension;
    add_hp: off-diagonal -1, i.e. D - A, the graph Laplacian (maps F = 1, the constant sheaf); Δ is
            high-pass, the step x - Δx low-pass (plain heat diffusion).
(The authors' argparse help strings have the two descriptions the other way round; the code, and
its dense test with values [1, -1] for [lp, hp], is what is followed here.) Their order is learned
dimensions, then lp, then hp; the encoder, the left weights W_1 and the residual weights ε span all
d + add_lp + add_hp dimensions, the sheaf learner reads all of them and outputs maps for the d
learned ones only. Normalisation is the same as for the learned part, (deg + 1)^{-1/2} on both sides
when augmented, as their `scalar_normalise`.

Encoder: dropout(input_dropout), Linear, ELU, dropout(dropout), and with `second_linear` a second
Linear of the same width (no activation), as the authors' lin1 / lin12 (their chameleon script turns
it on). The authors' `sheaf_decay` (a weight decay of its own for the sheaf learners) is the task's
`loss.weight_decay_overrides={"sheaf_learner": value}` (netlab.graph.task.l2_penalty).

Where this differs from the authors' code: the left weights W_1 are initialised orthogonal by
default (theirs: the identity, `left_init="identity"` here); their O(d) model can learn extra edge
weights (`edge_weights`) and their Gen-NSD clamps normalised entries to [-1, 1]; neither is here.

`NeuralSheafDiffusion` is the model (`registries.MODELS["nsd"]`); `SheafDiffusion` is one layer of
eq. 8 on its own (`registries.LAYERS["sheaf"]`); both run the same `sheaf_step`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS
from netlab.registry import check_choice
from netlab.sharding import axes

MAP_TYPES = ("diag", "orth", "general")
ORTH_METHODS = ("householder", "cayley")
LEFT_INITS = ("orthogonal", "identity")
# Dense initialisation: "lecun" (normal, std 1/sqrt(fan_in), zero bias) or "torch" (the authors'
# torch.nn.Linear default: kernel and bias uniform on +-1/sqrt(fan_in))
INITS = ("lecun", "torch")


def dense_inits(init: str, fan_in: int):
    """(kernel_init, bias_init) of `init` (INITS) for a Dense layer with `fan_in` inputs."""
    check_choice("weight_init", init, INITS)
    if init == "lecun":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    bound = 1.0 / fan_in**0.5
    bias = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
        key, shape, dtype, -bound, bound
    )
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), bias


# --------------------------------------------------------------------------------------------------
# Restriction maps
def num_map_params(map_type: str, d: int, orth_method: str = "householder") -> int:
    check_choice("map_type", map_type, MAP_TYPES)
    if map_type == "diag":
        return d
    if map_type == "general":
        return d * d
    check_choice("orth_method", orth_method, ORTH_METHODS)
    return d * (d + 1) // 2 if orth_method == "householder" else d * (d - 1) // 2


def householder_orthogonal(params, d: int):
    """[..., d(d+1)/2] -> [..., d, d]: product of d Householder reflections I - 2 v v^T / |v|^2,
    v_k = unit basis vector e_k plus the k-th column of the strictly-lower part filled from
    params."""
    tril = jnp.zeros(params.shape[:-1] + (d, d), params.dtype)
    rows, cols = jnp.tril_indices(d)
    tril = tril.at[..., rows, cols].set(params)
    V = (
        tril
        - jnp.einsum("...ii->...i", tril)[..., None, :] * jnp.eye(d, dtype=params.dtype)
        + jnp.eye(d, dtype=params.dtype)
    )
    Q = jnp.broadcast_to(jnp.eye(d, dtype=params.dtype), params.shape[:-1] + (d, d))
    for k in range(d):
        v = V[..., :, k]
        coef = 2.0 / jnp.sum(v * v, -1)
        Q = Q - coef[..., None, None] * jnp.einsum("...ij,...j,...k->...ik", Q, v, v)
    return Q


def cayley_orthogonal(params, d: int):
    """[..., d(d-1)/2] -> [..., d, d]: (I - S)(I + S)^{-1} for the skew-symmetric S filled from
    params."""
    S = jnp.zeros(params.shape[:-1] + (d, d), params.dtype)
    rows, cols = jnp.tril_indices(d, -1)
    S = S.at[..., rows, cols].set(params)
    S = S - jnp.swapaxes(S, -1, -2)
    eye = jnp.eye(d, dtype=params.dtype)
    # (I - S)(I + S)^{-1} = solve((I + S)^T, (I - S)^T)^T
    return jnp.swapaxes(
        jnp.linalg.solve(jnp.swapaxes(eye + S, -1, -2), jnp.swapaxes(eye - S, -1, -2)), -1, -2
    )


def maps_from_params(params, map_type: str, d: int, orth_method: str = "householder"):
    """Raw learner outputs [E, k] -> maps: diag [E, d] (vector of the diagonal) or [E, d, d]."""
    check_choice("map_type", map_type, MAP_TYPES)
    if map_type == "diag":
        return params
    if map_type == "general":
        return params.reshape(params.shape[:-1] + (d, d))
    check_choice("orth_method", orth_method, ORTH_METHODS)
    if orth_method == "householder":
        return householder_orthogonal(params, d)
    return cayley_orthogonal(params, d)


def append_fixed_maps(graph: G.Graph, maps, add_lp: bool = False, add_hp: bool = False):
    """Learned sender-side maps [E, d] (diag) or [E, d, d] -> [E, d + k] or [E, d + k, d + k] with
    the fixed dimensions of `add_lp` (F_{s◁e} = sign(r - s), so that F_{s◁e} F_{r◁e} = -1 and the
    block is D + A) and `add_hp` (F = 1, the block D - A) appended in that order, block-diagonally
    (the authors' LaplacianBuilder.append_fixed_maps; module docstring)."""
    cols = []
    if add_lp:
        cols.append(jnp.sign(graph.receivers.astype(maps.dtype) - graph.senders.astype(maps.dtype)))
    if add_hp:
        cols.append(jnp.ones(maps.shape[0], maps.dtype))
    if not cols:
        return maps
    fixed = jnp.stack(cols, -1)  # [E, k]
    if maps.ndim == 2:
        return jnp.concatenate([maps, fixed], -1)
    d, k = maps.shape[-1], fixed.shape[-1]
    top = jnp.concatenate([maps, jnp.zeros(maps.shape[:1] + (d, k), maps.dtype)], -1)
    bottom = jnp.concatenate(
        [
            jnp.zeros(maps.shape[:1] + (k, d), maps.dtype),
            fixed[:, :, None] * jnp.eye(k, dtype=maps.dtype),
        ],
        -1,
    )
    return jnp.concatenate([top, bottom], -2)


# --------------------------------------------------------------------------------------------------
# Sheaf Laplacian
def reverse_edges(graph: G.Graph):
    """Index of the reverse edge (r -> s) of each edge (s -> r), jittable. Needs a symmetric edge
    list sorted by (receiver, sender); padding edges map to a padding edge. Keys r*N+s need
    N^2 < 2^31."""
    n = graph.num_nodes
    s, r = graph.senders.astype(jnp.int32), graph.receivers.astype(jnp.int32)
    keys = r * n + s
    return jnp.clip(jnp.searchsorted(keys, s * n + r), 0, keys.shape[0] - 1).astype(jnp.int32)


def _matvec(maps, x, diag, transpose=False):
    """maps [E, d(, d)] applied to x [E, d, f]."""
    if diag:
        return maps[:, :, None] * x
    return jnp.einsum("eji,ejf->eif" if transpose else "eij,ejf->eif", maps, x)


def _inv_sqrt_psd(D, eps, iters: int = 30):
    """D^{-1/2} for a batch of symmetric positive-definite d×d matrices by the coupled Newton–Schulz
    iteration on D / tr(D) (differentiable, and stable at repeated eigenvalues where eigh's gradient
    is not). Matrices with tr(D) <= eps (isolated or padding nodes) give 0."""
    d = D.shape[-1]
    eye = jnp.eye(d, dtype=D.dtype)
    tr = jnp.trace(D, axis1=-2, axis2=-1)
    ok = tr > eps
    c = jnp.where(ok, tr, 1.0)
    Y = jnp.where(ok[:, None, None], D / c[:, None, None], eye)
    Z = jnp.broadcast_to(eye, D.shape)

    def body(_, yz):
        Y, Z = yz
        T = 0.5 * (3.0 * eye - Z @ Y)
        return Y @ T, T @ Z

    Y, Z = jax.lax.fori_loop(0, iters, body, (Y, Z))
    return jnp.where(ok[:, None, None], Z / jnp.sqrt(c)[:, None, None], 0.0)


class SheafLaplacian:
    """The (normalised) sheaf Laplacian for given sender-side maps M_e [E, d] (diag) or [E, d, d].

    Call `apply(x)` with x [N, d, f]. `map_type` decides how D is formed and inverted:
    diag -> elementwise, orth -> deg · I, general -> per-node Newton–Schulz inverse square root."""

    def __init__(
        self,
        graph: G.Graph,
        maps,
        map_type: str,
        normalised: bool = True,
        augmented: bool = True,
        eps: float = 1e-6,
    ):
        self.graph, self.map_type, self.normalised = graph, map_type, normalised
        self.diag = map_type == "diag"
        emask = graph.edge_mask.astype(maps.dtype)
        maps = maps * emask.reshape((-1,) + (1,) * (maps.ndim - 1))
        self.send = maps  # F_{s◁e}
        self.recv = maps[reverse_edges(graph)]  # F_{r◁e}
        n, d = graph.num_nodes, maps.shape[1]
        if self.diag:
            D = G.segment_sum(self.recv**2, graph.receivers, n, graph.sorted_receivers)  # [N, d]
        elif map_type == "orth":
            deg = G.segment_sum(emask, graph.receivers, n, graph.sorted_receivers)
            D = deg[:, None, None] * jnp.eye(d, dtype=maps.dtype)
        else:
            D = G.segment_sum(
                jnp.einsum("eji,ejk->eik", self.recv, self.recv),
                graph.receivers,
                n,
                graph.sorted_receivers,
            )
        self.D = D
        if normalised:
            if augmented:
                D = D + (1.0 if self.diag else jnp.eye(d, dtype=maps.dtype))
            if self.diag:
                self.d_inv_sqrt = jnp.where(
                    D > eps, 1.0 / jnp.sqrt(jnp.where(D > eps, D, 1.0)), 0.0
                )
            elif map_type == "orth":
                dd = D[:, 0, 0]
                self.d_inv_sqrt = jnp.where(
                    dd > eps, 1.0 / jnp.sqrt(jnp.where(dd > eps, dd, 1.0)), 0.0
                )
            else:
                self.d_inv_sqrt = _inv_sqrt_psd(D, eps)

    def _scale(self, x):
        if self.diag:
            return self.d_inv_sqrt[:, :, None] * x
        if self.map_type == "orth":
            return self.d_inv_sqrt[:, None, None] * x
        return jnp.einsum("nij,njf->nif", self.d_inv_sqrt, x)

    def apply(self, x):
        g = self.graph
        y = self._scale(x) if self.normalised else x
        ys, yr = G.gather(g, y, "senders"), G.gather(g, y, "receivers")
        diff = _matvec(self.recv, yr, self.diag) - _matvec(
            self.send, ys, self.diag
        )  # F_r y_r - F_s y_s
        out = G.propagate(g, _matvec(self.recv, diff, self.diag, transpose=True))
        out = self._scale(out) if self.normalised else out
        return out * g.node_mask[:, None, None].astype(out.dtype)


# --------------------------------------------------------------------------------------------------
# Model
class SheafLearner(nn.Module):
    """Φ(x_s, x_r) = act(V [x_s || x_r]) -> restriction maps of the requested class (no bias)."""

    d: int
    map_type: str = "diag"
    orth_method: str = "householder"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    weight_init: str = "lecun"

    @nn.compact
    def __call__(self, graph: G.Graph, x):
        k = num_map_params(self.map_type, self.d, self.orth_method)
        pair = jnp.concatenate([G.gather(graph, x, "senders"), G.gather(graph, x, "receivers")], -1)
        raw = nn.Dense(
            k,
            use_bias=False,
            name="V",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(
                dense_inits(self.weight_init, pair.shape[-1])[0], (axes.EMBED, None)
            ),
        )(pair)
        if self.map_type != "orth":
            raw = jnp.tanh(raw)
        return maps_from_params(raw, self.map_type, self.d, self.orth_method)


def sheaf_step(mod: nn.Module, lap: SheafLaplacian, x, h, t: int):
    """One diffusion layer, eq. 8: (1 + tanh ε_t) ⊙ x - σ(Δ (I ⊗ W_1^t) h W_2^t) on x, h [N, d, f]
    (h: x after dropout). Creates `left_t`, `right_t`, `epsilon_t` on `mod` (inside its compact
    call), as its `left_weights`, `right_weights`, `use_epsilons`, `use_act` fields ask."""
    d, f = x.shape[1], x.shape[2]
    if mod.left_weights:
        check_choice("left_init", mod.left_init, LEFT_INITS)
        init = nn.initializers.orthogonal()
        if mod.left_init == "identity":  # the authors' nn.init.eye_
            init = lambda key, shape, dtype: jnp.eye(shape[0], dtype=dtype)  # noqa: E731
        W1 = mod.param(f"left_{t}", init, (d, d), mod.param_dtype)
        h = jnp.einsum("ij,njf->nif", W1, h)
    if mod.right_weights:
        W2 = mod.param(f"right_{t}", nn.initializers.orthogonal(), (f, f), mod.param_dtype)
        h = jnp.einsum("nif,fg->nig", h, W2)
    h = lap.apply(h)
    if mod.use_act:
        h = nn.elu(h)
    coeff = 1.0
    if mod.use_epsilons:
        eps = mod.param(f"epsilon_{t}", nn.initializers.zeros, (d,), mod.param_dtype)
        coeff = 1.0 + jnp.tanh(eps)[None, :, None]
    return coeff * x - h


@LAYERS.register("sheaf")
class SheafDiffusion(nn.Module):
    """One NSD layer: x [N, F] (projected to `features` by a bias-free linear map when the widths
    differ) is split into d stalks of features/d channels, the restriction maps are learned from
    it, and one step of eq. 8 is taken; returns [N, features]."""

    features: int | None = None
    d: int = 2
    map_type: str = "diag"
    orth_method: str = "householder"
    left_weights: bool = True
    left_init: str = "orthogonal"
    right_weights: bool = True
    use_epsilons: bool = True
    augmented: bool = True
    use_act: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: G.Graph, x):
        x = L.project(self, x, self.features)
        n, width = x.shape
        if width % self.d:
            raise UserError(
                f"sheaf layer: features={width} is not divisible by the stalk "
                f"dimension d={self.d}; choose features as a multiple of d"
            )
        maps = SheafLearner(
            self.d,
            self.map_type,
            self.orth_method,
            self.dtype,
            self.param_dtype,
            name="sheaf_learner_0",
        )(graph, x)
        lap = SheafLaplacian(graph, maps, self.map_type, normalised=True, augmented=self.augmented)
        xs = x.reshape(n, self.d, width // self.d)
        return sheaf_step(self, lap, xs, xs, 0).reshape(n, width)


@MODELS.register("nsd")
class NeuralSheafDiffusion(nn.Module):
    """NSD node classifier (Diag-NSD, O(d)-NSD, Gen-NSD by `map_type`)."""

    TASK = "node"
    CHOICES = {
        "map_type": MAP_TYPES,
        "orth_method": ORTH_METHODS,
        "left_init": LEFT_INITS,
        "weight_init": INITS,
    }
    num_classes: int
    d: int = 3  # learned stalk dimensions (the stalks have d + add_lp + add_hp)
    hidden_channels: int = 16
    num_layers: int = 4
    map_type: str = "diag"
    orth_method: str = "householder"
    nonlinear: bool = False  # relearn the maps at every layer (else only from X_0)
    input_dropout: float = 0.0
    dropout: float = 0.0
    add_lp: bool = False  # a fixed stalk dimension with the signless Laplacian block (docstring)
    add_hp: bool = False  # a fixed stalk dimension with the graph Laplacian block
    left_weights: bool = True
    left_init: str = "orthogonal"
    right_weights: bool = True
    use_epsilons: bool = True
    augmented: bool = True
    use_act: bool = True
    weight_init: str = "lecun"  # INITS; "torch": the authors' nn.Linear default (uniform, bias)
    second_linear: bool = False  # the authors' `second_linear`: a 2nd encoder layer, no activation
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: G.Graph, x, train: bool = False):
        n, f = x.shape[0], self.hidden_channels
        d = self.d + int(self.add_lp) + int(self.add_hp)  # stalk dimension
        det = not train

        def dense(k, name, names, fan_in):
            kernel_init, bias_init = dense_inits(self.weight_init, fan_in)
            return nn.Dense(
                k,
                name=name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(kernel_init, names),
                bias_init=bias_init,
            )

        x = nn.Dropout(self.input_dropout)(x, deterministic=det)
        x = dense(d * f, "encoder", (None, axes.EMBED), x.shape[-1])(x)
        if self.use_act:
            x = nn.elu(x)
        x = nn.Dropout(self.dropout)(x, deterministic=det)
        if self.second_linear:  # the authors' lin12, after the dropout, without an activation
            x = dense(d * f, "encoder_2", (None, axes.EMBED), d * f)(x)
        x = x.reshape(n, d, f)
        lap = None
        for t in range(self.num_layers):
            if t == 0 or self.nonlinear:
                xm = x.reshape(n, d * f)
                if t > 0:
                    xm = nn.Dropout(self.dropout)(xm, deterministic=det)
                maps = SheafLearner(
                    self.d,
                    self.map_type,
                    self.orth_method,
                    self.dtype,
                    self.param_dtype,
                    self.weight_init,
                    name=f"sheaf_learner_{t}",
                )(graph, xm)
                maps = append_fixed_maps(graph, maps, self.add_lp, self.add_hp)
                lap = SheafLaplacian(
                    graph, maps, self.map_type, normalised=True, augmented=self.augmented
                )
            h = nn.Dropout(self.dropout)(x, deterministic=det)
            x = sheaf_step(self, lap, x, h, t)
        x = x.reshape(n, d * f)
        return dense(self.num_classes, "decoder", (axes.EMBED, axes.VOCAB), d * f)(x)
