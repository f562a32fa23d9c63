"""DiT weights -> `netlab.diffusion.dit.DiT`: diffusers' `DiTTransformer2DModel` and the original
DiT's `.pt` state dicts (Peebles & Xie 2023, facebookresearch/DiT `models.py` key names).

Both are the same network as netlab's DiT (patchify conv, fixed 2-D sin-cos positions, timestep
MLP on 256 sinusoidal features [cos, sin], class table with a last "null" row, adaLN-Zero blocks
with 6 chunks shift/scale/gate x 2, tanh-GELU MLP, final adaLN shift/scale + linear), with three
differences, each handled exactly:

- Position embedding: DiT's table puts the column coordinate's sin-cos features in the first half
  of the channels (MAE's `meshgrid(grid_w, grid_h)`), netlab's `layers.sincos_2d` the row's. The
  converter rolls every residual-stream channel axis by width/2 (patchify output, attention
  input/output, MLP input/output, modulation chunks, final input) — a permutation, so the function
  is unchanged and the result is exact.
- diffusers' port: timestep frequencies 10000^(-i/127) (`downscale_freq_shift=1`; the original
  uses i/128) and LayerNorm eps 1e-5 before the MLP (`norm_eps`; the original 1e-6): the result
  sets DiT's `freq_shift=1.0` and `mlp_norm_eps=norm_eps`.
- diffusers stores one timestep/label embedder per block (`transformer_blocks.i.norm1.emb`, exact
  copies in converted checkpoints); netlab's DiT shares one, so they must be equal.

Learned sigma (2C output channels): netlab's samplers use the eps prediction only and its DiT has
no variance head, so the converter keeps the first C output channels of the final linear map
(exact for eps). The network is
conditioned on integer DDPM timesteps: sample with `parameterization.timestep_denoiser` on
`schedules.Schedule("linear")` (DiT's 1000-step linear betas).
"""

from __future__ import annotations

import numpy as np

from netlab.convert.core import Converted, Keys, linear
from netlab.diffusion.dit import PRESETS
from netlab.errors import UserError

FIX = "give a diffusers DiTTransformer2DModel or an original DiT state dict"


