"""The same training steps on 1 device and on data / fsdp meshes of 8 fake devices agree."""

import jax
import numpy as np
import pytest

from netlab.errors import UserError
from netlab.train.trainer import Trainer
from tests.train.helpers import tiny_config

MESHES = {"data8": dict(data=8), "data2_fsdp4": dict(data=2, fsdp=4), "fsdp8": dict(fsdp=8, data=1)}


def _run(mesh, devices, steps=3, **extra):
    overrides = {f"mesh.{k}": str(v) for k, v in mesh.items()}
    overrides.update(extra)
    trainer = Trainer(tiny_config(**overrides), devices=devices)
    state = trainer.init_state()
    losses = []
    for step in range(steps):
        state, metrics = trainer.train_step(state, trainer.global_batch(step))
        losses.append(float(metrics["loss"]))
    return trainer, jax.device_get(state.params), losses


@pytest.fixture(scope="module")
def single_device():
    return _run(dict(data=1), jax.devices()[:1])


@pytest.mark.parametrize("name", MESHES)
def test_step_equals_single_device(single_device, name):
    _, ref_params, ref_losses = single_device
    trainer, params, losses = _run(MESHES[name], jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), params, ref_params
    )
    if trainer.mesh.shape["fsdp"] > 1:
        spec = trainer.state_shardings.params["hidden"]["kernel"].spec
        assert spec[0] == "fsdp", spec  # the annotated `embed` axis lands on fsdp
        mu_spec = trainer.state_shardings.opt_state[0].mu["hidden"]["kernel"].spec
        assert mu_spec == spec  # optimizer state is sharded like its parameter


def test_unannotated_large_leaf_falls_back_to_fsdp():
    trainer = Trainer(
        tiny_config(**{"mesh.fsdp": "8", "mesh.data": "1", "sharding.fsdp_min_bytes": "64"})
    )
    # conv kernels carry no mesh-mapped names (conv_in -> None, conv_out -> tensor of size 1):
    spec = trainer.state_shardings.params["block1"]["Conv_0"]["kernel"].spec
    assert "fsdp" in tuple(spec), spec


def test_gradient_accumulation_equals_one_big_batch():
    _, p1, _ = _run(dict(data=2), jax.devices()[:2], steps=2)
    _, p2, _ = _run(dict(data=2), jax.devices()[:2], steps=2, **{"train.grad_accum": "2"})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p2)


def test_batch_not_divisible_by_data_parallel_size():
    with pytest.raises(UserError, match="multiple of 8"):
        Trainer(tiny_config(**{"train.batch_size": "20", "mesh.data": "8"}))


def test_mesh_that_does_not_divide_devices():
    with pytest.raises(UserError, match="do not divide"):
        Trainer(tiny_config(**{"mesh.data": "-1", "mesh.fsdp": "3"}))
    with pytest.raises(UserError, match="needs 6 devices"):
        Trainer(tiny_config(**{"mesh.data": "2", "mesh.fsdp": "3"}))
