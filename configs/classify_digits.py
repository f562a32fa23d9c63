"""Classify scikit-learn's digits images with a small ConvNet: the engine's end-to-end check.

    python -m netlab.main --config configs/classify_digits.py:cpu --workdir runs/digits
    # cpu: ~1 minute on 2 cores, test accuracy ~0.98. Rerun the same command to resume.
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m netlab.main \
        --config configs/classify_digits.py:cpu --workdir runs/digits8 --config.mesh.fsdp=4

`islands`: the cpu run as 2 DiLoCo islands (netlab/train/islands.py, docs/scale_out.md) that
train alone and synchronise every 10 steps with the paper's outer Nesterov SGD (lr 0.7, m 0.9):

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m netlab.main \
        --config configs/classify_digits.py:islands --workdir runs/digits_islands
    # QSR periods instead of a fixed H: --config.islands.qsr_alpha=0.006
    # one island per TPU slice: the pod preset with --config.mesh.island=<slices>
    #   --config.islands.sync_every=<H> (launch/xpk_islands.md)

Trunks (`model.trunk`, netlab/classify/trunks.py; `model.width`, `model.depth`, `model.levels`,
`model.reversible` configure the non-default ones):

    python -m netlab.main --config configs/classify_digits.py:cpu --workdir runs/digits_revnet \
        --config.model.trunk=revnet     # RevNet couplings, activations recomputed (Gomez 2017)
    --config.model.trunk=revcol         # reversible columns (Cai 2023), --config.model.levels=2
    --config.model.trunk=irevnet        # i-RevNet, injective, explicit inverse (Jacobsen 2018)
    --config.model.trunk=hypernet       # static hypernetwork kernels (Ha 2017)
    --config.model.trunk=mixture        # template-mixed hidden layer (MixtureGrowth, Pham 2024)
    --config.model.trunk=hopfield       # HopfieldPooling readout (Ramsauer 2021)
    --config.model.reversible=false     # revnet/revcol with ordinary backpropagation
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod", "islands")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "classify.digits"
    c.model = ml_collections.ConfigDict(
        dict(
            trunk="convnet",  # netlab/classify/trunks.py
            channels=(32, 64),  # convnet
            hidden=128,  # convnet, mixture
            width=16,  # revnet, revcol, irevnet, hypernet, hopfield
            depth=4,  # couplings, columns, blocks or hypernetwork layers
            levels=2,  # revcol
            reversible=True,  # revnet, revcol: False = ordinary backpropagation
        )
    )
    c.data = ml_collections.ConfigDict(dict(test_fraction=0.2))
    c.train.steps = 600
    c.train.batch_size = 128
    c.train.log_every = 50
    c.train.eval_every = 200
    c.checkpoint.every = 200
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 1e-4
    if preset == "gpu":
        c.train.compute_dtype = "bfloat16"
        c.train.batch_size = 256
    if preset == "pod":
        c.train.compute_dtype = "bfloat16"
        c.train.batch_size = 1024
        c.mesh.data, c.mesh.fsdp = -1, 1
    if preset == "islands":
        c.mesh.island, c.mesh.data = 2, -1
        c.islands.sync_every = 10
    return c
