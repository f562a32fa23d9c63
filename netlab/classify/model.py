"""The classification task's default network: `netlab.nn.convnet.ConvNet` (shared with the
diffusion pillar's digits Frechet distance, which uses its hidden layer as features); the other
trunks (`model.trunk`) are in `netlab.classify.trunks`."""

from netlab.nn.convnet import ConvBlock, ConvNet

__all__ = ["ConvBlock", "ConvNet"]
