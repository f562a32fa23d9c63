"""PyG converters on what does not fit: one line naming the key, the shapes and the fix; and the
settings a state dict does not hold but its layout shows (the outputs are compared with PyG in
tests/graph/test_pyg_parity.py, which converts with these functions)."""

import pytest

from netlab.convert import pyg as convert
from netlab.errors import UserError

pytestmark = pytest.mark.peers


def one_line(fn, sd, text, **kw):
    with pytest.raises(UserError) as e:
        fn(sd, **kw)
    assert text in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_bad_pyg_state_dicts_are_one_line(peers):
    torch, _, tg = peers
    gcn = tg.nn.GCNConv(5, 4).state_dict()
    one_line(
        convert.gcn, {"bias": gcn["bias"]}, "PyG GCNConv state dict: key 'lin.weight' is missing"
    )
    gat = dict(tg.nn.GATConv(5, 3, heads=2).state_dict())
    gat["att_dst"] = gat["att_dst"][:, :1]
    one_line(convert.gat, gat, "key 'att_dst' has shape (1, 1, 3), expected (1, 2, 3)")
    gat = dict(tg.nn.GATConv(5, 3, heads=2, edge_dim=2).state_dict())
    one_line(convert.gat, gat, "key 'lin_edge': edge features")
    seq = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 4))
    one_line(convert.gin, tg.nn.GINConv(seq).state_dict(), "key 'nn.1.weight' is a batch norm")
    sg = {**tg.nn.SGConv(5, 3).state_dict(), "lin.extra": torch.zeros(1)}
    one_line(convert.sgc, sg, "unexpected key 'lin.extra'")
    gen = tg.nn.GENConv(5, 4, aggr="powermean", learn_p=True).state_dict()
    one_line(convert.genconv, gen, "key 'aggr_module.p': power-mean aggregation")


def test_genconv_norm_and_flags_from_the_layout(peers):
    tg = peers[2]
    for norm in ("batch", "layer", "instance", None):
        conv = tg.nn.GENConv(4, 4, norm=norm, num_layers=3, expansion=3)
        c = convert.genconv(conv.state_dict())
        assert c.config["norm"] == (norm or "none")
        assert (c.config["num_mlp_layers"], c.config["expansion"]) == (3, 3)
        assert "lin_src" not in c.params and bool(c.variables) == (norm == "batch")
    c = convert.genconv(tg.nn.GENConv(5, 4).state_dict(), t=0.5)
    assert c.config["t"] == 0.5 and not c.config["learn_t"] and any("t=0.5" in n for n in c.notes)


def test_netlab_convert_imports_no_torch_at_module_level():
    """`import netlab.convert` works without the peers: torch only inside functions."""
    import ast
    import pathlib

    for path in sorted(pathlib.Path(convert.__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(
                n.split(".")[0] in ("torch", "diffusers", "torch_geometric") for n in names
            ), path
