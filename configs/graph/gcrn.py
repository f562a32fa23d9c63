"""GCRN model 2 (Seo et al., ICONIP 2018: Chebyshev graph convolutions inside the LSTM gates)
forecasting the next snapshot of a synthetic graph diffusion (netlab/graph/gcrn.py,
``SnapshotForecasting``): x_{t+1} = 0.9 Â x_t + noise on a Watts-Strogatz graph, 80 % of the
sequences train (full batch), the rest give eval/test_mse next to eval/persistence_mse (x_{t+1}
predicted as x_t: what a model that ignores the graph gets close to).

    python -m netlab.main --config configs/graph/gcrn.py:cpu --workdir runs/gcrn
    # a minute on 2 cores; model.K = 1 turns GCRN into a per-node LSTM (no graph):
    python -m netlab.main --config configs/graph/gcrn.py:cpu --workdir runs/gcrn_k1 \
        --config.model.K=1

K = 3 is the paper's Chebyshev order for its moving-MNIST grid; the hidden size and the
schedule are netlab's (the paper's moving-MNIST / PTB sequences are not offline here).
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")


def get_config(arg=None):
    preset = common.parse_preset(arg, PRESETS)
    c = common.base_config()
    c.task = "graph.snapshot_forecasting"
    c.model = ml_collections.ConfigDict(dict(name="gcrn", hidden=32, K=3, peephole=False))
    c.data = ml_collections.ConfigDict(
        dict(num_nodes=64, num_sequences=64, seq_len=10, feature_dim=1, noise=0.1, seed=0)
    )
    c.train.steps = 500
    c.train.batch_size = 0  # full batch: every training sequence in every step
    c.train.log_every = 50
    c.train.eval_every = 250
    c.checkpoint.every = 500
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.mesh.data = -1  # the sequences are replicated on every device (identical gradients)
    if preset in ("gpu", "pod"):
        c.data.num_nodes = 1024
        c.data.num_sequences = 512
        c.model.hidden = 64
    return c
