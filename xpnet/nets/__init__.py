"""The book's networks, on whichever device ``XPNET_DEVICE`` names (move them with ``net.to(device)``)."""

from .base import Network
from .deep_convnet import DeepConvNet
from .multi_layer_net import MultiLayerNet, MultiLayerNetExtend
from .simple_convnet import SimpleConvNet

__all__ = ["Network", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "DeepConvNet"]
