"""Node classification with continuous-depth diffusion models: GRAND (Chamberlain et al., ICML 2021)
and Neural Sheaf Diffusion (Bodnar et al., NeurIPS 2022), for the netlab trainer.

Config (see configs/graph/grand_cora.py, configs/graph/sheaf_texas.py):
    model.name   "grand" | "nsd"; the remaining model.* fields are the model's keyword arguments
                 (netlab.graph.grand.GRAND / netlab.graph.sheaf.NeuralSheafDiffusion)
    data.name, data.data_dir ("" -> $NETLAB_DATA_DIR, else ../shared/data), data.split,
    data.row_normalize; any other data.* key is a config error
    loss.weight_decay, loss.weight_decay_scope

Loss, batches and evaluation are :class:`netlab.graph.task.NodeClassification`'s (full batch,
masked cross-entropy plus L2, val/test accuracy).
"""
from __future__ import annotations

import jax
import numpy as np

from netlab import configlib
from netlab.graph import datasets as D
from netlab.graph import graphs as G
from netlab.graph import task as graph_task

DATA_KEYS = ("name", "data_dir", "split", "row_normalize")


def build_diffusion_model(name: str, num_classes: int, **kw):
    """GRAND (``grand``) or Neural Sheaf Diffusion (``nsd``) from plain keyword hyperparameters."""
    from netlab.graph import grand, sheaf
    if name == "grand":
        return grand.GRAND(num_classes=num_classes, **kw)
    if name == "nsd":
        return sheaf.NeuralSheafDiffusion(num_classes=num_classes, **kw)
    raise ValueError(f"unknown diffusion model {name!r}; set model.name to grand or nsd")


class DiffusionNodeClassification(graph_task.NodeClassification):
    """:class:`netlab.graph.task.NodeClassification` with a GRAND or NSD model (``model.name``)."""

    def __init__(self, config, dataset: D.NodeDataset | None = None):
        self.config = config
        d = config.data
        D.check_data_keys(d, DATA_KEYS, "DiffusionNodeClassification")
        if dataset is None:
            dataset = D.load(d.name, configlib.data_dir(d.get("data_dir", "")), int(d.get("split", 0)))
        self.dataset = ds = dataset
        budget = G.Budget(ds.num_nodes + 1, G._round_up(max(ds.num_edges, 1), 8), 2)
        graph = ds.graph(budget, row_normalize=bool(d.get("row_normalize", True)))
        kw = dict(config.model)
        name = kw.pop("name")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
        self.model = build_diffusion_model(name, ds.num_classes, **kw)
        pad = lambda m: np.concatenate([m, np.zeros(budget.n_node - len(m), m.dtype)])  # noqa: E731
        self.arrays = dict(G.to_arrays(graph))
        self.arrays.update(y=pad(ds.y.astype(np.int32)), train_mask=pad(ds.train_mask))
        self.eval_masks = {"train": pad(ds.train_mask), "val": pad(ds.val_mask), "test": pad(ds.test_mask)}
        self.edge_sharded = False
        self.train_arrays = self.arrays
        self.weight_decay = float(config.get("loss", {}).get("weight_decay", 0.0))
        self.wd_scope = str(config.get("loss", {}).get("weight_decay_scope", ""))
        self._predict = jax.jit(self.logits)
