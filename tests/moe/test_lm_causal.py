"""The MoE LM is causal under capacity limits: for every router and dispatch backend it accepts,
changing the tokens after position t leaves every logit at positions <= t unchanged, on one device
and with the experts split over an expert mesh axis (data=2 x expert=4 of 8 fake CPU devices).

The capacity factor is small and the router sharp, so assignments drop: with the encoders' k-major
slot order (or Batch Priority Routing) a later token's choice evicts an earlier token's and the
test fails; with the decoders' token-order slots (`slot_positions(causal=True)`) it passes."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from netlab.errors import UserError
from netlab.moe.lm import MoELM
from netlab.moe.registries import BACKENDS, ROUTERS
from netlab.nn import aux
from netlab.sharding import mesh as meshlib

B, L, V = 8, 16, 16  # 8 sequences (one per device under the mesh), 16 tokens, 16-symbol vocab
CUTS = np.arange(B) * 2  # row r changes its tokens after position CUTS[r]
CAUSAL_ROUTERS = sorted(n for n in ROUTERS.names() if ROUTERS.get(n).causal)
SINGLE = ("dense", "capacity", "dropless")  # ep / ep_ragged without an expert axis = capacity
MESHED = ("ep", "ep_ragged")  # explicit expert parallelism (ep_ragged runs as ep on XLA:CPU)
RULES = meshlib.rules(common.base_config().sharding)
# The slot order is the routers' common path: every backend with top-k, every other causal router
# with the binding capacity backend (one compile per case, so not the full product).
CASES = [("topk", b, False) for b in SINGLE] + [("topk", b, True) for b in MESHED]
CASES += [(r, "capacity", False) for r in CAUSAL_ROUTERS if r != "topk"]


def model(router, backend, bpr=False):
    moe = dict(
        num_experts=4,
        hidden=8,
        k=2,
        router=router,
        backend=backend,
        capacity_factor=0.5,
        capacity_multiple=1,
        bpr=bpr,
        hyper_dim=4,
    )
    return MoELM(vocab=V, max_len=L, width=8, depth=1, num_heads=2, mlp_hidden=8, moe=moe)


def tokens():
    rng = np.random.default_rng(0)
    base = rng.integers(0, V, (B, L))
    changed = base.copy()
    for r, t in enumerate(CUTS):
        changed[r, t + 1 :] = (base[r, t + 1 :] + 1 + rng.integers(0, V - 1, L - t - 1)) % V
    return jnp.asarray(base, jnp.int32), jnp.asarray(changed, jnp.int32)


def random_variables(m, base):
    """N(0, 0.5^2) for every variable (the initialisers' compile costs more than the test), the
    router 10x sharper so that the experts' loads are uneven and assignments drop."""
    shapes = jax.eval_shape(m.init, jax.random.key(0), base)
    rng = np.random.default_rng(1)

    def draw(path, leaf):
        scale = 5.0 if "router" in jax.tree_util.keystr(path) else 0.5
        return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(shapes))


def run(m, meshed):
    base, changed = tokens()
    variables = random_variables(m, base)
    mutable = list(aux.COLLECTIONS) + ["router_bias"]

    @jax.jit
    def fwd(t):  # train mode: training capacity, router rng, loss-free bias update
        out, cols = m.apply(variables, t, True, rngs={"router": jax.random.key(1)}, mutable=mutable)
        return out, aux.mean_metrics(cols)["dropped_fraction"]

    with contextlib.ExitStack() as stack:
        if meshed:
            cfg = ml_collections.ConfigDict(dict(data=2, fsdp=1, expert=4, tensor=1))
            stack.enter_context(jax.set_mesh(meshlib.make_mesh(cfg)))
            stack.enter_context(nn.logical_axis_rules(RULES))
        return fwd(base), fwd(changed)


@pytest.mark.parametrize("router,backend,meshed", CASES)
def test_changing_later_tokens_leaves_earlier_logits_unchanged(router, backend, meshed):
    assert {"topk", "loss_free", "sparsemixer", "hyper"} <= set(CAUSAL_ROUTERS)
    (y0, dropped), (y1, _) = run(model(router, backend), meshed)
    y0, y1 = np.asarray(y0), np.asarray(y1)
    if backend != "dropless" and not (meshed and backend == "ep_ragged"):
        assert float(dropped) > 0.05  # capacity binds: the slot order matters
    for r, t in enumerate(CUTS):
        np.testing.assert_allclose(y1[r, : t + 1], y0[r, : t + 1], atol=1e-6, rtol=0)
        assert np.abs(y1[r, t + 1 :] - y0[r, t + 1 :]).max() > 1e-3  # the change is visible


def test_every_backend_is_covered():
    assert set(SINGLE) | set(MESHED) == set(BACKENDS.names())


def test_bpr_in_the_lm_is_a_one_line_error():
    with pytest.raises(UserError, match=r"model\.moe\.bpr=True") as err:
        jax.eval_shape(model("topk", "capacity", bpr=True).init, jax.random.key(0), tokens()[0])
    assert "\n" not in str(err.value) and "set model.moe.bpr=False" in str(err.value)
