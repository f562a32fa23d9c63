"""Graph networks on jraph-style static-shape graphs.

- ``graphs``   — :class:`~netlab.graph.graphs.Graph` (padded, masked, receiver-sorted), bucket
  ladders and padding budgets, host-precomputed GCN norms, and the one message-passing core
  (``gather``/``propagate``/``edge_softmax``/``pool``) every layer uses.
- ``datasets`` — offline karate / Planetoid / geom-gcn loaders (checksummed, restricted unpickler).
- ``layers``   — GCN, SGC, GAT, GATv2, GIN, GENConv + MsgNorm, res+ block, APPNP (PyG semantics).
- ``models``   — node classifiers, a graph classifier, a link predictor.
- ``task``     — NodeClassification (full batch, optionally edge-sharded), GraphClassification
  (padded sub-batches, data parallel), LinkPrediction.
- recommendation (LightGCN, UltraGCN), GRAND, sheaf diffusion, DIGRAC and graph generators live in
  ``recsys*``, ``grand``, ``sheaf``, ``digrac`` and ``generators``; their trainer tasks in
  ``recsys_task`` (Recommendation), ``continuous_task`` (GRAND / NSD node classification) and
  ``digrac_task`` (DigraphClustering).

Submodules are imported explicitly (``from netlab.graph import graphs``) so that using one does not
import the others.
"""
