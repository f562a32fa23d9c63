"""TREAD: token routes that carry a random subset of tokens past a span of DiT blocks in training.

Krause et al. 2025, "TREAD: Token Routing for Efficient Architecture-agnostic Diffusion Training"
(the method section): a route (start, end, rate) takes, for every example, a random fraction
`rate` of the tokens out of the sequence before block `start`; blocks start..end (inclusive)
process only the N - round(rate * N) kept tokens, and after block `end` the routed tokens re-enter
at their positions unchanged (the blocks are the identity on them). Routes are applied in order
within one forward pass; the loss is the plain diffusion loss over all tokens, as in the authors'
released code (their first arXiv version also names an auxiliary loss over routes, which that code
does not have and which is not implemented here). Routing happens only with `train=True`; sampling
runs the full DiT.

`TREAD` is `netlab.diffusion.dit.DiT` with the same parameters (same names, same initialisation):
it runs DiT's own forward and reroutes tokens around the `block{i}` calls with a Flax method
interceptor, so DiT's code is reused unchanged. A rematerialised block is traced inside its own
`jax.checkpoint`, where a route's saved sequence cannot cross to the route's end, so routes with
`train.remat` are refused (a per-block hook in DiT's block loop would lift this). Deliberate
differences from the authors' code: the kept token indices are sorted (raster order), so rate 0
reproduces DiT bit for bit (the blocks are permutation-equivariant, so only the float summation
order could differ otherwise); the block after a route is not forced to fp32. The per-example
subsets come from the `router` PRNG stream that the diffusion task passes in training; the kept
indices are sown to `intermediates/tread_keep{start}`.
"""

import dataclasses
import re
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from netlab.diffusion import dit
from netlab.diffusion.dit import DiT
from netlab.errors import UserError
from netlab.nn.blocks import AdaLNZeroBlock


def _is_block(context) -> bool:
    """A call of one of DiT's blocks `block{i}` (under remat: the inner, rematerialised call)."""
    return (
        isinstance(context.module, AdaLNZeroBlock)
        and context.method_name == "__call__"
        and re.fullmatch(r"block\d+", context.module.name or "") is not None
    )


Route = Tuple[int, int, float]


def check_routes(routes: Sequence[Route], depth: int) -> tuple:
    """Validated ((start, end, rate), ...): 0 <= start <= end < depth, 0 <= rate < 1, routes in
    order and not overlapping. Raises a one-line `UserError` naming `model.routes`."""
    out, last = [], -1
    for r in routes:
        if len(r) != 3:
            raise UserError(f"model.routes={tuple(routes)!r}: each route is (start, end, rate)")
        start, end, rate = int(r[0]), int(r[1]), float(r[2])
        if not (last < start <= end < depth) or not 0.0 <= rate < 1.0:
            raise UserError(
                f"model.routes={tuple(routes)!r}: need ordered, non-overlapping routes with "
                f"0 <= start <= end < depth={depth} and 0 <= rate < 1, "
                f"e.g. ((1, {depth - 2}, 0.5),)"
            )
        out.append((start, end, rate))
        last = end
    return tuple(out)


def num_kept(n: int, rate: float) -> int:
    """Tokens a route keeps out of n: n - round(rate * n)."""
    return n - int(round(rate * n))


def keep_ids(key, batch: int, n: int, rate: float):
    """(batch, num_kept) sorted token indices, an independent uniform subset per example."""
    scores = jax.random.uniform(key, (batch, n))
    return jnp.sort(jnp.argsort(scores, axis=1)[:, : num_kept(n, rate)], axis=1)


def gather(x, ids):
    """x: (B, N, D), ids: (B, K) -> (B, K, D)."""
    return jnp.take_along_axis(x, ids[..., None], axis=1)


def scatter(full, part, ids):
    """`full` with rows ids replaced by `part` (the routed rows keep their value in `full`)."""
    return jax.vmap(lambda f, p, i: f.at[i].set(p))(full, part, ids)


class TREAD(DiT):
    routes: Tuple[Route, ...] = ()

    def __call__(self, x, noise_cond, labels=None, train: bool = False):
        routes = check_routes(self.routes, self.depth)
        active = routes if train else ()  # rate-0 routes are routed too (and change nothing)
        if not active:
            return super().__call__(x, noise_cond, labels, train)
        if self.remat_policy is not None:
            raise UserError(
                "train.remat with model.routes: TREAD reroutes tokens between DiT's blocks, "
                "which a rematerialised block hides; set train.remat=none"
            )
        n = (self.image_size // self.patch) ** 2
        if any(num_kept(n, r[2]) < 1 for r in active):
            raise UserError(
                f"model.routes={routes!r}: a rate this close to 1 keeps no token of {n}; "
                f"use a rate <= {1 - 1 / n:.3f}"
            )
        keys = jax.random.split(self.make_rng("router"), len(active))
        ids = {r[0]: keep_ids(k, x.shape[0], n, r[2]) for r, k in zip(active, keys)}
        ends = {r[1]: r[0] for r in active}
        for start, i in ids.items():
            self.sow("intermediates", f"tread_keep{start}", i)
        saved = {}

        def route(next_fun, args, kwargs, context):
            name = context.module.name or ""
            if not _is_block(context):
                return next_fun(*args, **kwargs)
            i = int(name[len("block") :])
            h, *rest = args
            if i in ids:  # route start: keep the full sequence, process the kept tokens
                saved[i] = h
                h = gather(h, ids[i])
            out = next_fun(h, *rest, **kwargs)
            if i in ends:  # route end: the routed tokens re-enter unchanged
                s = ends[i]
                out = scatter(saved.pop(s), out, ids[s])
            return out

        with nn.intercept_methods(route):
            return super().__call__(x, noise_cond, labels, train)


def build(m, *, data_shape, num_classes, policy, sparse_mlp=None) -> TREAD:
    """DiT from `config.model` (as `dit.build`) with `model.routes` ((start, end, rate), ...).
    Not a registered backbone yet; a config names it by path:
    `--config.model.backbone=netlab.diffusion.tread:build`."""
    base = dit.build(
        m, data_shape=data_shape, num_classes=num_classes, policy=policy, sparse_mlp=sparse_mlp
    )
    routes = check_routes(tuple(tuple(r) for r in m.get("routes", ())), base.depth)
    if routes and base.remat_policy is not None:
        raise UserError(
            "train.remat with model.routes: TREAD reroutes tokens between DiT's blocks, "
            "which a rematerialised block hides; set train.remat=none"
        )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(DiT) if f.init}
    fields.pop("parent", None), fields.pop("name", None)
    return TREAD(**fields, routes=routes)
