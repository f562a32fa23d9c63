"""Checkpoints restore onto other meshes and device counts; params-only init; wrong-model guard."""

import jax
import numpy as np
import pytest

from netlab.checkpoint import compat, resume
from netlab.checkpoint import manager as ckptlib
from netlab.errors import UserError
from netlab.train.trainer import Trainer
from tests.train.helpers import tiny_config


def _trainer(devices=None, **mesh):
    return Trainer(tiny_config(**{f"mesh.{k}": str(v) for k, v in mesh.items()}), devices=devices)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two steps on an 8-device fsdp mesh, saved."""
    directory = tmp_path_factory.mktemp("ck") / "ckpt"
    trainer = _trainer(fsdp=8, data=1)
    state = trainer.init_state()
    for step in range(2):
        state, _ = trainer.train_step(state, trainer.global_batch(step))
    ckpt = ckptlib.Checkpointer(directory, every=1, max_to_keep=2)
    ckpt.save(2, state, {"task": trainer.config.task, "params": trainer.param_summary()})
    ckpt.close()
    return directory, jax.device_get(state), trainer


@pytest.mark.parametrize("mesh,ndev", [(dict(data=2, fsdp=4), 8), (dict(data=1), 1)])
def test_restore_on_another_mesh(saved, mesh, ndev):
    directory, ref, _ = saved
    trainer = _trainer(jax.devices()[:ndev], **mesh)
    ckpt = ckptlib.Checkpointer(directory, every=1, max_to_keep=2)
    state = ckpt.restore(ckpt.latest_step(), trainer.abstract_state)
    ckpt.close()
    leaf = state.params["hidden"]["kernel"]
    assert leaf.sharding == trainer.state_shardings.params["hidden"]["kernel"]
    assert len(leaf.sharding.device_set) == ndev
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), ref)
    # and training continues from it
    trainer.train_step(state, trainer.global_batch(2))


def test_check_compatible(saved):
    directory, _, trainer = saved
    assert resume.check_compatible(directory, trainer.config.task, trainer.abstract_state) == 2
    other = Trainer(tiny_config(**{"model.hidden": "24"}), devices=jax.devices()[:1])
    with pytest.raises(UserError, match="different model") as e:
        resume.check_compatible(directory, other.config.task, other.abstract_state)
    assert "params/head/kernel saved [16, 10] float32 vs config [24, 10] float32" in str(e.value)
    with pytest.raises(UserError, match="different model .task"):
        resume.check_compatible(directory, "diffusion.digits", trainer.abstract_state)


def test_state_summary_matches_the_saved_metadata(saved):
    """The whole train state (not only the parameters) is compared, key by key."""
    directory, _, trainer = saved
    ours = compat.state_summary(trainer.abstract_state)
    with ckptlib._reader(str(directory), metadata=True) as mngr:
        assert resume._saved_summary(mngr, 2) == ours
    assert {k.split("/")[0] for k in ours} == {"params", "opt_state", "step"}
    assert compat.describe_difference(ours, ours) is None
    ema = dict(
        ours,
        **{"ema/ema/" + k[len("params/") :]: v for k, v in ours.items() if k.startswith("params/")},
    )
    assert compat.describe_difference(ours, ema).startswith("other EMA slots")


def test_params_only_init(saved):
    directory, ref, _ = saved
    trainer = _trainer(jax.devices()[:1], data=1)
    params, step = ckptlib.restore_params(directory.parent, trainer.abstract_state.params)
    assert step == 2
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), ref.params)
    wrong = Trainer(tiny_config(**{"model.hidden": "24"}), devices=jax.devices()[:1])
    with pytest.raises(UserError, match="do not fit"):
        ckptlib.restore_params(directory.parent, wrong.abstract_state.params)
