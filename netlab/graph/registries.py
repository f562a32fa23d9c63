"""The graph pillar's plug-in seams: GNN layers and graph models, registered by name.

`LAYERS` (config key `model.conv`, the layer a `graph_classifier` stacks): a Flax module class (or
factory) built as `cls(features, dtype=..., param_dtype=..., name=...)` with every other
hyperparameter defaulted, and called as `layer(graph, x)` on a `netlab.graph.graphs.Graph` and
node features x [N, F] -> [N, features] (times `heads` for concatenating attention layers).
Propagation-only layers (APPNP, LightGCN, GRAND's diffusion, sheaf diffusion) first map x to
`features` with a bias-free linear map when the widths differ, as GENConv does.

`MODELS` (config key `model.name`): a Flax module class whose fields are the model's
hyperparameters; the remaining `model.*` config entries are passed to it as keyword arguments
(plus `dtype` / `param_dtype` from the precision policy, and `remat_policy` when it has that field).
Its class attribute `TASK` names the kind of task that can train it ("node", "graph", "link",
"digraph", "recsys"); a task refuses a model of another kind with a one-line error.
A node model may define `prepare_graph(graph) -> graph` (host, numpy): the node task calls it once
on the padded graph and passes what it adds to `graph.norm` into every step (DRew's hop lists).
A graph model may define it too: the graph task calls it on every padded sub-batch (Graph ViT
patches, k,l-GNN / SPEN subgraph bags, NGN neighbourhood classes; cached per graph).

A new layer or model is one new module under `netlab/graph/` with `@LAYERS.register("name")` or
`@MODELS.register("name")` on its class, plus its test; no table to edit.
"""

from netlab.registry import Registry

LAYERS = Registry(
    "graph_layer",
    "model.conv",
    packages=("netlab.graph",),
    example="configs/graph/gin_synthetic.py:cpu",
)
MODELS = Registry(
    "graph_model",
    "model.name",
    packages=("netlab.graph",),
    example="configs/graph/planetoid.py:model=gcn,data=cora",
)
