"""Dense-to-MoE upcycling (Komatsuzaki et al. 2023, "Sparse Upcycling: Training Mixture-of-Experts
from Dense Checkpoints", §3): every expert of an MoE layer starts as a copy of the dense MLP it
replaces (optionally with a little noise to break symmetry), the router starts fresh, and every
other parameter is copied unchanged.

Works on plain parameter trees (e.g. `ckpt["params"]` of a dense run and `init()` of the MoE model)
whose layers sit at the same paths, as in the MoE models here: a dense block's MLP
(`block3/mlp/{wi, wo}`, `netlab.moe.shared.DenseMLP`) and the MoE block's (`block3/mlp/{router, wi,
wo}`, stacked (E, ...) experts) share a path:
    moe_params = upcycle(dense_params, moe_init_params)
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np

EXPERT_LEAVES = ("wi", "wo", "wg")


def upcycle_mlp(wi, wo, num_experts: int, rng=None, noise: float = 0.0):
    """Dense (d, f), (f, d) -> stacked (E, d, f), (E, f, d) copies (+ relative Gaussian noise)."""
    wi_e, wo_e = upcycle_leaves({"wi": wi, "wo": wo}, num_experts, rng, noise).values()
    return wi_e, wo_e


def upcycle_leaves(dense: dict, num_experts: int, rng=None, noise: float = 0.0) -> dict:
    """{name: (…) dense leaf} -> {name: (E, …) copies}, each times (1 + noise * N(0, 1))."""
    out = {}
    keys = jax.random.split(rng, len(dense)) if noise > 0 else [None] * len(dense)
    for (name, w), key in zip(dense.items(), keys):
        w = jnp.asarray(w)
        stacked = jnp.broadcast_to(w, (num_experts,) + w.shape)
        if noise > 0:
            stacked = stacked * (1.0 + noise * jax.random.normal(key, stacked.shape, stacked.dtype))
        out[name] = stacked
    return out


def _is_experts(tree) -> bool:
    return isinstance(tree, dict) and "wi" in tree and np.ndim(tree["wi"]) == 3


def upcycle(dense_params, moe_params, *, rng=None, noise=0.0):
    """MoE params: every MoE MLP (a dict with stacked `wi` (E, d, f)) takes its experts from the
    dense MLP at the same path (`wi`, `wo`[, `wg`]); the router and anything without a dense
    counterpart keep the MoE init; all other leaves are copied from the dense tree (their shapes
    must match)."""

    def walk(dense, moe, path):
        out = {}
        for key, value in moe.items():
            where = f"{path}/{key}"
            src = dense.get(key) if isinstance(dense, dict) else None
            if _is_experts(value):
                if not isinstance(src, dict) or np.ndim(src.get("wi")) != 2:
                    raise ValueError(
                        f"no dense MLP (wi, wo) at {where} to upcycle the experts "
                        f"from; the dense and MoE models must share layer names"
                    )
                e = value["wi"].shape[0]
                if tuple(value["wi"].shape[1:]) != tuple(np.shape(src["wi"])):
                    raise ValueError(
                        f"{where}: expert shape {tuple(value['wi'].shape[1:])} differs "
                        f"from the dense MLP {tuple(np.shape(src['wi']))}; set the "
                        f"MoE hidden size to the dense one"
                    )
                sub = (
                    None
                    if rng is None
                    else jax.random.fold_in(rng, zlib.crc32(where.encode()) % (2**31))
                )
                names = [n for n in EXPERT_LEAVES if n in value and n in src]
                out[key] = dict(value, **upcycle_leaves({n: src[n] for n in names}, e, sub, noise))
            elif isinstance(value, dict):
                out[key] = walk(src if isinstance(src, dict) else {}, value, where)
            elif src is not None:
                if np.shape(src) != np.shape(value):
                    raise ValueError(
                        f"{where}: dense shape {np.shape(src)} != MoE shape {np.shape(value)}"
                    )
                out[key] = jnp.asarray(src)
            else:
                out[key] = value
        return out

    return walk(dense_params, moe_params, "")
