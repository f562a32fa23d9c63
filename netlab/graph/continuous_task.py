"""Node classification with continuous-depth diffusion models: GRAND (Chamberlain et al., ICML 2021)
and Neural Sheaf Diffusion (Bodnar et al., NeurIPS 2022), for the netlab trainer
(`task = "graph.continuous_node_classification"`).

Config (see configs/graph/grand_cora.py, configs/graph/sheaf.py):
    model.name   "grand" | "nsd" (any node model of `registries.MODELS`); the remaining model.*
                 fields are the model's keyword arguments (netlab.graph.grand.GRAND /
                 netlab.graph.sheaf.NeuralSheafDiffusion)
    data.name, data.data_dir ("" -> $NETLAB_DATA_DIR, cache, download), data.split,
    data.split_protocol ("given": the dataset's own split; "lcc_random": GRAND's random split,
    seed data.split, of the largest connected component, netlab.graph.splits),
    data.row_normalize; any other data.* key is a config error
    loss.weight_decay, loss.weight_decay_scope

Models, loss, batches and evaluation are :class:`netlab.graph.task.NodeClassification`'s (full
batch, masked cross-entropy plus L2, val/test accuracy); only the accepted data keys differ (no
edge sharding, no host propagation).
"""

from netlab.graph import task as graph_task

DATA_KEYS = ("name", "data_dir", "split", "split_protocol", "row_normalize")


class DiffusionNodeClassification(graph_task.NodeClassification):
    """:class:`netlab.graph.task.NodeClassification` for GRAND / NSD configs (``model.name``)."""

    data_keys = DATA_KEYS
