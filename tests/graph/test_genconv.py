"""GENConv against a numpy float64 transcription of PyG's ``GENConv.forward``
(``torch_geometric/nn/conv/gen_conv.py`` as of PyG 2.5): separate ``lin_src`` / ``lin_dst``
projections when the widths differ, softmax aggregation with a learnable t, MsgNorm of the
unprojected input, and the MLP's norm (batch / layer / instance / none) and bias options. All
weights are non-default (shifted) and the layer runs in float64, so agreement is to 1e-12.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.graph import deepergcn, padding

N, F_IN, F_OUT = 9, 5, 4


def graph64(n_pad=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F_IN))
    g = padding.from_edges(
        rng.integers(0, N, 24),
        rng.integers(0, N, 24),
        N,
        nodes=x,
        symmetrize=True,
        budget=padding.Budget(N + n_pad, 64, 2),
        dtype=np.float64,
    )
    return g, x


def shifted(params):
    """Every parameter moved off its initial value (zero biases, unit scales, t = 1 included)."""
    return jax.tree.map(
        lambda v: v + 0.3 + 0.2 * jnp.arange(v.size, dtype=v.dtype).reshape(v.shape) / v.size,
        params,
    )


def lin(v, q):
    return v @ q["kernel"] + (q["bias"] if "bias" in q else 0.0)


def pyg_genconv(x, senders, receivers, p, stats, *, t, msg_norm, norm, train, layers):
    """PyG GENConv.forward for x = (x, x), softmax aggregation, no edge features; also returns
    BatchNorm1d's updated running averages (momentum 0.1, unbiased variance) when training."""
    src = lin(x, p["lin_src"]) if "lin_src" in p else x
    msg = np.maximum(src[senders], 0.0) + 1e-7  # message(): relu(x_j) + eps
    out = np.zeros((len(x), msg.shape[1]))
    for i in range(len(x)):  # SoftmaxAggregation: softmax(t · m) over incoming edges, then sum
        m = msg[receivers == i]
        if len(m):
            a = np.exp(t * m - (t * m).max(0))
            out[i] = (a / a.sum(0) * m).sum(0)
    if msg_norm:  # MessageNorm(x[1], out): the unprojected target features
        scale = p["msg_norm"]["scale"] if "msg_norm" in p else 1.0
        unit = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        out = unit * np.linalg.norm(x, axis=-1, keepdims=True) * scale
    h = out + (lin(x, p["lin_dst"]) if "lin_dst" in p else x)
    new_stats = {}
    for k in range(layers):  # gen_conv.MLP: Linear, then norm, ReLU (Dropout 0) between
        h = lin(h, p["mlp"][f"lin{k}"])
        if k == layers - 1:
            break
        q = p["mlp"].get(f"norm{k}", {})
        if norm == "batch":  # BatchNorm1d(affine=True)
            if train:
                mu, var = h.mean(0), h.var(0)
                old = stats[f"norm{k}"]
                new_stats[f"norm{k}"] = {
                    "mean": 0.9 * old["mean"] + 0.1 * mu,
                    "var": 0.9 * old["var"] + 0.1 * h.var(0, ddof=1),
                }
            else:
                mu, var = stats[f"norm{k}"]["mean"], stats[f"norm{k}"]["var"]
            h = (h - mu) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]
        elif norm in ("layer", "instance"):  # LayerNorm(C) / InstanceNorm1d on a 2-D input
            h = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + 1e-5)
            if norm == "layer":
                h = h * q["scale"] + q["bias"]
        h = np.maximum(h, 0.0)
    return h, new_stats


CASES = [
    # (norm, bias, msg_norm, learn_msg_scale, train, mlp layers)
    ("batch", False, False, False, True, 2),  # PyG's defaults, training statistics
    ("batch", True, True, True, False, 2),  # running statistics
    ("layer", True, True, False, False, 3),
    ("instance", False, False, False, False, 2),
    ("none", True, True, True, False, 1),
]


@pytest.mark.parametrize("norm,bias,msg_norm,learn_scale,train,layers", CASES)
def test_genconv_matches_pyg_transcription_float64(
    norm, bias, msg_norm, learn_scale, train, layers
):
    with jax.enable_x64(True):
        g, x = graph64()
        gd = padding.to_device(g)
        layer = deepergcn.GENConv(
            F_OUT,
            t=0.8,
            learn_t=True,
            msg_norm=msg_norm,
            learn_msg_scale=learn_scale,
            norm=norm,
            bias=bias,
            num_mlp_layers=layers,
            dtype=jnp.float64,
            param_dtype=jnp.float64,
        )
        variables = nn.unbox(layer.init(jax.random.key(0), gd, gd.nodes))
        params = shifted(variables["params"])
        stats = jax.tree.map(lambda v: v + 0.5, variables.get("batch_stats", {}))
        out, upd = layer.apply(
            {"params": params, "batch_stats": stats},
            gd,
            gd.nodes,
            train=train,
            mutable=["batch_stats"],
        )
    p = jax.tree.map(np.asarray, params)
    st = jax.tree.map(np.asarray, stats)
    # separate projections for messages and root; bias only where asked
    assert {"lin_src", "lin_dst"} <= set(p)
    assert not np.allclose(p["lin_src"]["kernel"], p["lin_dst"]["kernel"])
    assert ("bias" in p["lin_src"]) == bias and ("bias" in p["mlp"]["lin0"]) == bias
    m = g.edge_mask
    expect, expect_stats = pyg_genconv(
        x,
        g.senders[m],
        g.receivers[m],
        p,
        st.get("mlp", {}),
        t=float(p["t"]),
        msg_norm=msg_norm,
        norm=norm,
        train=train,
        layers=layers,
    )
    out = np.asarray(out)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[:N], expect, rtol=1e-12, atol=1e-12)
    if norm == "batch" and train:
        new = jax.tree.map(np.asarray, upd["batch_stats"])["mlp"]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), new, expect_stats)


def test_genconv_same_width_has_no_projection():
    """in_channels == out_channels: PyG creates neither lin_src nor lin_dst."""
    with jax.enable_x64(True):
        g, _ = graph64()
        gd = padding.to_device(g)
        params = deepergcn.GENConv(F_IN, norm="none").init(jax.random.key(0), gd, gd.nodes)
    assert set(params["params"]) == {"mlp"}


def test_genconv_batch_statistics_ignore_padding_rows():
    """norm='batch' in training: extra padding nodes carrying garbage change no real output and
    no running average."""
    outs = []
    for n_pad in (1, 9):
        g, _ = graph64(n_pad)
        nodes = np.asarray(g.nodes, np.float32).copy()
        nodes[N:] = 50.0
        g = g.replace(nodes=nodes, edge_weight=np.asarray(g.edge_weight, np.float32))
        gd = padding.to_device(g)
        layer = deepergcn.GENConv(F_OUT, norm="batch")
        v = nn.unbox(layer.init(jax.random.key(0), gd, gd.nodes))
        out, upd = layer.apply(v, gd, gd.nodes, train=True, mutable=["batch_stats"])
        outs.append((np.asarray(out)[:N], jax.tree.map(np.asarray, upd)))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), outs[0][1], outs[1][1]
    )
