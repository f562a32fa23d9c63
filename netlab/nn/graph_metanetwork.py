"""Graph Metanetworks: Lim, Maron, Law, Lorraine & Lucas 2024, "Graph Metanetworks for Processing
Diverse Neural Architectures" (ICLR).

A metanetwork reads another network's weights. GMNs turn the input network into its parameter
graph: every neuron is a node, every weight an edge (from the neuron it reads to the
neuron it feeds), every bias a feature of its neuron. A message-passing GNN on that graph is, by
construction, equivariant to the graph's automorphisms, which include the permutations of hidden
neurons (the paper's equivariance result): permuting the hidden units of a layer (columns of
W_l, entries of b_l, rows of W_{l+1}) gives the same function and an isomorphic graph, so the
GMN's graph-level readout is unchanged.

- `mlp_parameter_graph(weights, biases)`: the parameter graph of an MLP as a `jraph.GraphsTuple`
  (the paper's MLP case). Node features: [bias (0 for inputs), one-hot layer index]; edge features:
  [weight]. Nodes are numbered layer by layer; `node_layer` / `node_position` hold each node's
  layer and its index among the input / output neurons (-1 for hidden ones).
- `mlp_from_graph(graph, sizes)`: the inverse, the MLP's weights and biases back from the graph.
- `cnn_parameter_graph(kernels, conv_biases, weights, biases)`: the parameter graph of a small
  CNN (the paper's convolution case, Sec. 3 / App. A): every channel is a node, every (input
  channel, output channel) pair of a convolution one edge whose feature is the whole k x k
  spatial kernel slice (flattened), and the dense layers after global average pooling are MLP
  edges with their scalar weight zero-padded to k x k; a two-dimensional one-hot edge type tells
  the two apart. Permuting a hidden layer's channels (a conv kernel's output axis, its bias, the
  next layer's input axis) leaves the CNN's function unchanged and gives an isomorphic graph, so
  the same `GraphMetanetwork` (with `sizes` = [input channels, conv channels..., dense
  widths...]) is invariant to it. Assumes global average pooling between the last convolution and
  the first dense layer (a flatten would make one node per channel and position).
- `GraphMetanetwork`: encoders of node and edge features, `num_layers` message-passing steps
  (edge update e' = phi_e(e, v_src, v_dst); node update v' = phi_v(v, sum of incoming
  e', sum of outgoing e'), so information flows both ways along the network), and a graph-level
  readout (mean over nodes, then an MLP) for e.g. accuracy prediction. As in the paper, input and
  output neurons (which have a fixed identity in the input network) get learned positional
  embeddings; hidden neurons do not, so the output is invariant to hidden-neuron permutations but
  not to input permutations.

Deliberate simplifications: MLPs and plain CNNs only (the paper also builds graphs of residual,
attention and normalisation layers); one graph per call (vmap it for a batch of networks of one
architecture).
`bench/metanet_zoo.py` predicts the test accuracy of a zoo of small digits classifiers.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

MAX_LAYERS = 8  # width of the one-hot layer feature


def _structure(sizes: Sequence[int]):
    """Static layout of the parameter graph: senders, receivers, node layer and position."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    senders, receivers = [], []
    for l in range(len(sizes) - 1):
        src = offsets[l] + np.arange(sizes[l])
        dst = offsets[l + 1] + np.arange(sizes[l + 1])
        senders.append(np.repeat(src, sizes[l + 1]))  # W_l[i, j], row-major: edge i -> j
        receivers.append(np.tile(dst, sizes[l]))
    layer = np.concatenate([np.full(n, l) for l, n in enumerate(sizes)])
    position = np.full(offsets[-1], -1)
    position[: sizes[0]] = np.arange(sizes[0])
    position[offsets[-2] :] = np.arange(sizes[-1])
    return np.concatenate(senders), np.concatenate(receivers), layer, position


def mlp_parameter_graph(weights, biases) -> jraph.GraphsTuple:
    """weights[l]: (n_l, n_{l+1}) (y = x W + b), biases[l]: (n_{l+1},) -> one GraphsTuple."""
    sizes = [weights[0].shape[0], *(w.shape[1] for w in weights)]
    if len(sizes) > MAX_LAYERS:
        raise ValueError(f"{len(sizes)} layers of neurons; at most MAX_LAYERS={MAX_LAYERS}")
    senders, receivers, layer, _ = _structure(sizes)
    bias = jnp.concatenate([jnp.zeros(sizes[0], jnp.float32), *(b.reshape(-1) for b in biases)])
    nodes = jnp.concatenate([bias[:, None], jax.nn.one_hot(layer, MAX_LAYERS)], axis=-1)
    edges = jnp.concatenate([w.reshape(-1) for w in weights])[:, None]
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=edges,
        senders=jnp.asarray(senders),
        receivers=jnp.asarray(receivers),
        n_node=jnp.asarray([len(layer)]),
        n_edge=jnp.asarray([len(senders)]),
        globals=None,
    )


