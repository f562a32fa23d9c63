"""DiPaCo: paths of shared modules, each path trained on its own island, synchronised rarely.
Douillard, Feng, Rusu, Kuncoro, Donchev, Chhaparia, Gog, Ranzato, Shen & Szlam 2024, "DiPaCo:
Distributed Path Composition" (arXiv 2403.10616), Sec. 2-3, Alg. 1.

The model is a grid of modules: L levels, M_l modules in level l, all modules of a level with the
same structure (stored stacked: level l is a pytree whose leaves have a leading axis M_l). A path
picks one module per level (16 x 16 = 256 paths in the paper); a document is routed to one path
and only that path runs on it, in training and at test time.

- Routing (Sec. 2.2): fixed before training, by k-means on a representation of each document's
  prefix (`DocumentRouter.fit` on `prefix_features`); every token of a document takes its
  document's path (`token_paths`), and the training set is split into one shard per path
  (`shard_documents`).
- Training (Alg. 1): island k trains path p_k on its shard for H inner steps (AdamW in the paper)
  with no communication, from the current modules. Then, for every module (l, j), the outer
  gradient is the weighted mean of the island deltas of exactly the islands whose path contains
  it:

      Delta_{l,j} = sum_k [p_k(l) = j] a_k (theta_{l,j} - theta_k^l) / sum_k [p_k(l) = j] a_k

  (a_k: shard-size weights |D_k| / |D|, Eq. 2-3 as read in the OpenDiPaCo reimplementation;
  uniform by default), and the outer optimizer (SGD with Nesterov momentum, lr 0.7, momentum
  0.9) updates each module with its own.
  A module no path uses gets Delta = 0 and (from zero momentum) stays unchanged. Several islands
  may train the same path (data parallelism within a path, the paper's replicas); with one level
  of one module this is exactly DiLoCo (diloco.py). Not implemented: the paper's rescaling of a
  shared module's outer gradient by the square root of its number of paths (Sec. 3; we could not
  check the equation), EM re-sharding and the discriminative router, re-routing every W tokens.
- Communication: under `shard_map` over the island axis the reduction is one `psum` of each
  island's delta scattered into its module slots (the whole grid, zeros elsewhere); a
  subgroup reduction per module (only the islands that share it) would move less.
- Checkpoints are path-wise: `save_path` writes one island's path (its modules, one per level)
  with Orbax, `restore_path` reads it back, and `reassemble` rebuilds the full grid from path
  checkpoints (each module from any path that contains it; they agree after a synchronisation).

Standalone: `DiPaCo(loss_fn, inner, mesh, paths)` with `loss_fn(path_params, batch)` where
`path_params` is a tuple of L module pytrees; the trainer does not call it.
"""

import dataclasses
import itertools
import json
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from netlab.data.kmeans import kmeans
from netlab.errors import UserError
from netlab.train import diloco


@dataclasses.dataclass(frozen=True)
class DiPaCoState:
    modules: Any  # tuple over levels of pytrees with a leading module axis; replicated
    outer_state: Any  # outer optimizer state of the whole grid; replicated
    inner_state: Any  # every island's inner optimizer state: leading island axis, sharded


jax.tree_util.register_dataclass(
    DiPaCoState, data_fields=["modules", "outer_state", "inner_state"], meta_fields=[]
)


def all_paths(modules_per_level: Sequence[int]) -> np.ndarray:
    """(prod M_l, L) every path of the grid, in lexicographic order."""
    return np.asarray(list(itertools.product(*[range(m) for m in modules_per_level])), np.int32)


def path_params(modules, path) -> tuple:
    """The modules of one path: level l's module path[l]."""
    return tuple(jax.tree.map(lambda a: a[path[l]], level) for l, level in enumerate(modules))


def grid_shape(modules) -> tuple:
    """(M_0, ..., M_{L-1}): the number of modules of each level."""
    return tuple(int(jax.tree.leaves(level)[0].shape[0]) for level in modules)


# --------------------------------------------------------------------------------------------------
# Routing: documents to paths, fixed before training


def prefix_features(tokens, embedding, prefix: int = 32) -> np.ndarray:
    """(docs, d) a document's representation: the mean embedding of its first `prefix` tokens
    (`tokens` (docs, T) int, `embedding` (vocab, d)). The paper embeds the prefix with a
    pretrained model; any fixed (docs, d) features will do for the router."""
    tokens = np.asarray(tokens)[:, :prefix]
    return np.asarray(embedding)[tokens].mean(axis=1)


