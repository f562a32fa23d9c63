"""TREAD (netlab/diffusion/tread.py) against the DiT it routes. One jitted call returns every
quantity the properties need: DiT's output, TREAD's with rate-0 routes and in eval mode, and one
routed training forward with each block's input and output and each attention's input (the tokens
a block processes) recorded by a Flax method interceptor. Weights are random, so no block is the
identity (adaLN-Zero would make every block the identity at init)."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from netlab.diffusion.dit import DiT
from netlab.diffusion.task import build_backbone
from netlab.diffusion.tread import TREAD, check_routes, num_kept
from netlab.errors import UserError
from netlab.nn.precision import Policy

KW = dict(image_size=8, channels=1, patch=2, width=32, depth=4, num_heads=2, num_classes=3)
N = 16  # (8 / 2) ** 2 tokens
ROUTES = ((1, 2, 0.5), (3, 3, 0.25))  # a two-block route, then a one-block route
X = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
T, Y = np.array([3.0, 60.0], np.float32), np.array([0, 3])


def _init_shapes(model):
    return jax.eval_shape(lambda k: model.init(k, X, T, Y), jax.random.key(0))


@jax.jit
def _forwards(p, key):
    rngs = {"router": key}
    out = {"dit": DiT(**KW).apply(p, X, T, Y, True)}
    zero = TREAD(**KW, routes=((1, 2, 0.0),))
    out["rate0"], cols = zero.apply(p, X, T, Y, True, rngs=rngs, mutable=["intermediates"])
    out["keep0"] = cols["intermediates"]["tread_keep1"][0]  # the route did run
    out["eval"] = TREAD(**KW, routes=ROUTES).apply(p, X, T, Y)
    blocks, attn = {}, {}

    def record(next_fun, args, kwargs, context):
        res = next_fun(*args, **kwargs)
        name = context.module.name or ""
        if name.startswith("block"):
            blocks[name] = (args[0], res)
        if name == "attn":
            attn[context.module.parent.name] = args[0]
        return res

    with nn.intercept_methods(record):
        out["routed"], cols = TREAD(**KW, routes=ROUTES).apply(
            p, X, T, Y, True, rngs=rngs, mutable=["intermediates"]
        )
    out["blocks"], out["attn"], out["keep"] = blocks, attn, cols["intermediates"]
    return out


@pytest.fixture(scope="module")
def res():
    shapes = _init_shapes(DiT(**KW))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    return shapes, jax.device_get(_forwards(params, jax.random.key(2)))


def test_same_params_and_dit_outputs_without_routing(res):
    shapes, out = res
    assert _init_shapes(TREAD(**KW, routes=ROUTES)) == shapes  # same names and shapes
    np.testing.assert_array_equal(out["keep0"], np.tile(np.arange(N), (2, 1)))
    for case in ("rate0", "eval"):  # bit for bit: rate 0 gathers and scatters back in order
        np.testing.assert_array_equal(out[case], out["dit"], err_msg=case)
    assert not np.allclose(out["routed"], out["dit"], atol=1e-3)  # routing does change it


def test_routed_tokens_skip_unchanged_and_routed_blocks_process_1_minus_r_of_them(res):
    blocks, attn, keep = res[1]["blocks"], res[1]["attn"], res[1]["keep"]
    routed = set()
    for start, end, rate in ROUTES:
        k = num_kept(N, rate)
        assert k == N * (1 - rate)  # the rates divide N exactly here
        ids = keep[f"tread_keep{start}"][0]
        assert ids.shape == (2, k) and all(len(set(row)) == k for row in ids)
        h_in, h_out = blocks[f"block{start}"][0], blocks[f"block{end}"][1]
        assert h_in.shape == h_out.shape == (2, N, 32)
        for i in range(start, end + 1):  # each routed block processes exactly (1 - r) N tokens
            assert attn[f"block{i}"].shape == (2, k, 32), i
            routed.add(i)
        for b in range(2):
            dropped = np.setdiff1d(np.arange(N), ids[b])
            np.testing.assert_array_equal(h_out[b, dropped], h_in[b, dropped])  # identity
            assert not np.allclose(h_out[b, ids[b]], h_in[b, ids[b]])  # the kept were processed
    for i in set(range(KW["depth"])) - routed:  # blocks outside routes see every token
        assert attn[f"block{i}"].shape == (2, N, 32)


def test_bad_routes_are_refused():
    assert check_routes([(0, 1, 0.5), (2, 3, 0.5)], 4) == ((0, 1, 0.5), (2, 3, 0.5))
    for bad in ([(1, 0, 0.5)], [(0, 4, 0.5)], [(0, 1, 1.0)], [(0, 2, 0.5), (2, 3, 0.5)]):
        with pytest.raises(UserError, match="model.routes"):
            check_routes(bad, 4)
    with pytest.raises(UserError, match="train.remat"):
        TREAD(**KW, routes=ROUTES, remat_policy=jax.checkpoint_policies.nothing_saveable).apply(
            {}, X, T, Y, True
        )


def test_a_config_builds_it_by_path_and_bad_routes_fail_at_build_time():
    m = {"backbone": "netlab.diffusion.tread:build", "depth": 4, "width": 32, "num_heads": 2}
    m.update(patch=2, routes=[[1, 2, 0.5]])
    build = functools.partial(build_backbone, data_shape=(8, 8, 1), num_classes=3)
    model = build(m, policy=Policy())
    assert isinstance(model, TREAD) and model.routes == ((1, 2, 0.5),) and model.num_classes == 3
    with pytest.raises(UserError, match="model.routes"):
        build(dict(m, routes=[[2, 9, 0.5]]), policy=Policy())
    with pytest.raises(UserError, match="train.remat"):
        build(m, policy=Policy(remat="full"))
