"""Graph networks on jraph-style static-shape graphs.

- ``graphs``     — :class:`~netlab.graph.graphs.Graph` (padded, masked, receiver-sorted) and the one
  jittable message-passing core (``gather``, ``propagate``, ``edge_softmax``, ``pool``) every
  layer uses.
- ``padding``    — host-side building: canonical edge lists, padding budgets and bucket ladders,
  batching, host-precomputed GCN norms, batch dicts.
- ``registries`` — ``LAYERS`` (``model.conv``) and ``MODELS`` (``model.name``); ``builder`` checks a
  config's model choice and adds the precision policy.
- one paper per file: ``gcn``, ``sgc``, ``gat``, ``gatv2``, ``gin`` (+ graph classifier),
  ``deepergcn`` (GENConv, MsgNorm, res+), ``appnp``, ``gae`` (link predictor), ``grand``, ``sheaf``
  (NSD), ``digrac``, ``lightgcn``, ``ultragcn``; shared blocks in ``layers``; ranking metrics in
  ``recsys``; graph generators in ``generators``; offline datasets in ``datasets``/``recsys_data``.
- tasks: ``task`` (NodeClassification, GraphClassification, LinkPrediction), ``continuous_task``
  (GRAND / NSD node classification), ``digrac_task`` (DigraphClustering), ``recsys_task``
  (Recommendation); configs name them ``graph.node_classification`` etc. (``netlab.train.task``).

Submodules are imported explicitly (``from netlab.graph import graphs``) so that using one does not
import the others (a registry lookup imports all of them).
"""
