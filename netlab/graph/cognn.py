"""Co-GNN: Finkelshtein, Huang, Ceylan & Bronstein, "Cooperative Graph Neural Networks" (ICML 2024).

Every node chooses, per layer, one of four actions (§3): STANDARD (listen and broadcast), LISTEN,
BROADCAST or ISOLATE. Two action networks π_in and π_out (one-layer MPNNs mapping h to 2 logits:
listen yes/no, broadcast yes/no) draw the choice with the straight-through Gumbel-softmax (Jang et
al. 2017; Maddison et al. 2017): the forward pass uses the one-hot sample, the backward pass the
gradient of softmax((logits + g) / τ). The environment network then passes a message u -> v only
if u broadcasts and v listens (eq. 3):

    w_uv = broadcast_u · listen_v,    h_v' = σ( W [h_v ‖ AGG_{u -> v} w_uv h_u] ).

With every node on STANDARD all w_uv = 1 and a Co-GNN layer is exactly its environment layer; with
every node on ISOLATE it is a per-node MLP. As in the authors' code (``WeightedGNNConv``) the mean
aggregation divides by the full in-degree, Σ_u w_uv h_u / deg(v), not by the number of listened
edges; the action networks are shared across layers (model) while actions are re-drawn per layer.

Deliberate differences: the temperature τ is fixed (the authors' default; their learned-temperature
option is not implemented); at evaluation (``train=False`` / ``deterministic=True``) the actions are
the noise-free argmax of the logits, so inference is deterministic; Gumbel noise comes from the
``dropout`` RNG stream, which the graph tasks already provide.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.errors import UserError
from netlab.graph import graphs as G
from netlab.graph import layers as L
from netlab.graph.registries import LAYERS, MODELS

ACTIONS = ("standard", "listen", "broadcast", "isolate")
ENV_AGGR = ("sum", "mean")


def straight_through_gumbel(logits, tau: float, rng=None):
    """One-hot argmax of logits (+ Gumbel noise from ``rng``) forward; the gradient of
    softmax((logits + g) / τ) backward. The forward value is exactly one-hot."""
    if rng is not None:
        logits = logits + jax.random.gumbel(rng, logits.shape, logits.dtype)
    soft = jax.nn.softmax(logits / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))


class WeightedConv(nn.Module):
    """The authors' weighted MPNN layer: W [h_v ‖ AGG_{u->v} w_uv h_u] + b, AGG sum or mean (mean
    divides by the in-degree over all real edges). Used for the environment and action networks."""

    features: int
    aggr: str = "mean"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, weight=None):
        w = graph.edge_weight if weight is None else graph.edge_weight * weight
        agg = G.propagate(graph, G.gather(graph, x), w.astype(x.dtype), self.aggr)
        h = jnp.concatenate([x, agg], axis=-1)
        return L.dense(self.features, True, "lin", self.dtype, self.param_dtype)(h)


def action_weights(graph, x, act_in, act_out, tau, rng=None):
    """Per-edge weights w_uv = broadcast_u · listen_v (0/1 forward) from the action networks."""
    r_in = r_out = None
    if rng is not None:
        r_in, r_out = jax.random.split(rng)
    listen = straight_through_gumbel(act_in(graph, x), tau, r_in)[:, 0]
    broadcast = straight_through_gumbel(act_out(graph, x), tau, r_out)[:, 0]
    return G.gather(graph, broadcast) * G.gather(graph, listen, "receivers")


@LAYERS.register("cognn")
class CoGNNConv(nn.Module):
    """One Co-GNN layer with its own action networks (mean one-layer MPNNs) and environment layer
    (``aggr``); x [N, F] -> [N, features]. Gumbel noise only when ``deterministic=False``."""

    features: int
    aggr: str = "mean"
    tau: float = 0.01
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act_in = WeightedConv(2, "mean", name="act_in", **kw)
        act_out = WeightedConv(2, "mean", name="act_out", **kw)
        rng = None if deterministic else self.make_rng("dropout")
        w = action_weights(graph, x, act_in, act_out, self.tau, rng)
        return WeightedConv(self.features, self.aggr, name="env", **kw)(graph, x, w)


@MODELS.register("cognn")
class CoGNN(nn.Module):
    """Node classifier: Linear encoder -> num_layers × [LayerNorm? -> actions -> environment layer
    -> dropout -> ReLU (+ skip)] -> Linear decoder, with π_in, π_out shared across layers (the
    authors' defaults: 3 layers, dropout 0.2, τ = 0.01, mean environment). ``input_dropout`` (a
    netlab addition, 0 = the authors' model) drops input features before the encoder, as GCN does
    on Planetoid."""

    TASK = "node"
    CHOICES = {"env_aggr": ENV_AGGR}
    hidden: int = 64
    num_classes: int = 7
    num_layers: int = 3
    env_aggr: str = "mean"
    tau: float = 0.01
    dropout: float = 0.2
    input_dropout: float = 0.0
    skip: bool = False
    layer_norm: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if not self.tau > 0:
            raise UserError(f"model.tau={self.tau}: the Gumbel-softmax temperature must be > 0")
        super().__post_init__()

    @nn.compact
    def __call__(self, graph, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act_in = WeightedConv(2, "mean", name="act_in", **kw)
        act_out = WeightedConv(2, "mean", name="act_out", **kw)
        x = L.Dropout(self.input_dropout)(x, deterministic=not train)
        h = L.dense(self.hidden, True, "encoder", self.dtype, self.param_dtype)(x)
        for i in range(self.num_layers):
            if self.layer_norm:
                h = nn.LayerNorm(epsilon=1e-5, name=f"norm{i}", **kw)(h)
            rng = self.make_rng("dropout") if train else None
            w = action_weights(graph, h, act_in, act_out, self.tau, rng)
            out = WeightedConv(self.hidden, self.env_aggr, name=f"env{i}", **kw)(graph, h, w)
            out = nn.relu(L.Dropout(self.dropout)(out, deterministic=not train))
            h = h + out if self.skip else out
        return L.dense(self.num_classes, True, "decoder", self.dtype, self.param_dtype)(h)


__all__ = ["ACTIONS", "CoGNN", "CoGNNConv", "WeightedConv", "straight_through_gumbel"]
