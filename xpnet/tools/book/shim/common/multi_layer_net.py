"""The book's common/multi_layer_net.py: MultiLayerNet on ``XPNET_DEVICE``, handing the script NumPy."""

import os
import sys
from collections import OrderedDict

import numpy as np

from xpnet.tools.book.host import MultiLayerNet

from .gradient import numerical_gradient
from .layers import *  # noqa: F403 (the book's module star-imports common.layers)
from .layers import __all__ as _layers

__all__ = ["sys", "os", "np", "OrderedDict", *_layers, "numerical_gradient", "MultiLayerNet"]
