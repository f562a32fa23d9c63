"""Weights from the PyTorch peers: diffusers / original DiT, diffusers UNet2DModel, PyG layers.

`load(path)` reads a state dict (.pt / .pth / .bin through `torch.load(weights_only=True)`,
.safetensors, or a diffusers model folder); a converter (`netlab.convert.dit`, `.unet`, `.pyg`)
maps it to netlab's Flax parameters and the config of the netlab module that takes them
(`core.Converted`); `save(converted, directory)` writes a params-only checkpoint that
`config.checkpoint.init_from` reads. `python -m netlab.convert` does all three. torch is imported
only to read a torch file. Guide: docs/convert.md.
"""

from netlab.convert.core import Converted
from netlab.convert.io import load, save

__all__ = ["Converted", "load", "save"]
