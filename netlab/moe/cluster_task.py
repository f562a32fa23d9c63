"""The cluster task of Chen, Deng, Wu, Gu & Li 2022, "Towards Understanding Mixture of Experts in
Deep Learning" (NeurIPS, arXiv 2208.02813), Sec. 3-4: data on which a mixture of nonlinear experts
succeeds, the router learns to dispatch by cluster, and a single expert fails.

Data (Definition 3.1): K clusters, each with a cluster-centre vector c_k and a signal vector v_k
(all 2K orthonormal in R^d). An example of cluster k with label y in {-1, +1} has P patches, in a
random order: the signal alpha y v_k, the cluster centre beta c_k, feature noise gamma eps v_k'
(another cluster's signal, k' != k, eps = +-1 independent of y) and Gaussian noise N(0, I / d) for
the rest; alpha ~ U(0.5, 2), beta ~ U(1, 2), gamma ~ U(0.5, 3) per example (the authors' setting
1: K = 4, P = 4, d = 50). Feature noise can be stronger than the signal, so one expert that has
learned every v_k is fooled by it; an expert that serves one cluster only has learned the
signal of that cluster, orthogonal to the feature noise.

Model (Sec. 3): M experts, each a two-layer CNN with cubic activation summed over patches and its
J filters, f_m(x) = sum_j sum_p <w_{m,j}, x_p>^3; a linear router on the summed patches,
h_m(x) = sum_p <theta_m, x_p>, zero-initialised; top-1 routing (argmax of h plus U[0, 1) noise in
training, none at test) and output F(x) = pi_m*(x) f_m*(x), pi = softmax(h); logistic loss.
Training (Sec. 4): full-batch normalised gradient descent on each expert's filters (the step
divided by that expert's gradient norm) and plain gradient descent on the router.
`bench/moe_cluster.py` trains it and reports router-cluster agreement and test error against a
single expert.

Pure functions on a params dict {"w": (M, J, d), "theta": (M, d)}; nothing here is registered.
"""

import jax
import jax.numpy as jnp
import numpy as np

from netlab.errors import UserError


def make_data(rng: np.random.Generator, n: int, k: int = 4, p: int = 4, d: int = 50, basis=None):
    """n examples: {"x": (n, P, d) float32, "y": (n,) +-1, "cluster": (n,)}, and the basis
    {"v": (K, d) signals, "c": (K, d) centres} (pass `basis` to draw a test set from the same
    clusters)."""
    if k < 2 or p < 3 or d < 2 * k:
        raise UserError(
            f"cluster task k={k}, p={p}, d={d}: needs k >= 2 clusters, p >= 3 patches (signal, "
            "centre, feature noise) and d >= 2k for orthonormal signals and centres"
        )
    if basis is None:
        q, _ = np.linalg.qr(rng.normal(size=(d, 2 * k)))
        basis = {"v": q[:, :k].T, "c": q[:, k:].T}
    cluster = rng.integers(0, k, n)
    y = rng.choice([-1.0, 1.0], n)
    alpha, beta, gamma = rng.uniform(0.5, 2, n), rng.uniform(1, 2, n), rng.uniform(0.5, 3, n)
    other = (cluster + rng.integers(1, k, n)) % k  # k' != k
    eps = rng.choice([-1.0, 1.0], n)
    patches = rng.normal(scale=1 / np.sqrt(d), size=(n, p, d))
    patches[:, 0] = (alpha * y)[:, None] * basis["v"][cluster]
    patches[:, 1] = beta[:, None] * basis["c"][cluster]
    patches[:, 2] = (gamma * eps)[:, None] * basis["v"][other]
    order = np.argsort(rng.random((n, p)), axis=1)
    x = np.take_along_axis(patches, order[:, :, None], axis=1)
    return {"x": x.astype(np.float32), "y": y.astype(np.float32), "cluster": cluster}, basis


def init(key, num_experts: int, filters: int, d: int, init_std: float = 0.01) -> dict:
    return {
        "w": init_std * jax.random.normal(key, (num_experts, filters, d)),
        "theta": jnp.zeros((num_experts, d)),
    }


def forward(params, x, noise=None):
    """(F (n,), chosen expert (n,)): top-1 on h + noise; `noise` (n, M) or None (test time)."""
    h = jnp.einsum("npd,md->nm", x, params["theta"])
    f = jnp.sum(jnp.einsum("npd,mjd->nmjp", x, params["w"]) ** 3, axis=(2, 3))  # every expert
    chosen = jnp.argmax(h if noise is None else h + noise, axis=-1)
    out = jnp.take_along_axis(jax.nn.softmax(h, -1) * f, chosen[:, None], axis=1)[:, 0]
    return out, chosen


_test_forward = jax.jit(lambda params, x: forward(params, x))


def loss(params, x, y, noise=None):
    return jnp.mean(jax.nn.softplus(-y * forward(params, x, noise)[0]))


def train(params, x, y, key, steps: int, expert_lr: float = 1e-3, router_lr: float = 0.1):
    """`steps` full-batch steps: normalised GD on each expert's filters, GD on the router."""

    def step(params, key):
        noise = jax.random.uniform(key, (x.shape[0], params["theta"].shape[0]))
        g = jax.grad(loss)(params, x, y, noise)
        norm = jnp.sqrt(jnp.sum(g["w"] ** 2, axis=(1, 2), keepdims=True))
        return {
            "w": params["w"] - expert_lr * g["w"] / jnp.maximum(norm, 1e-12),
            "theta": params["theta"] - router_lr * g["theta"],
        }, None

    return jax.lax.scan(step, params, jax.random.split(key, steps))[0]


def evaluate(params, data, num_clusters: int) -> dict:
    """Test error (sign of F, no routing noise) and router-cluster agreement: the share of
    examples sent to their cluster's most frequent expert, and how many distinct experts those
    are (K when every cluster has its own)."""
    out, chosen = _test_forward(params, jnp.asarray(data["x"]))
    out, chosen = np.asarray(out), np.asarray(chosen)
    error = float(np.mean(np.sign(out) != data["y"]))
    majority, agree = [], 0
    for k in range(num_clusters):
        picks = chosen[data["cluster"] == k]
        top = np.bincount(picks, minlength=params["w"].shape[0]).argmax()
        majority.append(int(top))
        agree += int(np.sum(picks == top))
    return {
        "error": error,
        "agreement": agree / len(chosen),
        "distinct_experts": len(set(majority)),
    }
