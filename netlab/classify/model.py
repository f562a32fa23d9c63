"""The classification task's network: `netlab.nn.convnet.ConvNet` (shared with the diffusion
pillar's digits Frechet distance, which uses its hidden layer as features)."""

from netlab.nn.convnet import ConvBlock, ConvNet

__all__ = ["ConvBlock", "ConvNet"]