@dataclasses.dataclass(frozen=True)
class DocumentRouter:
    """k-means centroids (P, d): a document goes to the path of its nearest centroid."""

    centroids: np.ndarray

    @classmethod
    def fit(cls, features, num_paths: int, seed: int = 0, iters: int = 50) -> "DocumentRouter":
        """k-means with k-means++ seeding on the host (`netlab.data.kmeans`)."""
        x = np.asarray(features, np.float64)
        if not 1 <= num_paths <= len(x):
            raise UserError(
                f"dipaco num_paths={num_paths!r}: use 1..{len(x)} (at most one per document)"
            )
        return cls(kmeans(x, num_paths, seed=seed, iters=iters)[0])

    def route(self, features) -> np.ndarray:
        """(docs,) the path of each document."""
        x = np.asarray(features, np.float64)
        d = ((x[:, None] - self.centroids[None]) ** 2).sum(-1)
        return np.argmin(d, axis=1).astype(np.int32)


def token_paths(doc_paths, segment_ids) -> np.ndarray:
    """Every token takes its document's path: `segment_ids` (any shape) holds document indices."""
    return np.asarray(doc_paths)[np.asarray(segment_ids)]


def shard_documents(doc_paths, num_paths: int) -> list:
    """One array of document indices per path (the path's training shard)."""
    doc_paths = np.asarray(doc_paths)
    return [np.flatnonzero(doc_paths == p) for p in range(num_paths)]


# --------------------------------------------------------------------------------------------------
# Training


class DiPaCo:
    """DiPaCo rounds over mesh axis `axis`: island k trains path `paths[k]` ((K, L) module
    indices, K = the axis size). `weights` (K,) are the a_k of the outer mean (default equal).

    `init(modules)` -> `DiPaCoState`; `round(state, batches)` runs one round, every leaf of
    `batches` (K, H, ...): H inner batches of each island's own documents."""

    def __init__(
        self,
        loss_fn: Callable,
        inner: optax.GradientTransformation,
        mesh: jax.sharding.Mesh,
        paths,
        outer: optax.GradientTransformation = None,
        axis: str = "data",
        weights=None,
    ):
        if axis not in mesh.axis_names:
            raise UserError(
                f"dipaco axis={axis!r} is not a mesh axis; choose one of {mesh.axis_names}"
            )
        self.islands = mesh.shape[axis]
        self.paths = np.asarray(paths, np.int32)
        if self.paths.ndim != 2 or self.paths.shape[0] != self.islands:
            raise UserError(
                f"dipaco paths: need one path (a row of module indices, one per level) per "
                f"island, shape ({self.islands}, levels); got shape {self.paths.shape}"
            )
        w = np.ones(self.islands) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (self.islands,) or (w <= 0).any():
            raise UserError(f"dipaco weights={weights!r}: use {self.islands} positive numbers")
        self.weights = (w / w.sum()).astype(np.float32)
        self.loss_fn, self.inner, self.mesh, self.axis = loss_fn, inner, mesh, axis
        self.outer = diloco.outer_optimizer() if outer is None else outer
        self._round = jax.jit(self._round_fn)

    def _sharding(self, spec):
        return NamedSharding(self.mesh, spec)

    def _check_grid(self, modules):
        shape = grid_shape(modules)
        if len(shape) != self.paths.shape[1] or (self.paths >= np.asarray(shape)).any():
            raise UserError(
                f"dipaco paths: a path needs one module index per level, below the level's "
                f"module count {shape}; got paths {self.paths.tolist()}"
            )

    def init(self, modules) -> DiPaCoState:
        modules = tuple(modules)
        self._check_grid(modules)

        def init(modules, paths):
            inner = jax.vmap(lambda path: self.inner.init(path_params(modules, path)))(paths)
            return DiPaCoState(modules, self.outer.init(modules), inner)

        shardings = DiPaCoState(
            self._sharding(P()), self._sharding(P()), self._sharding(P(self.axis))
        )
        return jax.jit(init, out_shardings=shardings)(modules, jnp.asarray(self.paths))

    def _island(self, modules, inner_state, batches, path, weight):
        """One island's H inner steps on its path (no collective), then the reduction."""
        modules = jax.lax.pcast(modules, (self.axis,), to="varying")  # see diloco.py
        path, weight = path[0], weight[0]
        inner_state = jax.tree.map(lambda a: a[0], inner_state)
        batches = jax.tree.map(lambda a: a[0], batches)
        start = path_params(modules, path)

        def step(carry, batch):
            p, s = carry
            grads = jax.grad(self.loss_fn)(p, batch)
            updates, s = self.inner.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (local, inner_state), _ = jax.lax.scan(step, (start, inner_state), batches)
        delta = jax.tree.map(jnp.subtract, start, local)
        sums, counts = [], []
        for l, level in enumerate(modules):  # scatter a_k Delta_k^l into slot path[l]
            m = jax.tree.leaves(level)[0].shape[0]
            onehot = (jnp.arange(m) == path[l]).astype(jnp.float32) * weight
            put = lambda d, oh=onehot: oh.reshape(-1, *[1] * d.ndim) * d[None]
            sums.append(jax.tree.map(put, delta[l]))
            counts.append(onehot)
        sums, counts = jax.lax.psum((tuple(sums), tuple(counts)), self.axis)
        grad = tuple(
            jax.tree.map(lambda s: s / jnp.maximum(c, 1e-30).reshape(-1, *[1] * (s.ndim - 1)), lvl)
            for lvl, c in zip(sums, counts)
        )
        return grad, jax.tree.map(lambda a: a[None], inner_state)

    def _round_fn(self, state: DiPaCoState, batches):
        a = self.axis
        island = jax.shard_map(
            self._island,
            mesh=self.mesh,
            in_specs=(P(), P(a), P(a), P(a), P(a)),
            out_specs=(P(), P(a)),
        )
        paths, weights = jnp.asarray(self.paths), jnp.asarray(self.weights)
        grad, inner_state = island(state.modules, state.inner_state, batches, paths, weights)
        updates, outer_state = self.outer.update(grad, state.outer_state, state.modules)
        modules = optax.apply_updates(state.modules, updates)
        return DiPaCoState(modules, outer_state, inner_state)

    def round(self, state: DiPaCoState, batches) -> DiPaCoState:
        lead = {tuple(np.shape(x)[:1]) for x in jax.tree.leaves(batches)}
        if lead != {(self.islands,)}:
            raise UserError(
                f"dipaco batches: every leaf needs a leading island axis of size "
                f"{self.islands} (the size of mesh axis {self.axis!r}), got {sorted(lead)}"
            )
        batches = jax.device_put(batches, self._sharding(P(self.axis)))
        return self._round(state, batches)

    def jaxpr(self, state: DiPaCoState, batches):
        """The closed jaxpr of one round (for `diloco.collective_bytes`)."""
        return jax.make_jaxpr(self._round_fn)(state, batches)