def _roll(x, axis, chunks=1):
    """Source channel order -> netlab's: each of `chunks` blocks of `axis` rolled by half."""
    parts = np.split(x, chunks, axis=axis)
    return np.concatenate([np.roll(p, -(p.shape[axis] // 2), axis=axis) for p in parts], axis)


def _out(d, chunks=1):
    """A Dense writing the residual stream (or its modulation chunks): permute outputs."""
    out = {"kernel": _roll(d["kernel"], 1, chunks)}
    if "bias" in d:
        out["bias"] = _roll(d["bias"], 0, chunks)
    return out


def _in(d):
    """A Dense reading the residual stream: permute inputs."""
    return {**d, "kernel": _roll(d["kernel"], 0)}


def _attention(qkv_w, qkv_b, out, heads):
    """q, k, v weights [3D (q;k;v, heads-major), D] and out projection -> netlab `Attention`."""
    d = qkv_w.shape[1]
    hd = d // heads
    return {
        "qkv": _roll(qkv_w.reshape(3, heads, hd, d).transpose(3, 0, 1, 2), 0),
        "qkv_bias": qkv_b.reshape(3, heads, hd),
        "out": _roll(out["kernel"].reshape(heads, hd, d), 2),
        "out_bias": _roll(out["bias"], 0),
    }


def _final(d, patch, channels, keep):
    """The final linear map [D, p*p*C_out] with outputs (p, q, c): keep the first `keep`
    channels (the eps half of a learned-sigma model)."""
    k = d["kernel"].reshape(-1, patch, patch, channels)[..., :keep]
    b = d["bias"].reshape(patch, patch, channels)[..., :keep]
    return _in({"kernel": k.reshape(k.shape[0], -1), "bias": b.reshape(-1)})


def _assemble(keys, g, blocks, heads, out_ch, in_ch):
    """netlab params from the pieces every format has: `g` maps role -> key prefix."""
    w = keys.take(g["patch"] + ".weight", (None, in_ch, None, None))
    width, patch = w.shape[0], w.shape[2]
    if width % heads or width % 4:
        raise UserError(
            f"num_heads={heads} does not divide the width {width} (or the width is not a "
            "multiple of 4); pass the model's own head count"
        )
    params = {
        "patchify": {  # conv [D, C, p, p] -> [p, p, C, D], outputs permuted
            "kernel": _roll(w.transpose(2, 3, 1, 0), 3),
            "bias": _roll(keys.take(g["patch"] + ".bias", (width,)), 0),
        },
        "t_embed": {
            "fc1": linear(keys, g["t1"], width, 256, bias=True),
            "fc2": linear(keys, g["t2"], width, width, bias=True),
        },
    }
    table = keys.take(g["labels"], (None, width))
    params["label_embed"] = table
    for i, b in enumerate(blocks):
        q, kk, v, o = b["q"], b["k"], b["v"], b["o"]
        if isinstance(q, str):  # separate q, k, v maps
            ws = [linear(keys, n, width, width, bias=True) for n in (q, kk, v)]
            qkv_w = np.concatenate([x["kernel"].T for x in ws])
            qkv_b = np.concatenate([x["bias"] for x in ws])
        else:
            qkv_w, qkv_b = q
        fc1 = linear(keys, b["fc1"], None, width, bias=True)
        hidden = fc1["kernel"].shape[1]
        params[f"block{i}"] = {
            "adaLN": _out(linear(keys, b["ada"], 6 * width, width, bias=True), 6),
            "attn": _attention(qkv_w, qkv_b, linear(keys, o, width, width, bias=True), heads),
            "mlp": {
                "fc1": _in(fc1),
                "fc2": _out(linear(keys, b["fc2"], width, hidden, bias=True)),
            },
        }
        if hidden != params["block0"]["mlp"]["fc1"]["kernel"].shape[1]:
            keys.take(
                b["fc1"] + ".weight", (params["block0"]["mlp"]["fc1"]["kernel"].shape[1], width)
            )
    params["final_adaLN"] = _out(linear(keys, g["final_ada"], 2 * width, width, bias=True), 2)
    final = linear(keys, g["final"], patch * patch * out_ch, width, bias=True)
    params["final"] = _final(final, patch, out_ch, in_ch)
    config = dict(
        channels=in_ch,
        patch=patch,
        width=width,
        depth=len(blocks),
        num_heads=heads,
        num_classes=table.shape[0] - 1,
    )
    hidden = params["block0"]["mlp"]["fc1"]["kernel"].shape[1]
    if hidden != 4 * width:  # DiT's mlp_ratio is 4; DiT computes int(width * mlp_ratio)
        config["mlp_ratio"] = hidden / width
    notes = [
        "the network takes integer DDPM timesteps (1000-step linear betas): sample through "
        "netlab.diffusion.parameterization.timestep_denoiser(net, Schedule('linear'), 'eps')",
        f"label {table.shape[0] - 1} is the null class (classifier-free guidance)",
    ]
    if out_ch != in_ch:
        notes.append(f"learned-sigma channels {in_ch}..{out_ch - 1} dropped: eps only")
    return params, config, notes


def _heads(width, num_heads, what):
    """`num_heads`, or the DiT paper's head count for a preset width (Table 1)."""
    if num_heads:
        return int(num_heads)
    known = {w: h for _, w, h in PRESETS.values()}
    if width not in known:
        raise UserError(
            f"{what}: width {width} is none of the DiT presets' ({', '.join(map(str, known))}), "
            "and a state dict does not hold the head count; pass num_heads=..."
        )
    return known[width]


def _image_size(n_tokens, patch):
    g = int(round(np.sqrt(n_tokens)))
    return g * patch, g


def diffusers(
    state_dict, *, num_heads: int = 0, norm_eps: float = 1e-5, image_size: int = 0
) -> Converted:
    """diffusers `DiTTransformer2DModel` -> netlab DiT. Not in a state dict: `num_heads` (config
    num_attention_heads; 0: the DiT preset of this width), `norm_eps` (config norm_eps, default
    1e-5), `image_size` (config sample_size; 0 leaves it to the user)."""
    k = Keys(state_dict, "diffusers DiT state dict", FIX)
    depth = 0
    while f"transformer_blocks.{depth}.norm1.linear.weight" in k:
        depth += 1
    if not depth:
        k.take("transformer_blocks.0.norm1.linear.weight")
    width = k.shape("pos_embed.proj.weight")[0]
    heads = _heads(width, num_heads, "diffusers DiT state dict")
    emb = "transformer_blocks.0.norm1.emb."
    for i in range(1, depth):  # per-block copies of block 0's embedders
        for key in k.prefixed(f"transformer_blocks.{i}.norm1.emb."):
            ref = emb + key.split(".norm1.emb.", 1)[1]
            if not np.array_equal(k.take(key, k.shape(ref)), k.take(ref)):
                raise UserError(
                    f"diffusers DiT state dict: key {key!r} differs from {ref!r}; netlab's DiT "
                    "shares one timestep/label embedding across blocks (as DiT and diffusers' "
                    "converted checkpoints), so tie them before converting"
                )
    blocks = []
    for i in range(depth):
        p = f"transformer_blocks.{i}."
        blocks.append(
            dict(
                q=p + "attn1.to_q",
                k=p + "attn1.to_k",
                v=p + "attn1.to_v",
                o=p + "attn1.to_out.0",
                ada=p + "norm1.linear",
                fc1=p + "ff.net.0.proj",
                fc2=p + "ff.net.2",
            )
        )
    g = dict(
        patch="pos_embed.proj",
        t1=emb + "timestep_embedder.linear_1",
        t2=emb + "timestep_embedder.linear_2",
        labels=emb + "class_embedder.embedding_table.weight",
        final_ada="proj_out_1",
        final="proj_out_2",
    )
    in_ch = k.shape("pos_embed.proj.weight")[1]
    patch = k.shape("pos_embed.proj.weight")[2]
    out_ch = k.shape("proj_out_2.weight")[0] // (patch * patch)
    params, config, notes = _assemble(k, g, blocks, heads, out_ch, in_ch)
    k.done()
    config.update(freq_shift=1.0, mlp_norm_eps=float(norm_eps))
    if image_size:
        config["image_size"] = int(image_size)
    else:
        notes.append("image_size is not in a state dict: pass image_size=<config sample_size>")
    return Converted(params, "netlab.diffusion.dit:DiT", config, notes=tuple(notes))


def original(state_dict, *, num_heads: int = 0) -> Converted:
    """Original DiT (`DiT-XL-2-256x256.pt` style) -> netlab DiT. `num_heads` is not in a state
    dict (0: the DiT preset of this width); the fixed `pos_embed` is checked against netlab's
    sin-cos table and gives the image size."""
    k = Keys(state_dict, "original DiT state dict", FIX)
    depth = 0
    while f"blocks.{depth}.adaLN_modulation.1.weight" in k:
        depth += 1
    if not depth:
        k.take("blocks.0.adaLN_modulation.1.weight")
    width = k.shape("x_embedder.proj.weight")[0]
    heads = _heads(width, num_heads, "original DiT state dict")
    blocks = []
    for i in range(depth):
        p = f"blocks.{i}."
        qkv = (
            k.take(p + "attn.qkv.weight", (3 * width, width)),
            k.take(p + "attn.qkv.bias", (3 * width,)),
        )
        blocks.append(
            dict(
                q=qkv,
                k=None,
                v=None,
                o=p + "attn.proj",
                ada=p + "adaLN_modulation.1",
                fc1=p + "mlp.fc1",
                fc2=p + "mlp.fc2",
            )
        )
    g = dict(
        patch="x_embedder.proj",
        t1="t_embedder.mlp.0",
        t2="t_embedder.mlp.2",
        labels="y_embedder.embedding_table.weight",
        final_ada="final_layer.adaLN_modulation.1",
        final="final_layer.linear",
    )
    in_ch = k.shape("x_embedder.proj.weight")[1]
    patch = k.shape("x_embedder.proj.weight")[2]
    out_ch = k.shape("final_layer.linear.weight")[0] // (patch * patch)
    params, config, notes = _assemble(k, g, blocks, heads, out_ch, in_ch)
    if "pos_embed" in k:
        pos = k.take("pos_embed", (1, None, width))[0]
        size, grid = _image_size(pos.shape[0], patch)
        from netlab.nn.layers import sincos_2d  # numpy only: no jax work at import

        want = _roll(sincos_2d(grid, width), 1)  # netlab's table in DiT's channel order
        if grid * grid != pos.shape[0] or not np.allclose(pos, want, atol=1e-5):
            raise UserError(
                "original DiT state dict: key 'pos_embed' is not the fixed 2-D sin-cos table "
                "netlab's DiT uses; a learned position embedding cannot be converted"
            )
        config["image_size"] = size
    else:
        notes.append("pos_embed absent: set image_size to the latent size")
    k.done()
    return Converted(params, "netlab.diffusion.dit:DiT", config, notes=tuple(notes))


def convert(
    state_dict, *, num_heads: int = 0, norm_eps: float = 1e-5, image_size: int = 0
) -> Converted:
    """DiT, either format (diffusers' told apart by its `transformer_blocks.*` keys)."""
    if any(key.startswith("transformer_blocks.") for key in state_dict):
        return diffusers(
            state_dict,
            num_heads=num_heads,
            norm_eps=norm_eps,
            image_size=image_size,
        )
    return original(state_dict, num_heads=num_heads)


CONVERTERS = {"dit": convert, "dit.diffusers": diffusers, "dit.original": original}
