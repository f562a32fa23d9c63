"""Every MoE registry entry, built from a config, runs one Trainer training step: every router,
every dispatch backend (`ep_ragged` through its CPU fallback) and every model. A new entry without
a case here fails `test_every_entry_has_a_case`."""

import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.moe.registries import BACKENDS, MODELS, ROUTERS
from netlab.train.trainer import Trainer
from tests.conftest import ROOT

VIT = str(ROOT / "configs" / "moe" / "vit_moe_digits.py") + ":cpu"
LM = str(ROOT / "configs" / "moe" / "lm_tiny.py") + ":cpu"
CONV = str(ROOT / "configs" / "moe" / "conv_moe_digits.py")
TINY_VIT = {
    "model.width": 16,
    "model.depth": 1,
    "model.moe_every": 1,
    "model.num_heads": 2,
    "model.mlp_hidden": 16,
    "model.moe.hidden": 8,
    "model.moe.num_experts": 4,
    "train.batch_size": 8,
}
FAST = {"optimizer.warmup_steps": 0, "optimizer.name": "sgd", "optimizer.lr": 0.1}
ONE_DEVICE = {"mesh.data": 1, "mesh.expert": 1}
EP_MESH = {"mesh.data": 2, "mesh.expert": 4}

# (id, config, overrides, devices, what it covers: router, backend, model)
CASES = [
    (
        "topk-dropless",
        VIT,
        {"model.moe.router": "topk", "model.moe.backend": "dropless"},
        1,
        ("topk", "dropless", "vit"),
    ),
    (
        "soft-capacity",
        VIT,
        {"model.moe.router": "soft", "model.moe.backend": "capacity"},
        1,
        ("soft", "capacity", None),
    ),
    (
        "smear-dense",
        VIT,
        {"model.moe.router": "smear", "model.moe.backend": "dense"},
        1,
        ("smear", "dense", None),
    ),
    (
        "sparsemixer-ep",
        VIT,
        {"model.moe.router": "sparsemixer", "model.moe.backend": "ep", **EP_MESH},
        8,
        ("sparsemixer", "ep", None),
    ),
    (
        "hyper-ep_ragged",
        VIT,
        {"model.moe.router": "hyper", "model.moe.backend": "ep_ragged", **EP_MESH},
        8,
        ("hyper", "ep_ragged", None),
    ),
    (
        "lm-loss_free",
        LM,
        {
            "model.width": 16,
            "model.depth": 1,
            "model.num_heads": 2,
            "model.mlp_hidden": 16,
            "model.moe.hidden": 8,
            "model.moe.num_experts": 4,
            "data.seq_len": 8,
            "train.batch_size": 8,
            "model.moe.backend": "capacity",
            "model.moe.router": "loss_free",
        },
        1,
        ("loss_free", None, "lm"),
    ),
    (
        "expert_choice-capacity",
        VIT,
        {"model.moe.router": "expert_choice", "model.moe.backend": "capacity"},
        1,
        ("expert_choice", "capacity", None),
    ),
    (
        "pmoe-pmoe",
        CONV + ":model=pmoe",
        {"model.features": 8, "model.hidden": 8, "train.batch_size": 8},
        1,
        ("pmoe", "capacity", "pmoe"),
    ),
    (
        "customize",  # GE/LE/GN: the frozen ViT-MoE global expert; decay must not move it
        VIT.replace(":cpu", ":customize"),
        {
            **{f"model.global_fields.{k[6:]}": v for k, v in TINY_VIT.items() if k[:6] == "model."},
            "train.batch_size": 8,
            "optimizer.weight_decay": 0.5,
        },
        1,
        (None, None, "customize"),
    ),
    (
        "condconv",
        CONV + ":model=condconv",
        {"model.channels": (4, 8), "train.batch_size": 8},
        1,
        (None, None, "condconv"),
    ),
]


def test_every_entry_has_a_case():
    covered = [set(c[4][i] for c in CASES) - {None} for i in range(3)]
    assert covered[0] == set(ROUTERS.names())
    assert covered[1] == set(BACKENDS.names())
    assert covered[2] == set(MODELS.names())


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_one_training_step(case):
    _, config, over, devices, (router, _, model) = case
    overrides = dict(TINY_VIT if config == VIT else {}, **over, **FAST)
    if devices == 1:
        overrides = dict(ONE_DEVICE, **overrides)
    cfg = configlib.load(config, overrides=overrides)
    trainer = Trainer(cfg, devices=jax.devices()[:devices])
    state = trainer.init_state()
    params0 = jax.device_get(state.params)
    frozen0 = jax.device_get(state.model_state.get("frozen", {}))
    new, metrics = trainer.train_step(state, trainer.global_batch(0))
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0, metrics
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(new.params))[0]
    before = dict(jax.tree_util.tree_flatten_with_path(params0)[0])
    # every parameter of the blocks (routers and experts included) trains in the first step
    frozen = [
        jax.tree_util.keystr(p)
        for p, v in flat
        if jax.tree_util.keystr(p).startswith(("['block", "['pmoe", "['local", "['gate"))
        and np.array_equal(v, before[p])
    ]
    assert not frozen, frozen
    kept = jax.tree.leaves(jax.device_get(new.model_state.get("frozen", {})))
    for a, b in zip(kept, jax.tree.leaves(frozen0), strict=True):
        np.testing.assert_array_equal(a, b)  # frozen parameters (customize.py) never move
    if model not in ("condconv", "pmoe", "customize"):  # pMoE: no aux losses (the paper)
        assert 0.0 < metrics["aux_loss"] and metrics["load_balance"] >= 0.99
    if router == "loss_free":
        bias = jax.tree.leaves(jax.device_get(new.model_state["router_bias"]))
        assert bias and all(np.abs(b).max() > 0 for b in bias)
