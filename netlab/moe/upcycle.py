"""Dense-to-MoE upcycling (Komatsuzaki et al. 2023, "Sparse Upcycling: Training Mixture-of-Experts
from Dense Checkpoints", §3): every expert of an MoE layer starts as a copy of the dense MLP it
replaces (optionally with a little noise to break symmetry), the router starts fresh, and every
other parameter is copied unchanged.

Works on plain parameter trees (e.g. `ckpt["params"]` of a dense run and `init()` of the MoE model):
    moe_params = upcycle(dense_params, moe_init_params)
"""
import zlib

import jax
import jax.numpy as jnp
import numpy as np


def upcycle_mlp(wi, wo, num_experts: int, rng=None, noise: float = 0.0):
    """Dense (d, f), (f, d) -> stacked (E, d, f), (E, f, d) copies (+ relative Gaussian noise)."""
    wi_e = jnp.broadcast_to(wi, (num_experts,) + wi.shape)
    wo_e = jnp.broadcast_to(wo, (num_experts,) + wo.shape)
    if noise > 0:
        k1, k2 = jax.random.split(rng)
        wi_e = wi_e * (1.0 + noise * jax.random.normal(k1, wi_e.shape, wi_e.dtype))
        wo_e = wo_e * (1.0 + noise * jax.random.normal(k2, wo_e.shape, wo_e.dtype))
    return wi_e, wo_e


def upcycle(dense_params, moe_params, *, dense_prefix="mlp_", moe_prefix="moe_", rng=None, noise=0.0):
    """MoE params: `moe_<i>` layers take their experts from the dense `mlp_<i>` (wi, wo); the router
    and anything without a dense counterpart keep the MoE init; all other leaves are copied from the
    dense tree (their shapes must match)."""
    def walk(dense, moe, path):
        out = {}
        for key, value in moe.items():
            if key.startswith(moe_prefix) and isinstance(value, dict):
                src = dense.get(dense_prefix + key[len(moe_prefix):])
                if src is None:
                    raise ValueError(f"no dense layer {dense_prefix + key[len(moe_prefix):]!r} at {path or '/'} "
                                     f"to upcycle {key!r}; pass dense_prefix/moe_prefix matching your layer names")
                e = value["wi"].shape[0]
                if tuple(value["wi"].shape[1:]) != tuple(np.shape(src["wi"])):
                    raise ValueError(f"{path}/{key}: expert shape {tuple(value['wi'].shape[1:])} differs from the "
                                     f"dense MLP {tuple(np.shape(src['wi']))}; set the MoE hidden size to the dense one")
                sub = rng if rng is None else jax.random.fold_in(rng, zlib.crc32(f"{path}/{key}".encode()) % (2**31))
                wi, wo = upcycle_mlp(jnp.asarray(src["wi"]), jnp.asarray(src["wo"]), e, sub, noise)
                out[key] = dict(value, wi=wi, wo=wo)
            elif isinstance(value, dict):
                out[key] = walk(dense.get(key, {}), value, f"{path}/{key}")
            elif key in dense:
                if np.shape(dense[key]) != np.shape(value):
                    raise ValueError(f"{path}/{key}: dense shape {np.shape(dense[key])} != MoE shape {np.shape(value)}")
                out[key] = jnp.asarray(dense[key])
            else:
                out[key] = value
        return out

    return walk(dense_params, moe_params, "")
