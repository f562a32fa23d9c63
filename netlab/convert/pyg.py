"""PyTorch Geometric layer state dicts -> netlab's GNN layers (`netlab.graph`).

Each function takes one PyG layer's `state_dict()` (keys as PyG 2.5-2.8 name them) and returns a
`core.Converted` whose `module()` is the netlab layer with exactly these parameters. Linear maps
are transposed (torch `Linear.weight` is [out, in], a flax `Dense.kernel` is [in, out]); attention
vectors keep their (1, heads, channels) shape. The layer sizes come from the state dict; settings
it does not hold (SGConv's K, GENConv's aggregation and a fixed temperature) are arguments with
PyG's defaults, and the result's `notes` say which ones the user must match.

What does not map, each a one-line error: GATConv / GATv2Conv with edge features or a residual
map, a bipartite GATConv, GINConv whose MLP has normalisation layers (netlab's GIN MLP is
Linear-ReLU-...-Linear), GENConv's power-mean aggregation.
"""

from __future__ import annotations

import numpy as np

from netlab.convert.core import Converted, Keys, linear
from netlab.errors import UserError

FIX = "pass the state_dict() of the PyG layer this converter names (python -m netlab.convert list)"


def _keys(sd, cls):
    return Keys(sd, f"PyG {cls} state dict", FIX)


def _refuse(keys, cls, names, why):
    for name in names:
        if any(k == name or k.startswith(name + ".") for k in keys.sd):
            raise UserError(f"PyG {cls} state dict: key {name!r}: {why}; netlab's layer has none")


def gcn(state_dict, *, add_self_loops: bool = True) -> Converted:
    """`GCNConv(in, out)` -> `netlab.graph.gcn.GCNConv` (PyG's default normalize=True,
    improved=False)."""
    k = _keys(state_dict, "GCNConv")
    params = {"lin": linear(k, "lin", bias=False)}
    out = params["lin"]["kernel"].shape[1]
    if "bias" in k:
        params["bias"] = k.take("bias", (out,))
    k.done()
    config = dict(features=out, use_bias="bias" in params, add_self_loops=add_self_loops)
    return Converted(params, "netlab.graph.gcn:GCNConv", config)


def sgc(state_dict, *, k: int = 1) -> Converted:
    """`SGConv(in, out, K)` -> `netlab.graph.sgc.SGConv`; `k` is PyG's K (default 1), which the
    state dict does not hold."""
    keys = _keys(state_dict, "SGConv")
    params = {"lin": linear(keys, "lin", bias="lin.bias" in keys)}
    keys.done()
    config = dict(
        features=params["lin"]["kernel"].shape[1], k=int(k), use_bias="bias" in params["lin"]
    )
    notes = (f"k={k} is PyG's K, which a state dict does not hold; pass the layer's own K",)
    return Converted(params, "netlab.graph.sgc:SGConv", config, notes=notes)


def _heads_out(keys, att_key, cls):
    shape = keys.shape(att_key)
    if len(shape) != 3 or shape[0] != 1:
        keys.take(att_key, (1, None, None))
    return shape[1], shape[2]


def _concat(keys, heads, channels, concat):
    """concat from the bias width (heads*channels or channels); True when there is no bias."""
    if "bias" not in keys:
        return True if concat is None else bool(concat)
    width = keys.shape("bias")[0]
    if concat is None:
        concat = width == heads * channels
    keys.take("bias", ((heads * channels) if concat else channels,))
    return bool(concat)


def gat(state_dict, *, negative_slope: float = 0.2, add_self_loops: bool = True, concat=None):
    """`GATConv(in, out, heads)` -> `netlab.graph.gat.GATConv`. `concat` is read from the bias
    width when None."""
    k = _keys(state_dict, "GATConv")
    _refuse(k, "GATConv", ("lin_src", "lin_dst"), "a bipartite (src, dst) layer")
    _refuse(k, "GATConv", ("lin_edge", "att_edge"), "edge features")
    _refuse(k, "GATConv", ("res",), "a residual map")
    heads, ch = _heads_out(k, "att_src", "GATConv")
    params = {
        "lin": linear(k, "lin", heads * ch, None, bias=False),
        "att_src": k.take("att_src", (1, heads, ch)),
        "att_dst": k.take("att_dst", (1, heads, ch)),
    }
    concat = _concat(k, heads, ch, concat)
    if "bias" in k:
        params["bias"] = k.take("bias")
    k.done()
    config = dict(
        features=ch,
        heads=heads,
        concat=concat,
        negative_slope=negative_slope,
        add_self_loops=add_self_loops,
        use_bias="bias" in params,
    )
    return Converted(params, "netlab.graph.gat:GATConv", config)


