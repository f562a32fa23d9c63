"""Numerical parity with PyTorch Geometric (the `bench` extra); skipped when torch_geometric is
absent.

Same graph, the PyG layer's state dict converted by `netlab.convert.pyg` (Linear.weight [out, in]
-> Dense.kernel = Wᵀ; the layer sizes read from the state dict), dropout off: outputs must agree
to float32 round-off.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

from netlab.convert import pyg as convert
from netlab.graph import appnp, padding

torch = pytest.importorskip("torch")
pyg_nn = pytest.importorskip("torch_geometric.nn")

pytestmark = [pytest.mark.slow, pytest.mark.peers]  # importing torch takes seconds

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
    c = convert.gcn(conv.state_dict())
    np.testing.assert_allclose(run(c.module(), c.params, g), t2n(conv(x, ei)), rtol=1e-4, atol=1e-5)
    sg = pyg_nn.SGConv(F, 3, K=3)
    c = convert.sgc(sg.state_dict(), k=3)
    np.testing.assert_allclose(run(c.module(), c.params, g), t2n(sg(x, ei)), rtol=1e-4, atol=1e-5)
    ap = pyg_nn.APPNP(K=7, alpha=0.15)
    gd = padding.to_device(g)
    ours = np.asarray(appnp.APPNP(k=7, alpha=0.15).apply({}, gd, gd.nodes))[:N]
    np.testing.assert_allclose(ours, t2n(ap(x, ei)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("concat", [True, False])
def test_gat_gatv2_match_pyg(concat):
    g, x, ei = graph()
    torch.manual_seed(1)
    for cls, fn in ((pyg_nn.GATConv, convert.gat), (pyg_nn.GATv2Conv, convert.gatv2)):
        conv = cls(F, 3, heads=2, concat=concat)
        torch.nn.init.normal_(conv.bias)
        c = fn(conv.state_dict())  # concat read from the bias width
        assert c.config["concat"] == concat and c.config["heads"] == 2
        ours = run(c.module(), c.params, g)
        np.testing.assert_allclose(ours, t2n(conv(x, ei)), rtol=1e-4, atol=1e-5)


def test_gin_matches_pyg():
    g, x, ei = graph()
    torch.manual_seed(2)
    mlp = torch.nn.Sequential(torch.nn.Linear(F, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    conv = pyg_nn.GINConv(mlp, eps=0.3)
    c = convert.gin(conv.state_dict())
    assert c.config["mlp_features"] == (6, 4) and c.config["eps"] == pytest.approx(0.3)
    np.testing.assert_allclose(run(c.module(), c.params, g), t2n(conv(x, ei)), rtol=1e-4, atol=1e-5)


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
    c = convert.genconv(conv.state_dict())
    assert (c.config["norm"], c.config["learn_t"], c.config["bias"]) == (norm, True, True)
    gd = padding.to_device(g)
    ours = np.asarray(c.module().apply(c.all_variables(), gd, gd.nodes))[:N]
    np.testing.assert_allclose(ours, t2n(conv(x, ei)), rtol=1e-4, atol=1e-5)
