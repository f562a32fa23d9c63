"""Random model parameters drawn on the host for the graph tests: the jitted programs then hold
only the forward pass (no RNG initialisers to compile)."""

import flax.linen as nn
import jax
import numpy as np


def random_params(model, g, seed=0, **kw):
    """Parameters drawn on the host (numpy normals, LeCun scale) in the shapes ``model.init`` gives:
    the jitted program holds only the forward pass (no RNG initialisers to compile)."""
    shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), g, g.nodes, **kw)))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        z = rng.normal(size=s.shape)
        if len(s.shape) >= 2:  # kernels, embeddings: LeCun-normal scale
            return (z / np.sqrt(s.shape[-2])).astype(s.dtype)
        scale = "scale" in jax.tree_util.keystr(path)  # LayerNorm gains around 1
        return (scale + 0.1 * z).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)