def gatv2(state_dict, *, negative_slope: float = 0.2, add_self_loops: bool = True, concat=None):
    """`GATv2Conv(in, out, heads)` -> `netlab.graph.gatv2.GATv2Conv` (share_weights=True stores
    lin_r as a copy of lin_l, so it converts too). With PyG's bias=False the linear maps have no
    bias: netlab's get zero biases, the same function."""
    k = _keys(state_dict, "GATv2Conv")
    _refuse(k, "GATv2Conv", ("lin_edge",), "edge features")
    _refuse(k, "GATv2Conv", ("res",), "a residual map")
    heads, ch = _heads_out(k, "att", "GATv2Conv")
    params = {}
    for name in ("lin_l", "lin_r"):
        params[name] = linear(k, name, heads * ch, None)
        params[name].setdefault("bias", np.zeros((heads * ch,), np.float32))
    params["att"] = k.take("att", (1, heads, ch))
    concat = _concat(k, heads, ch, concat)
    if "bias" in k:
        params["bias"] = k.take("bias")
    k.done()
    config = dict(
        features=ch,
        heads=heads,
        concat=concat,
        negative_slope=negative_slope,
        add_self_loops=add_self_loops,
        use_bias="bias" in params,
    )
    return Converted(params, "netlab.graph.gatv2:GATv2Conv", config)


def _sequential(keys, prefix, cls):
    """[(index, kind)] of a torch Sequential's parameterised children: 'linear', 'batch' or
    'layer', in order."""
    found = {}
    for key in keys.prefixed(prefix + "."):
        idx, _, leaf = key[len(prefix) + 1 :].partition(".")
        if not idx.isdigit():
            raise UserError(f"PyG {cls} state dict: key {key!r} is not a Sequential child; {FIX}")
        if leaf == "weight":
            found[int(idx)] = "linear" if len(keys.shape(key)) == 2 else "layer"
        if leaf == "running_mean":
            found[int(idx)] = "batch"
    return sorted(found.items())


def gin(state_dict, *, train_eps: bool = False) -> Converted:
    """`GINConv(Sequential(Linear, ReLU, ..., Linear))` -> `netlab.graph.gin.GINConv`; eps is
    read from the state dict (PyG stores it as a buffer, or a parameter with train_eps)."""
    k = _keys(state_dict, "GINConv")
    layers = _sequential(k, "nn", "GINConv")
    for idx, kind in layers:
        if kind != "linear":
            raise UserError(
                f"PyG GINConv state dict: key 'nn.{idx}.weight' is a {kind} norm; netlab's "
                "GINConv MLP is Linear-ReLU-...-Linear, without normalisation"
            )
    if not layers:
        k.take("nn.0.weight")
    mlp, widths = {}, []
    for i, (idx, _) in enumerate(layers):
        d = linear(k, f"nn.{idx}", None, widths[-1] if widths else None)
        d.setdefault("bias", np.zeros((d["kernel"].shape[1],), np.float32))
        mlp[f"lin{i}"] = d
        widths.append(d["kernel"].shape[1])
    eps = float(k.take("eps", (1,))[0]) if "eps" in k else 0.0
    k.done()
    params = {"mlp": mlp}
    if train_eps:
        params["eps"] = np.asarray(eps, np.float32)
    config = dict(mlp_features=tuple(widths), eps=eps, train_eps=bool(train_eps))
    notes = ("the MLP's activations are taken to be ReLU (a state dict does not name them)",)
    return Converted(params, "netlab.graph.gin:GINConv", config, notes=notes)