def cnn_parameter_graph(kernels, conv_biases, weights, biases) -> jraph.GraphsTuple:
    """kernels[l]: (k, k, c_l, c_{l+1}) HWIO, conv_biases[l]: (c_{l+1},), then the dense layers'
    weights[m]: (n_m, n_{m+1}) and biases[m] after global average pooling -> one GraphsTuple.
    Edge features: [k*k kernel slice (dense: weight, zeros), is_conv, is_dense]."""
    k2 = kernels[0].shape[0] * kernels[0].shape[1]
    sizes = [kernels[0].shape[2], *(k.shape[3] for k in kernels), *(w.shape[1] for w in weights)]
    if len(sizes) > MAX_LAYERS:
        raise ValueError(f"{len(sizes)} layers of neurons; at most MAX_LAYERS={MAX_LAYERS}")
    senders, receivers, layer, _ = _structure(sizes)
    edges = []
    for k in kernels:  # edge (i -> j) in row-major (i, j) order, as _structure lays them out
        cin, cout = k.shape[2], k.shape[3]
        flat = jnp.transpose(k, (2, 3, 0, 1)).reshape(cin * cout, k2)
        edges.append(
            jnp.concatenate([flat, jnp.tile(jnp.asarray([[1.0, 0.0]]), (len(flat), 1))], -1)
        )
    for w in weights:
        flat = w.reshape(-1, 1)
        pad = jnp.zeros((len(flat), k2 - 1), flat.dtype)
        kind = jnp.tile(jnp.asarray([[0.0, 1.0]]), (len(flat), 1))
        edges.append(jnp.concatenate([flat, pad, kind], -1))
    all_b = [*conv_biases, *biases]
    bias = jnp.concatenate([jnp.zeros(sizes[0], jnp.float32), *(b.reshape(-1) for b in all_b)])
    nodes = jnp.concatenate([bias[:, None], jax.nn.one_hot(layer, MAX_LAYERS)], axis=-1)
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=jnp.concatenate(edges).astype(jnp.float32),
        senders=jnp.asarray(senders),
        receivers=jnp.asarray(receivers),
        n_node=jnp.asarray([len(layer)]),
        n_edge=jnp.asarray([len(senders)]),
        globals=None,
    )


def mlp_from_graph(graph: jraph.GraphsTuple, sizes: Sequence[int]):
    """(weights, biases) of the MLP with neuron counts `sizes` whose parameter graph is `graph`."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    weights, biases, e = [], [], 0
    for l in range(len(sizes) - 1):
        n = sizes[l] * sizes[l + 1]
        weights.append(graph.edges[e : e + n, 0].reshape(sizes[l], sizes[l + 1]))
        biases.append(graph.nodes[offsets[l + 1] : offsets[l + 2], 0])
        e += n
    return weights, biases


def _mlp(features, name):
    return nn.Sequential([nn.Dense(features), nn.gelu, nn.Dense(features)], name=name)


class GraphMetanetwork(nn.Module):
    """Message passing on an MLP's parameter graph -> (out_features,) per input network."""

    sizes: Sequence[int]  # neuron counts of the input MLP (input, hidden..., output)
    hidden: int = 32
    num_layers: int = 3
    out_features: int = 1

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        _, _, layer, position = _structure(self.sizes)
        n = len(layer)
        v = nn.Dense(self.hidden, name="node_in")(graph.nodes)
        e = nn.Dense(self.hidden, name="edge_in")(graph.edges)
        # positional embeddings of the input and output neurons (fixed identity); none for hidden
        is_input, is_output = layer == 0, layer == len(self.sizes) - 1
        emb_in = self.param("input_pos", nn.initializers.normal(1.0), (self.sizes[0], self.hidden))
        emb_out = self.param(
            "output_pos", nn.initializers.normal(1.0), (self.sizes[-1], self.hidden)
        )
        pos = np.maximum(position, 0)
        v = v + jnp.where(is_input[:, None], emb_in[np.minimum(pos, self.sizes[0] - 1)], 0.0)
        v = v + jnp.where(is_output[:, None], emb_out[np.minimum(pos, self.sizes[-1] - 1)], 0.0)
        s, r = graph.senders, graph.receivers
        for i in range(self.num_layers):
            e = e + _mlp(self.hidden, f"edge_{i}")(jnp.concatenate([e, v[s], v[r]], axis=-1))
            e = nn.LayerNorm(name=f"edge_norm_{i}")(e)
            incoming = jax.ops.segment_sum(e, r, num_segments=n)
            outgoing = jax.ops.segment_sum(e, s, num_segments=n)
            v = v + _mlp(self.hidden, f"node_{i}")(jnp.concatenate([v, incoming, outgoing], -1))
            v = nn.LayerNorm(name=f"node_norm_{i}")(v)
        pooled = jnp.concatenate([jnp.mean(v, axis=0), jnp.mean(e, axis=0)])
        return nn.Dense(self.out_features, name="readout")(nn.gelu(nn.Dense(self.hidden)(pooled)))
