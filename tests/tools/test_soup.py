"""`python -m netlab.tools.soup`: uniform soup / DiWA and greedy soup over workdirs.

Tiny checkpoints are written with netlab's own `Checkpointer` (the layout a training run leaves),
no training. Properties: the soup of identical runs is those runs bit for bit; the soup of two
runs is numpy's mean and reads back through `checkpoint.init_from`'s reader; runs of different
models or a workdir without a checkpoint are one line, exit 2, nothing written; greedy soup follows
Wortsman et al.'s Recipe 1 (order by own score, keep a run only if the score does not drop).
"""

import os

import jax
import numpy as np

from netlab.checkpoint import manager
from netlab.tools import soup
from netlab.train.state import TrainState

RNG = np.random.default_rng(0)


def _tree(scale=1.0, width=3):
    return {
        "dense": {
            "kernel": (scale * RNG.normal(size=(4, width))).astype(np.float32),
            "bias": (scale * RNG.normal(size=(width,))).astype(np.float32),
        },
        "emb": (scale * RNG.normal(size=(5, 2))).astype(np.float32),
    }


def _run(path, params, step=3):
    state = TrainState(step=np.int32(step), params=params, opt_state={}, model_state={}, ema={})
    ck = manager.Checkpointer(os.path.join(path, "ckpt"), every=1, max_to_keep=1, async_save=False)
    ck.save(step, state, {"task": "test"}, force=True)
    ck.close()
    return str(path)


def _read(out, like):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), like
    )
    params, step = manager.restore_params(out, abstract)  # what checkpoint.init_from does
    assert step == 0
    return jax.tree.map(np.asarray, params)


def test_uniform_soup_identity_and_mean_and_one_line_errors(tmp_path, capsys):
    a, b = _tree(), _tree(3.0)
    run_a = _run(tmp_path / "a", a)
    run_a2 = _run(tmp_path / "a2", jax.tree.map(np.copy, a))
    run_b = _run(tmp_path / "b", b)

    assert soup.main(["--workdirs", run_a, run_a2, run_a, "--out", str(tmp_path / "same")]) == 0
    same = _read(tmp_path / "same", a)
    for x, y in zip(jax.tree.leaves(same), jax.tree.leaves(a)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()  # bitwise

    assert soup.main(["--workdirs", run_a, run_b, "--out", str(tmp_path / "ab")]) == 0
    mean = _read(tmp_path / "ab", a)
    for x, y, z in zip(jax.tree.leaves(mean), jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, np.mean([y, z], axis=0), rtol=1e-6, atol=1e-7)
    assert "soup of 2 of 2 runs" in capsys.readouterr().out

    # bad input: one line, exit 2, nothing written
    other = _run(tmp_path / "other", _tree(width=5))
    cases = {
        "shape": [run_a, other],
        "missing": [run_a, str(tmp_path / "nothing")],
        "out exists": [run_a, run_b],
    }
    for name, workdirs in cases.items():
        out = tmp_path / "ab" if name == "out exists" else tmp_path / f"bad-{name}"
        assert soup.main(["--workdirs", *workdirs, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        if name != "out exists":
            assert not out.exists(), name
    assert soup.main(["--workdirs", run_a, "--out", str(tmp_path / "g"), "--greedy"]) == 2
    assert "--metric" in capsys.readouterr().err


def test_greedy_soup_is_recipe_1():
    # runs are scalars scored by -|theta - 1| (own scores -0.1, -4, -0.2, -0.3): start from 0.9,
    # add 1.2 (mean 1.05, -0.05: kept), 0.7 (mean 0.93, -0.067: dropped), 5.0 (dropped)
    runs = [{"w": np.float32(v)} for v in (0.9, 5.0, 1.2, 0.7)]
    for mode, sign in (("max", -1.0), ("min", 1.0)):
        out, kept, scores = soup.greedy(runs, lambda t: sign * abs(float(t["w"]) - 1.0), mode)
        assert kept == [0, 2], mode
        np.testing.assert_allclose(out["w"], 1.05, rtol=1e-6)
        np.testing.assert_allclose(scores["soup"], sign * 0.05, rtol=1e-5)
