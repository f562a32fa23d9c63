"""Reading PyTorch state dicts and writing the converted parameters as a netlab checkpoint.

`load` reads .pt / .pth / .bin / .ckpt files with `torch.load(weights_only=True)` (no pickled
code runs), .safetensors files with the `safetensors` package, and diffusers model folders
(`diffusion_pytorch_model.safetensors` or `.bin`, sharded or not, in the folder or in its
`transformer/` or `unet/` subfolder). A training checkpoint holding {"ema": ..., "model": ...}
(the original DiT's `train.py` layout) yields its EMA weights.

`save` writes `<directory>/ckpt/0/{params,meta}` in the layout of `netlab.checkpoint.manager`, so
`--config.checkpoint.init_from=<directory>` starts a run from the converted weights (the run
checks every parameter's shape against its model first).
"""

from __future__ import annotations

import json
import os

from netlab.errors import UserError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
FOLDER_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
INSTALL = "pip install -e '.[bench]'"


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError(f"reading a PyTorch file needs torch; {INSTALL}") from None
    return torch


def _read_torch(path):
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors: one line, the file is the problem
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise UserError(
            f"{path}: not a readable PyTorch state dict ({first}); a training checkpoint with "
            "pickled objects must be re-saved as its weights: torch.save(ckpt['ema'], 'w.pt')"
        ) from None
    if isinstance(obj, dict):
        for key in ("ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict) and not hasattr(obj.get(key), "shape"):
                return dict(obj[key])
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise UserError(f"reading {path} needs the safetensors package; {INSTALL}") from None
    try:
        return load_file(path)
    except TypeError:  # bfloat16 has no numpy dtype: read through torch
        from safetensors.torch import load_file as load_torch

        _torch()
        return load_torch(path)
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path}: not a readable safetensors file ({first})") from None


def _read_folder(path):
    for sub in ("", "transformer", "unet"):
        folder = os.path.join(path, sub)
        for name in FOLDER_FILES:
            index = os.path.join(folder, name + ".index.json")
            if os.path.isfile(index):
                with open(index) as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
                out = {}
                for shard in shards:
                    out.update(load(os.path.join(folder, shard)))
                return out
            if os.path.isfile(os.path.join(folder, name)):
                return load(os.path.join(folder, name))
    raise UserError(
        f"{path}: a folder without {' or '.join(FOLDER_FILES[:2])} (nor in transformer/ or "
        "unet/); give the diffusers model folder or the weight file itself"
    )


def folder_options(path) -> dict:
    """Converter settings a diffusers folder's config.json holds and a state dict does not:
    num_heads, image_size, norm_eps (empty for a file or a folder without config.json)."""
    path = os.fspath(path)
    for sub in ("", "transformer", "unet"):
        cfg_path = os.path.join(path, sub, "config.json")
        if os.path.isdir(path) and os.path.isfile(cfg_path):
            with open(cfg_path) as f:
                cfg = json.load(f)
            out = {}
            if "sample_size" in cfg and isinstance(cfg["sample_size"], int):
                out["image_size"] = cfg["sample_size"]
            out["norm_eps"] = float(cfg.get("norm_eps", 1e-5))
            if "num_attention_heads" in cfg:  # DiT
                out["num_heads"] = int(cfg["num_attention_heads"])
            elif "block_out_channels" in cfg:  # UNet2DModel: channels / attention_head_dim
                chans = cfg["block_out_channels"]
                types = cfg.get("down_block_types", ())
                attn = [c for c, t in zip(chans, types) if "Attn" in t] + [chans[-1]]
                head_dim = cfg.get("attention_head_dim", 8)
                heads = {1} if head_dim is None else {c // head_dim for c in attn}
                if len(heads) == 1:
                    out["num_heads"] = heads.pop()
            return out
    return {}


def load(path) -> dict:
    """{key: tensor or array} from a torch file, a safetensors file or a diffusers folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _read_folder(path)
    if not os.path.isfile(path):
        raise UserError(
            f"{path}: no such file or folder; give a {'/'.join(TORCH_SUFFIXES)}/.safetensors "
            "file or a diffusers model folder"
        )
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    if path.endswith(TORCH_SUFFIXES):
        return _read_torch(path)
    raise UserError(
        f"{path}: unknown file type; give a {'/'.join(TORCH_SUFFIXES)}/.safetensors file or a "
        "diffusers model folder"
    )


def save(converted, directory, source: str = "") -> str:
    """Write `converted.params` as step 0 of `<directory>/ckpt` (params + meta items, as
    `netlab.checkpoint.manager` lays them out); returns the checkpoint folder. Refuses a directory
    that already holds a checkpoint."""
    from netlab.checkpoint.manager import write_params

    ckdir = os.path.join(os.path.abspath(os.fspath(directory)), "ckpt")
    if os.path.isdir(ckdir) and os.listdir(ckdir):
        raise UserError(f"{ckdir} already holds a checkpoint; choose a new output folder")
    meta = {
        "task": "converted",
        "converted_from": str(source),
        "model": converted.model,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in converted.config.items()},
        "notes": list(converted.notes),
    }
    write_params(ckdir, converted.params, meta)
    return ckdir
