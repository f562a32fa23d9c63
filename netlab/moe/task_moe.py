"""Task-MoE: experts chosen by the task, not the token. Kudugunta et al. 2021, "Beyond
Distillation: Task-level Mixture-of-Experts for Efficient Inference" (Findings of EMNLP,
arXiv 2110.03742), Sec. 2-3.

A token-level MoE routes every token by its own representation; Task-MoE routes by the task id t
of its sequence (in the paper: the target language, or the language pair), so all tokens of a task
take the same k experts:

    z_t = W_g[t]                       (E,) the task's gate logits, a learned row per task
    p_t = softmax(z_t); I_t = top-k(p_t); g_t = p_t[I_t]   (top-k gating, GShard / Switch form)
    y   = sum_{j in I_t} g_t[j] FFN_j(x)          for every token x of a sequence of task t

This is top-k token choice whose router input is a constant per task (a one-hot task embedding):
`W_g[t]` plays the role of x W_r. Because the choice depends on t only, the k experts of a task can
be cut out of the trained model (`extract`) and served alone: `apply_extracted` gives the full
model's output for that task with k instead of E experts in memory (the paper's deployment claim,
1.9x-2.6x peak throughput over token-level MoE at similar BLEU).

Not a `ROUTERS` entry: a router's `route(layer, x, train)` sees the tokens only, and the task id
cannot reach it without changing the shared MoE layer, so Task-MoE is its own layer here. Dispatch
needs no capacity and no all-to-all: each sequence gathers its task's k expert weights (no token
is ever dropped). Differences from the paper: the paper's gate is a learned function of the task
id inside GShard's capacity-limited token dispatch; here the per-task logits are a parameter table
and every token of a task reaches its experts. The Switch load-balancing loss (over the batch's
sequences) is sown as for `MoEMLP`.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from netlab.moe import experts, losses
from netlab.moe import routing as R
from netlab.nn import aux
from netlab.registry import check_choice, check_range
from netlab.sharding import axes

F32 = jnp.float32


def _mix(w, index, weight, x, activation: str, dtype):
    """y[g] = sum_j weight[g, j] FFN_{index[g, j]}(x[g]) with per-sequence expert gathers.
    w: stacked expert weights (E, ...); index, weight (G, k); x (G, S, d)."""
    sel = {name: jnp.take(a, index, axis=0).astype(dtype) for name, a in w.items()}  # (G, k, ..)
    x = x.astype(dtype)
    h = jnp.einsum("gsd,gkdf->gskf", x, sel["wi"])
    gate = jnp.einsum("gsd,gkdf->gskf", x, sel["wg"]) if "wg" in sel else None
    out = jnp.einsum("gskf,gkfd->gskd", experts.activation(h, gate, activation), sel["wo"])
    return jnp.einsum("gskd,gk->gsd", out, weight.astype(dtype))


class TaskMoEMLP(nn.Module):
    """`TaskMoEMLP(num_experts, hidden, num_tasks, k)(x, task)`: x (G, S, d), task (G,) ints."""

    num_experts: int
    hidden: int
    num_tasks: int
    k: int = 1
    renormalize: bool = False  # divide the k weights by their sum
    activation: str = "gelu"
    glu: bool = False
    load_balance_weight: float = 0.01
    dtype: Any = jnp.float32
    config_key: str = "model.moe"

    def check(self):
        key = self.config_key
        check_range(f"{key}.num_experts", self.num_experts, 1, None, integer=True)
        check_range(f"{key}.num_tasks", self.num_tasks, 1, None, integer=True)
        check_range(f"{key}.hidden", self.hidden, 1, None, integer=True)
        R.check_top_k(self.k, self.num_experts, f"{key}.k")
        check_choice(f"{key}.activation", self.activation, experts.ACTIVATIONS)

    @nn.compact
    def __call__(self, x, task, train: bool = False):
        self.check()
        g, s, d = x.shape
        w = experts.stacked_weights(self, self.num_experts, d, self.hidden, self.glu)
        table = self.param(
            "task_gate",
            axes.param(nn.initializers.normal(0.02), None, None),
            (self.num_tasks, self.num_experts),
        )
        logits = jnp.take(table.astype(F32), task, axis=0)  # (G, E): one decision per sequence
        probs, index, weight = R.top_k_select(logits, self.k, renormalize=self.renormalize)
        if self.load_balance_weight:
            lb = losses.switch_load_balance(
                jnp.broadcast_to(probs[:, None], (g, s, self.num_experts)),
                jnp.broadcast_to(index[:, None], (g, s, self.k)),
            )
            aux.sow_loss(self, "load_balance", self.load_balance_weight * lb)
            aux.sow_metric(self, "load_balance", lb)
        self.sow("intermediates", "task_experts", index)
        y = _mix(w, index, weight, x, self.activation, self.dtype)
        return y.astype(x.dtype)


def task_choice(params, task: int, k: int, renormalize: bool = False):
    """(experts, weights) the trained gate gives task `task`: both (k,)."""
    logits = params["task_gate"][task][None].astype(F32)
    _, index, weight = R.top_k_select(logits, k, renormalize=renormalize)
    return index[0], weight[0]


def extract(params, task: int, k: int, renormalize: bool = False) -> dict:
    """The sub-network that serves task `task`: its k experts' weights (k, ...) and their fixed
    combine weights `weight` (k,). The other E - k experts and the gate are dropped."""
    index, weight = task_choice(params, task, k, renormalize)
    sub = {name: params[name][index] for name in ("wi", "wo", "wg") if name in params}
    return {**sub, "weight": weight}


def apply_extracted(sub: dict, x, activation: str = "gelu", dtype=jnp.float32):
    """The extracted sub-network on x (G, S, d): the full layer's output for its task."""
    w = {name: a for name, a in sub.items() if name != "weight"}
    g, k = x.shape[0], sub["weight"].shape[0]
    index = jnp.broadcast_to(jnp.arange(k), (g, k))
    weight = jnp.broadcast_to(sub["weight"], (g, k))
    y = _mix(w, index, weight, x, activation, dtype)
    return y.astype(x.dtype)
