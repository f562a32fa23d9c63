"""Split digits learned task after task by a hypernetwork that generates the classifier's weights
from a task embedding (von Oswald et al. 2020, "Continual learning with hypernetworks";
netlab/nn/cl_hypernetwork.py, netlab/classify/continual.py):

    python -m netlab.main --config configs/classify_continual_digits.py:cpu \\
        --workdir runs/cl_hnet
    # the forgetting baseline (no output regulariser):
    python -m netlab.main --config configs/classify_continual_digits.py:cpu \\
        --workdir runs/cl_hnet_beta0 --config.model.beta=0
    # two tasks ({0..4}, {5..9}): --config.data.num_tasks=2
    # Winning SubNetworks (Kang et al. 2022; netlab/train/wsn.py, netlab/classify/continual_wsn.py):
    # one shared MLP, a top-c% mask per task, used weights frozen (forget-free); SoftNet's masks:
    python -m netlab.main --config configs/classify_continual_digits.py:method=wsn \\
        --workdir runs/cl_wsn
    python -m netlab.main --config configs/classify_continual_digits.py:method=softnet \\
        --workdir runs/cl_softnet

5 tasks of 2 classes, 300 steps each; evaluation reports every seen task's test accuracy
(`acc_task<t>`) and their mean. bench/cl_hypernetwork.py tabulates old-task accuracy with and
without the regulariser (bench/results/cl_hypernetwork.md); bench/cl_wsn.py compares WSN and
SoftNet with it (bench/results/cl_wsn.md).
"""

import ml_collections

from configs import common

PRESETS = ("cpu",)
METHODS = ("hypernet", "wsn", "softnet")
VARIANTS = tuple(f"method={m}" for m in METHODS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, method="hypernet")
    if a.method not in METHODS:
        raise ValueError(f"method={a.method!r}; choose one of {', '.join(METHODS)}")
    c = common.base_config()
    c.task = "netlab.classify.continual:ContinualDigits"
    c.model = ml_collections.ConfigDict(
        dict(
            target_hidden=(32,),  # the generated MLP: 64 -> 32 -> classes per task
            hidden=(64, 64),  # the hypernetwork
            embed_dim=16,  # task embedding e^(t)
            chunk_size=256,  # weights per chunk (0: unchunked)
            chunk_dim=8,  # chunk embedding c_i
            beta=0.01,  # output regulariser weight (0: no regulariser)
        )
    )
    if a.method != "hypernet":
        names = {"wsn": "WSNContinualDigits", "softnet": "SoftNetContinualDigits"}
        c.task = f"netlab.classify.continual_wsn:{names[a.method]}"
        c.model = ml_collections.ConfigDict(
            dict(
                hidden=(32,),  # the shared MLP: 64 -> 32 -> classes per task
                capacity=0.5,  # c: the fraction of each kernel a task's mask keeps
            )
        )
    c.data = ml_collections.ConfigDict(dict(test_fraction=0.2, num_tasks=5))
    c.train.steps = 1500
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.eval_every = 300
    c.checkpoint.every = 300
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 0
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    return c
