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
    data_keys = DATA_KEYS

    def build_model(self, name: str, num_classes: int, kw: dict):
        return build_diffusion_model(name, num_classes, **{k: tuple(v) if isinstance(v, list) else v
                                                           for k, v in kw.items()})
