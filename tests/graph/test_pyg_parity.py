"""Numerical parity with PyTorch Geometric (the `bench` extra); skipped when torch_geometric is
absent.

Same graph, PyG weights copied into the linen parameters
(Linear.weight [out, in] -> Dense.kernel = Wᵀ),
dropout off: outputs must agree to float32 round-off.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

from netlab.graph import appnp, deepergcn, gat, gatv2, gcn, gin, padding, sgc

torch = pytest.importorskip("torch")
pyg_nn = pytest.importorskip("torch_geometric.nn")

pytestmark = pytest.mark.slow  # importing torch takes seconds

N, F = 13, 5


def graph():
    rng = np.random.default_rng(0)
    g = padding.from_edges(
        rng.integers(0, N, 40),
        rng.integers(0, N, 40),
        N,
        nodes=rng.normal(size=(N, F)).astype(np.float32),
        symmetrize=True,
        budget=padding.Budget(N + 3, 96, 2),
    )
    m = g.edge_mask
    ei = torch.from_numpy(np.stack([g.senders[m], g.receivers[m]]).astype(np.int64))
    return g, torch.from_numpy(np.asarray(g.nodes)[:N]), ei


def t2n(t):
    return np.asarray(t.detach().numpy())


def lin(m):
    d = {"kernel": t2n(m.weight).T}
    if getattr(m, "bias", None) is not None:
        d["bias"] = t2n(m.bias)
    return d


def run(layer, params, g):
    gd = padding.to_device(g)
    shapes = nn.unbox(layer.init(jax.random.key(0), gd, gd.nodes))["params"]
    jax.tree.map(
        lambda a, b: None if a.shape == np.shape(b) else pytest.fail(f"{a.shape} vs {np.shape(b)}"),
        shapes,
        params,
    )
    return np.asarray(layer.apply({"params": params}, gd, gd.nodes))[:N]


def test_gcn_sgc_appnp_match_pyg():
    g, x, ei = graph()
    torch.manual_seed(0)
    conv = pyg_nn.GCNConv(F, 4)
    torch.nn.init.normal_(conv.bias)
    ours = run(
        gcn.GCNConv(4), {"lin": {"kernel": t2n(conv.lin.weight).T}, "bias": t2n(conv.bias)}, g
    )
    np.testing.assert_allclose(ours, t2n(conv(x, ei)), rtol=1e-4, atol=1e-5)
    sg = pyg_nn.SGConv(F, 3, K=3)
    np.testing.assert_allclose(
        run(sgc.SGConv(3, k=3), {"lin": lin(sg.lin)}, g), t2n(sg(x, ei)), rtol=1e-4, atol=1e-5
    )
    ap = pyg_nn.APPNP(K=7, alpha=0.15)
    gd = padding.to_device(g)
    ours = np.asarray(appnp.APPNP(k=7, alpha=0.15).apply({}, gd, gd.nodes))[:N]
    np.testing.assert_allclose(ours, t2n(ap(x, ei)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("concat", [True, False])
def test_gat_gatv2_match_pyg(concat):
    g, x, ei = graph()
    torch.manual_seed(1)
    conv = pyg_nn.GATConv(F, 3, heads=2, concat=concat)
    torch.nn.init.normal_(conv.bias)
    p = {
        "lin": lin(conv.lin),
        "att_src": t2n(conv.att_src),
        "att_dst": t2n(conv.att_dst),
        "bias": t2n(conv.bias),
    }
    np.testing.assert_allclose(
        run(gat.GATConv(3, 2, concat=concat), p, g), t2n(conv(x, ei)), rtol=1e-4, atol=1e-5
    )
    conv2 = pyg_nn.GATv2Conv(F, 3, heads=2, concat=concat)
    torch.nn.init.normal_(conv2.bias)
    p2 = {
        "lin_l": lin(conv2.lin_l),
        "lin_r": lin(conv2.lin_r),
        "att": t2n(conv2.att),
        "bias": t2n(conv2.bias),
    }
    np.testing.assert_allclose(
        run(gatv2.GATv2Conv(3, 2, concat=concat), p2, g), t2n(conv2(x, ei)), rtol=1e-4, atol=1e-5
    )


def test_gin_matches_pyg():
    g, x, ei = graph()
    torch.manual_seed(2)
    mlp = torch.nn.Sequential(torch.nn.Linear(F, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    conv = pyg_nn.GINConv(mlp, eps=0.3)
    p = {"mlp": {"lin0": lin(mlp[0]), "lin1": lin(mlp[2])}}
    np.testing.assert_allclose(
        run(gin.GINConv((6, 4), eps=0.3), p, g), t2n(conv(x, ei)), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_genconv_matches_pyg(norm):
    """GENConv(5 -> 4): separate lin_src / lin_dst, learnable t, MsgNorm, MLP norm and bias;
    BatchNorm in eval mode with non-trivial running statistics."""
    g, x, ei = graph()
    torch.manual_seed(3)
    conv = pyg_nn.GENConv(
        F, 4, learn_t=True, t=0.7, msg_norm=True, learn_msg_scale=True, norm=norm, bias=True
    )
    bn = conv.mlp[1]
    with torch.no_grad():
        conv.msg_norm.scale.fill_(1.3)
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
        if norm == "batch":
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    conv.eval()
    mlp = {"lin0": lin(conv.mlp[0]), "lin1": lin(conv.mlp[4])}
    mlp["norm0"] = {"scale": t2n(bn.weight), "bias": t2n(bn.bias)}
    params = {
        "lin_src": lin(conv.lin_src),
        "lin_dst": lin(conv.lin_dst),
        "t": t2n(conv.aggr_module.t).reshape(()),
        "msg_norm": {"scale": t2n(conv.msg_norm.scale)},
        "mlp": mlp,
    }
    layer = deepergcn.GENConv(
        4, learn_t=True, msg_norm=True, learn_msg_scale=True, norm=norm, bias=True
    )
    gd = padding.to_device(g)
    variables = {"params": params}
    if norm == "batch":
        variables["batch_stats"] = {
            "mlp": {"norm0": {"mean": t2n(bn.running_mean), "var": t2n(bn.running_var)}}
        }
    ours = np.asarray(layer.apply(variables, gd, gd.nodes))[:N]
    np.testing.assert_allclose(ours, t2n(conv(x, ei)), rtol=1e-4, atol=1e-5)