def genconv(
    state_dict, *, aggr: str = "softmax", t: float = 1.0, msg_norm=None, norm=None, eps=1e-7
) -> Converted:
    """`GENConv(in, out, ...)` -> `netlab.graph.deepergcn.GENConv`. From the state dict: widths,
    bias, learn_t (with t), learn_msg_scale, the MLP's norm ('batch' with its running statistics
    in `variables["batch_stats"]`, 'layer'; a gap without keys is 'instance'). Not in it: `aggr`
    (PyG's default 'softmax'), a fixed `t`, `msg_norm` without a learnable scale, `eps`."""
    k = _keys(state_dict, "GENConv")
    _refuse(k, "GENConv", ("aggr_module.p",), "power-mean aggregation")
    layers = _sequential(k, "mlp", "GENConv")
    lins = [idx for idx, kind in layers if kind == "linear"]
    norms = {idx: kind for idx, kind in layers if kind != "linear"}
    if not lins:
        k.take("mlp.0.weight")
    if norm is None:
        gap = lins[1] - lins[0] if len(lins) > 1 else 3
        norm = norms.get(lins[0] + 1, "instance" if gap == 4 else "none")
    features = k.shape(f"mlp.{lins[-1]}.weight")[0]
    bias = f"mlp.{lins[0]}.bias" in k
    params, stats, mlp = {}, {}, {}
    for name in ("lin_src", "lin_dst", "lin_edge"):
        if f"{name}.weight" in k:
            params[name] = linear(k, name, features, None, bias=bias)
    widths = []
    for i, idx in enumerate(lins):
        mlp[f"lin{i}"] = linear(k, f"mlp.{idx}", None, widths[-1] if widths else None, bias=bias)
        widths.append(mlp[f"lin{i}"]["kernel"].shape[1])
        if i < len(lins) - 1 and norm in ("batch", "layer"):
            p = f"mlp.{idx + 1}"
            mlp[f"norm{i}"] = {
                "scale": k.take(f"{p}.weight", (widths[-1],)),
                "bias": k.take(f"{p}.bias", (widths[-1],)),
            }
            if norm == "batch":
                stats[f"norm{i}"] = {
                    "mean": k.take(f"{p}.running_mean", (widths[-1],)),
                    "var": k.take(f"{p}.running_var", (widths[-1],)),
                }
    params["mlp"] = mlp
    expansion = widths[0] // features if len(widths) > 1 else 2
    if any(w != expansion * features for w in widths[:-1]):
        raise UserError(
            f"PyG GENConv state dict: MLP widths {widths}; netlab's GENConv needs every hidden "
            f"width equal to expansion x {features}"
        )
    learn_t = "aggr_module.t" in k
    if learn_t:
        t = float(k.take("aggr_module.t", (1,))[0])
        params["t"] = np.asarray(t, np.float32)
    learn_scale = "msg_norm.scale" in k
    if learn_scale:
        params["msg_norm"] = {"scale": k.take("msg_norm.scale", (1,))}
    k.done()
    config = dict(
        features=features,
        aggr=aggr,
        t=t,
        learn_t=learn_t,
        msg_norm=bool(learn_scale or msg_norm),
        learn_msg_scale=learn_scale,
        norm=norm,
        num_mlp_layers=len(widths),
        expansion=expansion,
        eps=eps,
        bias=bias,
    )
    notes = []
    if not learn_scale and msg_norm is None:
        notes.append("msg_norm without a learnable scale leaves no key: pass msg_norm=True if used")
    if not learn_t:
        notes.append(f"t={t} is fixed (not learned) and not in the state dict: pass PyG's t")
    variables = {"batch_stats": {"mlp": stats}} if stats else {}
    return Converted(params, "netlab.graph.deepergcn:GENConv", config, variables, tuple(notes))


# kind -> converter, for `python -m netlab.convert` (the names of the PyG classes, lower case).
CONVERTERS = {
    "pyg.gcnconv": gcn,
    "pyg.sgconv": sgc,
    "pyg.gatconv": gat,
    "pyg.gatv2conv": gatv2,
    "pyg.ginconv": gin,
    "pyg.genconv": genconv,
}
