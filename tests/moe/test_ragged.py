"""The ragged_all_to_all exchange plan against a numpy simulation of the collective (CPU), and the
one-line refusal of backend='ep_ragged' on XLA:CPU. The collective itself runs only on accelerators."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.moe.layer import MoEMLP
from netlab.moe.ragged import exchange_plan, received_expert_ids


def simulate(operands, outputs, plans):
    """ragged_all_to_all semantics: sender i writes operand_i[in_off[j]:+size[j]] at out_off[j] on j."""
    outs = [o.copy() for o in outputs]
    for i, plan in enumerate(plans):
        for j in range(len(plans)):
            n = int(plan["send_sizes"][j])
            src = int(plan["input_offsets"][j])
            dst = int(plan["output_offsets"][j])
            outs[j][dst:dst + n] = operands[i][src:src + n]
            assert int(plans[j]["recv_sizes"][i]) == n
    return outs


@pytest.mark.parametrize("seed", [0, 1])
def test_exchange_plan_routes_every_row_to_its_expert_and_back(seed):
    ep, el = 3, 2
    e = ep * el
    rng = np.random.default_rng(seed)
    all_sizes = rng.integers(0, 5, (ep, e))
    all_sizes[0, :el] = 0                                   # an empty segment
    rows = [np.concatenate([np.full(all_sizes[i, x], x) for x in range(e)]) for i in range(ep)]
    # a row's identity: (source, expert, position in source)
    tags = [np.stack([np.full(len(r), i), r, np.arange(len(r))], 1) for i, r in enumerate(rows)]
    cap = sum(len(r) for r in rows)
    plans = [exchange_plan(jnp.asarray(all_sizes), me, el) for me in range(ep)]
    plans = [jax.tree.map(np.asarray, p) for p in plans]
    recv = simulate(tags, [np.full((cap, 3), -1) for _ in range(ep)], [p[0] for p in plans])
    for j in range(ep):
        got = recv[j][recv[j][:, 0] >= 0]
        n = int(plans[j][0]["recv_sizes"].sum())
        assert len(got) == n and (recv[j][n:, 0] == -1).all()           # contiguous, then padding
        expect = np.concatenate([t[(t[:, 1] // el) == j] for t in tags])  # sources in order, sorted by expert
        np.testing.assert_array_equal(got, expect)
        labels = np.asarray(received_expert_ids(jnp.asarray(all_sizes), j, el, cap))
        np.testing.assert_array_equal(labels[:n], got[:, 1] - j * el)
        assert (labels[n:] == el).all()
    back = simulate(recv, [np.full((len(r), 3), -1) for r in rows], [p[1] for p in plans])
    for i in range(ep):
        np.testing.assert_array_equal(back[i], tags[i])                  # every row returns to its place


def test_ep_ragged_on_cpu_is_a_one_line_error():
    model = MoEMLP(num_experts=4, hidden=8, k=2, backend="ep_ragged")
    with pytest.raises(ValueError, match="backend='ep'") as err:
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 4, 8)))
    assert "\n" not in str(err.value)
