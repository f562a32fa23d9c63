"""HESSO (Chen et al. 2023/2024): the lowest-saliency zero-invariant groups are marked redundant
progressively (one more per pruning period here) and reach exactly zero by the end of their
period; every other entry follows the base optimiser's trajectory exactly."""

import jax
import numpy as np
import optax
import pytest

from configs import common
from netlab.errors import UserError
from netlab.train import hesso, optim

RNG = np.random.default_rng(0)
WARMUP, PERIODS, LENGTH, EXTRA = 2, 2, 3, 2
STEPS = WARMUP + PERIODS * LENGTH + EXTRA


def test_redundant_groups_reach_zero_the_rest_follow_the_base_optimizer():
    params = {
        "dense": {"kernel": RNG.normal(size=(4, 6)), "bias": RNG.normal(size=6)},
        "out": {"kernel": RNG.normal(size=(6, 2)), "bias": RNG.normal(size=2)},
        "scale": RNG.normal(size=3),  # in no group
    }
    params = jax.tree.map(lambda a: a.astype(np.float32), params)  # numpy: no eager compiles
    params["dense"]["kernel"][:, [1, 4]] *= 0.01
    params["dense"]["bias"][[1, 4]] *= 0.01
    ids, n = hesso.output_unit_groups(params)
    assert n == 8 and ids["out"]["bias"].tolist() == [6, 7] and (ids["scale"] == -1).all()
    grads = jax.tree.map(
        lambda p: (RNG.normal(size=(STEPS, *p.shape)) * 0.1).astype(np.float32), params
    )
    base = optax.adam(1e-2)
    tx = hesso.hesso(base, 0.25, WARMUP, PERIODS, LENGTH)  # default: output_unit_groups

    @jax.jit
    def run(params):
        def step(carry, g):
            (p, s), (q, r) = carry
            u, s = tx.update(g, s, p)
            v, r = base.update(g, r, q)
            p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
            return ((p, s), (q, r)), (p["dense"]["kernel"], s.redundant)

        init = ((params, tx.init(params)), (params, base.init(params)))
        return jax.lax.scan(step, init, grads)

    ((p, state), (q, _)), (kernels, redundant) = jax.tree.map(np.asarray, run(params))
    assert state.redundant.nonzero()[0].tolist() == [1, 4]
    # progressive: one group after the first period's start, two after the second's
    assert redundant[WARMUP - 1].sum() == 0 and redundant[WARMUP].sum() == 1
    assert redundant[WARMUP + LENGTH].sum() == 2
    first = int(redundant[WARMUP].nonzero()[0][0])
    assert (kernels[WARMUP + LENGTH - 1][:, first] == 0).all()  # zero at the end of its period
    assert (kernels[WARMUP + LENGTH - 2][:, first] != 0).all()  # and not before (progressive)
    assert (p["dense"]["kernel"][:, [1, 4]] == 0).all() and (p["dense"]["bias"][[1, 4]] == 0).all()
    keep = np.array([0, 2, 3, 5])
    np.testing.assert_allclose(p["dense"]["kernel"][:, keep], q["dense"]["kernel"][:, keep])
    np.testing.assert_allclose(p["dense"]["bias"][keep], q["dense"]["bias"][keep])
    for a, b in zip(
        jax.tree.leaves((p["out"], p["scale"])), jax.tree.leaves((q["out"], q["scale"]))
    ):
        np.testing.assert_allclose(a, b)


def test_selectable_from_the_optimizer_config():
    opt = common.base_config().optimizer
    opt.hesso_sparsity, opt.hesso_periods, opt.hesso_period_length = 0.5, 2, 3
    tx = optim.build(opt, 10)
    state = tx.init({"kernel": np.zeros((3, 4), np.float32), "bias": np.zeros(4, np.float32)})
    assert jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, hesso.HessoState))
    with pytest.raises(UserError, match="hesso_period_length = 6 > 5 training steps"):
        optim.build(opt, 5)
    opt.hesso_sparsity = 1.5
    with pytest.raises(UserError, match="optimizer.hesso_sparsity=1.5"):
        optim.build(opt, 10)
