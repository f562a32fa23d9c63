"""Graph training tasks for the netlab trainer (see ``netlab/train/task.py`` for the protocol).

- :class:`NodeClassification` — full-batch, transductive (Cora, CiteSeer, geom-gcn sets, karate):
  one padded graph with train/val/test masks; ``batch_axes()`` replicates everything, or, with
  ``data.edge_sharded``, splits the edge arrays over the logical axis ``EDGES`` so each device
  aggregates its edge shard and partial aggregates are summed (an all-reduce).
- :class:`GraphClassification` — many small graphs packed into padded sub-batches on a short bucket
  ladder (one compilation per bucket); sub-batches are stacked on a leading ``batch`` axis, so data
  parallelism splits them over devices.
- :class:`LinkPrediction` — full-batch GCN encoder + inner-product decoder on a held-out edge split,
  fresh negatives each step (a function of seed and step), ROC-AUC on val/test.

Configs name them ``graph.node_classification``, ``graph.graph_classification`` and
``graph.link_prediction``. The model is ``registries.MODELS[config.model.name]``, checked by
``builder.model_spec`` (kind of task, keys, choices, ranges, precision policy) before any data is
read. Every task takes ``(config, policy=None)``; host arrays are float32, or float64 when the
policy computes in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netlab.errors import UserError
from netlab.graph import builder, padding, splits, synthetic_wl
from netlab.graph import datasets as D
from netlab.graph import graphs as G
from netlab.graph.graphs import accum_dtype
from netlab.graph.sgc import SGC, sgc_propagate
from netlab.registry import check_choice

# The config.data keys each task reads; anything else (e.g. ``data.dir``) is a config error.
NODE_DATA_KEYS = (
    "name",
    "data_dir",
    "split",
    "split_protocol",
    "row_normalize",
    "edge_sharded",
    "precompute",
)
GRAPH_DATA_KEYS = (
    "name",
    "num_graphs",
    "graphs_per_batch",
    "max_nodes",
    "max_edges",
    "num_buckets",
    "test_fraction",
)
LINK_DATA_KEYS = ("name", "data_dir", "val_fraction", "test_fraction", "edge_sharded")


def l2_penalty(params, weight_decay: float, scope: str = "", overrides=None):
    """weight_decay/2 · Σ p² over parameters whose path starts with ``scope`` ("" = all). Equals the
    coupled L2 of Adam(weight_decay) in PyG and Kipf's ``weight_decay * tf.nn.l2_loss``.

    ``overrides`` (mapping path prefix -> decay): parameters whose path starts with a prefix take
    that decay instead (the first matching prefix), e.g. {"sheaf_learner": 1e-4} for the NSD
    authors' separate ``sheaf_decay`` (their Adam parameter groups). A prefix that matches no
    parameter is a config error (a typo would otherwise be silently ignored)."""
    overrides = dict(overrides or {})
    if not weight_decay and not any(overrides.values()):
        return 0.0
    total, matched = 0.0, set()
    for path, p in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        prefix = next((k for k in overrides if name.startswith(k)), None)
        matched.add(prefix)
        wd = overrides[prefix] if prefix is not None else weight_decay * name.startswith(scope)
        if wd:
            total = total + 0.5 * wd * jnp.sum(jnp.square(p))
    for k in overrides.keys() - matched:
        raise UserError(
            f"loss.weight_decay_overrides.{k}: no parameter path starts with {k!r}; use a prefix "
            "of the model's parameter names (e.g. sheaf_learner for NSD)"
        )
    return total


def weight_decay_overrides(config) -> dict:
    """`loss.weight_decay_overrides` as {prefix: float}, checked (one-line error on a bad value);
    a None entry means "no override" (those parameters take loss.weight_decay)."""
    raw = config.get("loss", {}).get("weight_decay_overrides", None) or {}
    out = {}
    for k, v in dict(raw).items():
        if v is None:
            continue
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            out[str(k)] = float("nan")
        if not out[str(k)] >= 0:  # also NaN
            raise UserError(
                f"loss.weight_decay_overrides.{k}={v!r}; give a decay >= 0 for the parameters "
                f"under {k!r}"
            )
    return out


def masked_cross_entropy(logits, labels, mask):
    """Mean cross-entropy over the masked rows, in float32 (float64 for float64 logits)."""
    dtype = accum_dtype(logits.dtype)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(dtype), labels)
    m = mask.astype(dtype)
    return (ce * m).sum() / jnp.maximum(m.sum(), 1.0)


def masked_accuracy(logits, labels, mask):
    m = mask.astype(accum_dtype(logits.dtype))
    return ((logits.argmax(-1) == labels) * m).sum() / jnp.maximum(m.sum(), 1.0)


def _edge_multiple(config) -> int:
    # Edge arrays must split evenly over every device when edge-sharded.
    if config.data.get("edge_sharded", False):
        return int(np.lcm(128, max(jax.device_count(), 1)))
    return 8


class NodeClassification:
    """Full-batch node classification; ``evaluate`` reports val/test accuracy. Any model of
    ``registries.MODELS`` with ``TASK = "node"`` (GCN, SGC, GAT, GATv2, APPNP, DeeperGCN, GRAND,
    NSD, ...). ``dataset=`` replaces the configured dataset (tests, benchmarks)."""

    data_keys = NODE_DATA_KEYS

    def __init__(self, config, policy=None, *, dataset: D.NodeDataset | None = None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        d = config.data
        D.check_data_keys(d, self.data_keys, type(self).__name__)
        spec = builder.model_spec(config, self.policy, "node")
        root = D.default_root(d.get("data_dir", ""))
        self.dataset = dataset if dataset is not None else D.load(d.name, root, d.get("split", 0))
        # "lcc_random": GRAND's protocol, a random split (seed data.split) of the largest component
        self.dataset = splits.apply_protocol(
            self.dataset, d.get("split_protocol", "given"), int(d.get("split", 0))
        )
        ds, fdt = self.dataset, builder.float_dtype(self.policy)
        budget = padding.Budget(
            ds.num_nodes + 1, padding.round_up(max(ds.num_edges, 1), _edge_multiple(config)), 2
        )
        graph = ds.graph(budget, row_normalize=bool(d.get("row_normalize", True)), dtype=fdt)
        x = np.asarray(graph.nodes)
        fixed = {}
        host_sgc = issubclass(spec.cls, SGC) and d.get("precompute", True)
        if host_sgc:
            # PyG SGConv(cached=True): S^K X is computed once; the model is then a linear map.
            k = int(spec.kwargs.get("k", 2))
            x = np.asarray(
                jax.jit(sgc_propagate, static_argnums=2)(
                    padding.to_device(graph), jnp.asarray(x), k
                )
            )
            fixed["k"] = 0
        self.model = spec(num_classes=ds.num_classes, **fixed)
        if hasattr(self.model, "prepare_graph"):  # host-side structure, built once (DRew's hops)
            graph = self.model.prepare_graph(graph)
        pad = lambda m: np.concatenate([m, np.zeros(budget.n_node - len(m), m.dtype)])  # noqa: E731
        self.arrays = dict(padding.to_arrays(graph.replace(nodes=x)))
        self.arrays.update(y=pad(ds.y.astype(np.int32)), train_mask=pad(ds.train_mask))
        self.eval_masks = {
            "train": pad(ds.train_mask),
            "val": pad(ds.val_mask),
            "test": pad(ds.test_mask),
        }
        self.edge_sharded = bool(d.get("edge_sharded", False))
        self.train_arrays = self.arrays
        if host_sgc:
            # After caching S^K X the model is node-wise: train on the labelled rows only (as the
            # SGC reference code does with features[idx_train]); evaluation scores every node.
            rows = np.nonzero(ds.train_mask)[0]
            n_rows = padding.round_up(len(rows), 8)
            take = np.concatenate([rows, np.zeros(n_rows - len(rows), rows.dtype)])
            self.train_arrays = {
                "nodes": x[take],
                "y": ds.y[take].astype(np.int32),
                "train_mask": np.arange(n_rows) < len(rows),
            }
        self.weight_decay = float(config.get("loss", {}).get("weight_decay", 0.0))
        self.wd_scope = str(config.get("loss", {}).get("weight_decay_scope", ""))
        self.wd_overrides = weight_decay_overrides(config)
        self._predict = jax.jit(self.logits)

    # -- protocol --------------------------------------------------------------------------------
    def init_variables(self, rng):
        g = G.from_arrays(jax.tree.map(jnp.asarray, self.arrays))
        return self.model.init({"params": rng, "dropout": rng}, g, g.nodes, train=False)

    def batch_axes(self):
        return padding.array_axes(self.train_arrays, edge_sharded=self.edge_sharded)

    def global_batch_size(self):
        return 0

    def train_batch(self, step):
        return self.train_arrays

    def loss_fn(self, params, model_state, batch, rng, train):
        g = G.from_arrays(batch) if "senders" in batch else None
        variables = {"params": params, **model_state}
        kw = dict(train=train, rngs={"dropout": rng})
        if train and "batch_stats" in model_state:
            # BatchNorm (e.g. GENConv's MLP with norm='batch') updates its running averages.
            logits, updates = self.model.apply(
                variables, g, batch["nodes"], mutable=["batch_stats"], **kw
            )
            model_state = {**model_state, **updates}
        else:
            logits = self.model.apply(variables, g, batch["nodes"], **kw)
        ce = masked_cross_entropy(logits, batch["y"], batch["train_mask"])
        loss = ce + l2_penalty(params, self.weight_decay, self.wd_scope, self.wd_overrides)
        accuracy = masked_accuracy(logits, batch["y"], batch["train_mask"])
        return loss, ({"ce": ce, "accuracy": accuracy}, model_state)

    def logits(self, params, model_state, arrays):
        g = G.from_arrays(arrays)
        return self.model.apply({"params": params, **model_state}, g, g.nodes, train=False)

    def evaluate(self, params, model_state, step, workdir):
        logits = np.asarray(self._predict(params, model_state, self.arrays))
        pred, y = logits.argmax(-1), self.arrays["y"]
        scalars = {
            f"{k}_accuracy": float((pred == y)[m].mean())
            for k, m in self.eval_masks.items()
            if m.any()
        }
        val_ce = masked_cross_entropy(
            jnp.asarray(logits), jnp.asarray(y), jnp.asarray(self.eval_masks["val"])
        )
        scalars["val_loss"] = float(val_ce)
        return scalars, {}


# ------------------------------------------------------------------------------------------------
# Graph classification over padded batches.
# ------------------------------------------------------------------------------------------------


def synthetic_graph_dataset(num_graphs: int, seed: int, min_nodes: int = 8, max_nodes: int = 32):
    """Two-class toy set (host, networkx): Erdős–Rényi graphs with mean degree ≈ 4 (class 0) vs
    Barabási–Albert trees (m = 1, mean degree ≈ 2, class 1); features are constant ones, so a model
    must read the structure. Returns a list of (GraphsTuple, label)."""
    import jraph
    import networkx as nx

    rng = np.random.default_rng(seed)
    out = []
    for i in range(num_graphs):
        n = int(rng.integers(min_nodes, max_nodes + 1))
        label = i % 2
        gseed = int(rng.integers(1 << 31))
        if label:
            g = nx.barabasi_albert_graph(n, 1, seed=gseed)
        else:
            g = nx.gnp_random_graph(n, 4.0 / (n - 1), seed=gseed)
        e = np.array(list(g.edges()), np.int64).reshape(-1, 2)
        s, r, _, _ = padding.canonical_edges(e[:, 0], e[:, 1], n, symmetrize=True)
        out.append(
            (
                jraph.GraphsTuple(
                    nodes=np.ones((n, 1), np.float32),
                    edges=None,
                    senders=s,
                    receivers=r,
                    globals=None,
                    n_node=np.array([n]),
                    n_edge=np.array([len(s)]),
                ),
                label,
            )
        )
    return out


GRAPH_SETS = ("synthetic", "csl", "exp")


def graph_dataset(name: str, num_graphs: int, seed: int):
    """``data.name``: the ER-vs-BA toy set, CSL (``num_graphs`` // 10 relabelled copies of each of
    its 10 classes) or ``num_graphs`` // 2 EXP-style pairs (:mod:`netlab.graph.synthetic_wl`)."""
    check_choice("data.name", name, GRAPH_SETS)
    if name == "csl":
        return synthetic_wl.csl(copies=max(num_graphs // 10, 1), seed=seed)
    if name == "exp":
        return synthetic_wl.exp_pairs(max(num_graphs // 2, 1), seed=seed)
    return synthetic_graph_dataset(num_graphs, seed)


class GraphClassification:
    """Graph classification; a batch is ``train.batch_size`` padded sub-batches of
    ``data.graphs_per_batch`` graphs each, all padded to the smallest bucket of
    ``data.max_nodes``/``max_edges`` that fits. ``graphs=`` replaces the synthetic set. A model
    with ``prepare_graph(graph) -> graph`` (host, numpy) gets every padded sub-batch through it and
    reads what it adds to ``graph.norm`` (Graph ViT patches, subgraph bags)."""

    def __init__(self, config, policy=None, *, graphs=None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        self.fdt = builder.float_dtype(self.policy)
        d = config.data
        D.check_data_keys(d, GRAPH_DATA_KEYS, "GraphClassification")
        spec = builder.model_spec(config, self.policy, "graph")
        if graphs is None:
            graphs = graph_dataset(d.get("name", "synthetic"), d.num_graphs, config.seed)
        self.graphs = graphs
        rng = np.random.default_rng(config.seed + 1)
        order = rng.permutation(len(self.graphs))
        n_test = max(int(len(order) * d.get("test_fraction", 0.2)), 1)
        self.test_idx, self.train_idx = order[:n_test], order[n_test:]
        self.per_row = int(d.graphs_per_batch)
        self.rows = int(config.train.batch_size)
        self.ladder = padding.BucketLadder.from_max(
            d.max_nodes, d.max_edges, self.per_row + 1, d.get("num_buckets", 4)
        )
        self._check_budget()
        self.num_classes = int(max(y for _, y in self.graphs) + 1)
        self.feat_dim = int(self.graphs[0][0].nodes.shape[-1])
        self.model = spec(num_classes=self.num_classes)
        self._predict = jax.jit(jax.vmap(self._logits, in_axes=(None, None, 0)))

    def _check_budget(self):
        """Refuse, before training, a ladder that some sub-batch cannot fit: the ``per_row``
        largest graphs together (nodes and edges counted separately) must fit the largest bucket."""
        nodes = sorted((int(g.n_node[0]) for g, _ in self.graphs), reverse=True)[: self.per_row]
        edges = sorted((int(g.n_edge[0]) for g, _ in self.graphs), reverse=True)[: self.per_row]
        big = self.ladder.largest
        if not big.fits(sum(nodes), sum(edges), len(nodes)):
            raise padding.GraphBudgetError(
                f"data.graphs_per_batch={self.per_row} graphs can need {sum(nodes)} nodes and "
                f"{sum(edges)} edges (+1 padding node) but the largest padding budget holds "
                f"{big.n_node} nodes / {big.n_edge} edges; raise data.max_nodes to >= "
                f"{sum(nodes) + 1} and data.max_edges to >= {sum(edges)} (or lower "
                "data.graphs_per_batch)"
            )

    def _pack(self, idx, rows):
        """``rows`` padded sub-batches from graph indices ``idx`` (split evenly), one bucket."""
        chunks = np.array_split(np.asarray(idx), rows)
        n_node = lambda c: sum(int(self.graphs[i][0].n_node[0]) for i in c)  # noqa: E731
        n_edge = lambda c: sum(int(self.graphs[i][0].n_edge[0]) for i in c)  # noqa: E731
        sizes = [(n_node(c), n_edge(c), len(c)) for c in chunks]
        budget = self.ladder.fit(
            max(s[0] for s in sizes), max(s[1] for s in sizes), max(s[2] for s in sizes)
        )
        out = []
        for c in chunks:
            g = padding.batch([self.graphs[i][0] for i in c], budget, dtype=self.fdt)
            if hasattr(self.model, "prepare_graph"):  # host-side structure (patches, subgraphs)
                g = self.model.prepare_graph(g)
            a = padding.cast_floats(padding.to_arrays(g), self.fdt)
            labels = np.zeros(budget.n_graph, np.int32)
            labels[: len(c)] = [self.graphs[i][1] for i in c]
            a["label"] = labels
            out.append(a)
        return {k: np.stack([o[k] for o in out]) for k in out[0]}

    def batch_indices(self, step):
        """Graph indices of ``step``: an epoch-wise permutation of the training set, a function of
        (seed, step)."""
        per_step = self.rows * self.per_row
        steps_per_epoch = max(len(self.train_idx) // per_step, 1)
        epoch, k = divmod(int(step), steps_per_epoch)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(self.train_idx)
        return perm[k * per_step : (k + 1) * per_step]

    def init_variables(self, rng):
        b = self._pack(self.train_idx[: self.per_row], 1)
        g = G.from_arrays({k: jnp.asarray(v[0]) for k, v in b.items()})
        return self.model.init({"params": rng, "dropout": rng}, g, g.nodes, train=False)

    def batch_axes(self):
        b = self._pack(self.train_idx[: self.per_row], 1)
        return padding.array_axes(b, lead=("batch",))

    def global_batch_size(self):
        return self.rows

    def train_batch(self, step):
        return self._pack(self.batch_indices(step), self.rows)

    def _logits(self, params, model_state, arrays, train=False, rng=None):
        g = G.from_arrays(arrays)
        rngs = {"dropout": rng} if rng is not None else {}
        return self.model.apply(
            {"params": params, **model_state}, g, g.nodes, train=train, rngs=rngs
        )

    def loss_fn(self, params, model_state, batch, rng, train):
        rngs = jax.random.split(rng, batch["label"].shape[0])
        logits = jax.vmap(lambda a, r: self._logits(params, model_state, a, train, r))(batch, rngs)
        mask = batch["graph_mask"]
        loss = masked_cross_entropy(logits, batch["label"], mask)
        return loss, ({"accuracy": masked_accuracy(logits, batch["label"], mask)}, model_state)

    def evaluate(self, params, model_state, step, workdir):
        scalars = {}
        for split, idx in (("train", self.train_idx), ("test", self.test_idx)):
            correct = total = 0
            for start in range(0, len(idx), self.per_row * self.rows):
                chunk = idx[start : start + self.per_row * self.rows]
                b = self._pack(chunk, max(1, math.ceil(len(chunk) / self.per_row)))
                pred = np.asarray(self._predict(params, model_state, b)).argmax(-1)
                m = b["graph_mask"]
                correct += int(((pred == b["label"]) & m).sum())
                total += int(m.sum())
            scalars[f"{split}_accuracy"] = correct / max(total, 1)
        return scalars, {}


# ------------------------------------------------------------------------------------------------
# Link prediction.
# ------------------------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get average ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


class LinkPrediction:
    """Full-batch link prediction: undirected edges split train/val/test (``data.val_fraction``,
    ``data.test_fraction``); the encoder sees only training edges; each step scores the training
    edges against as many random negative pairs (a function of seed and step); BCE loss."""

    def __init__(self, config, policy=None, *, dataset: D.NodeDataset | None = None):
        self.config = config
        self.policy = builder.policy_of(config, policy)
        fdt = builder.float_dtype(self.policy)
        d = config.data
        D.check_data_keys(d, LINK_DATA_KEYS, "LinkPrediction")
        spec = builder.model_spec(config, self.policy, "link")
        root = D.default_root(d.get("data_dir", ""))
        ds = dataset if dataset is not None else D.load(d.name, root)
        self.dataset = ds
        und = ds.senders < ds.receivers
        pairs = np.stack([ds.senders[und], ds.receivers[und]], 1)
        rng = np.random.default_rng(config.seed)
        pairs = pairs[rng.permutation(len(pairs))]
        n_val = int(len(pairs) * d.get("val_fraction", 0.05))
        n_test = int(len(pairs) * d.get("test_fraction", 0.1))
        self.val_pos, self.test_pos = pairs[:n_val], pairs[n_val : n_val + n_test]
        self.train_pos = pairs[n_val + n_test :]
        n = ds.num_nodes
        self.val_neg = rng.integers(0, n, (n_val, 2))
        self.test_neg = rng.integers(0, n, (n_test, 2))
        tp = self.train_pos
        budget = padding.Budget(n + 1, padding.round_up(2 * len(tp), _edge_multiple(config)), 2)
        graph = padding.from_edges(
            tp[:, 0],
            tp[:, 1],
            n,
            nodes=D.normalize_features(ds.x, fdt),
            symmetrize=True,
            budget=budget,
            dtype=fdt,
        )
        self.arrays = padding.to_arrays(graph)
        self.arrays["pos"] = tp.astype(np.int32)
        self.edge_sharded = bool(d.get("edge_sharded", False))
        self.model = spec()
        self._score = jax.jit(self.scores)

    def init_variables(self, rng):
        g = G.from_arrays(jax.tree.map(jnp.asarray, self.arrays))
        return self.model.init(
            {"params": rng, "dropout": rng}, g, g.nodes, jnp.zeros((1, 2), jnp.int32)
        )

    def batch_axes(self):
        return padding.array_axes(self.arrays, edge_sharded=self.edge_sharded)

    def global_batch_size(self):
        return 0

    def train_batch(self, step):
        return self.arrays

    def loss_fn(self, params, model_state, batch, rng, train):
        g = G.from_arrays(batch)
        pos = batch["pos"]
        k_neg, k_drop = jax.random.split(rng)
        neg = jax.random.randint(k_neg, pos.shape, 0, self.dataset.num_nodes)
        pairs = jnp.concatenate([pos, neg])
        logits = self.model.apply(
            {"params": params, **model_state},
            g,
            g.nodes,
            pairs,
            train=train,
            rngs={"dropout": k_drop},
        )
        dtype = accum_dtype(logits.dtype)
        labels = jnp.concatenate([jnp.ones(pos.shape[0], dtype), jnp.zeros(neg.shape[0], dtype)])
        loss = optax.sigmoid_binary_cross_entropy(logits.astype(dtype), labels).mean()
        accuracy = ((logits > 0) == (labels > 0)).astype(dtype).mean()
        return loss, ({"accuracy": accuracy}, model_state)

    def scores(self, params, model_state, arrays, pairs):
        g = G.from_arrays(arrays)
        return self.model.apply({"params": params, **model_state}, g, g.nodes, pairs, train=False)

    def evaluate(self, params, model_state, step, workdir):
        out = {}
        for split, pos, neg in (
            ("val", self.val_pos, self.val_neg),
            ("test", self.test_pos, self.test_neg),
        ):
            pairs = np.concatenate([pos, neg]).astype(np.int32)
            s = np.asarray(self._score(params, model_state, self.arrays, pairs))
            out[f"{split}_auc"] = roc_auc(s, np.r_[np.ones(len(pos)), np.zeros(len(neg))])
        return out, {}