# --------------------------------------------------------------------------------------------------
# Path-wise checkpoints (Orbax)


def save_path(directory, modules, path) -> pathlib.Path:
    """Write one path's modules (what one island holds) and its module indices to `directory`."""
    directory = pathlib.Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    path = [int(j) for j in path]
    params = {f"level_{l}": p for l, p in enumerate(path_params(modules, path))}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "params", params, force=True)
    (directory / "path.json").write_text(json.dumps({"path": path}))
    return directory


def save_islands(root, modules, paths) -> list:
    """One path checkpoint per island, `root/island_<k>`: island k's process writes its own."""
    return [save_path(pathlib.Path(root) / f"island_{k}", modules, p) for k, p in enumerate(paths)]


def restore_path(directory, modules_like) -> tuple:
    """-> (path, path_params) from `save_path`; `modules_like` gives the grid's structure."""
    directory = pathlib.Path(directory).absolute()
    path = json.loads((directory / "path.json").read_text())["path"]
    abstract = {
        f"level_{l}": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), level)
        for l, level in enumerate(modules_like)
    }
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(directory / "params", abstract)
    return tuple(path), tuple(params[f"level_{l}"] for l in range(len(modules_like)))


def reassemble(directories, modules_like, fill=None) -> tuple:
    """The full grid from path checkpoints: module (l, j) from the first path that contains it.
    A module no checkpointed path contains comes from `fill` (a grid like `modules_like`), or is
    a UserError without it."""
    levels = [jax.tree.map(np.array, level) for level in (fill or modules_like)]
    seen = [set() for _ in levels]
    for directory in directories:
        path, params = restore_path(directory, modules_like)
        for l, (j, p) in enumerate(zip(path, params)):
            if j in seen[l]:
                continue
            seen[l].add(j)
            levels[l] = jax.tree.map(lambda a, b: _set(a, j, b), levels[l], p)
    shape = grid_shape(modules_like)
    missing = [(l, j) for l in range(len(shape)) for j in range(shape[l]) if j not in seen[l]]
    if missing and fill is None:
        raise UserError(
            f"dipaco reassemble: modules (level, index) {missing} are in no path checkpoint; "
            "pass fill= (e.g. the initial grid) or checkpoint a path that contains them"
        )
    return tuple(jax.tree.map(jnp.asarray, level) for level in levels)


def _set(a, j, b):
    a = np.array(a)
    a[j] = np.asarray(b)
    return a
