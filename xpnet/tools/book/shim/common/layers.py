"""The book's common/layers.py: xpnet's layers, and what the book's star imports hand out with them.

Each layer computes on the device and in the dtype of its parameters (or of
its input), so layers built from a script's own NumPy arrays compute on the
CPU in the script's dtype. xpnet's fixes stay: inverted dropout, batch
normalization per channel on images, max pooling that honours padding.
"""

from xpnet.layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss
from xpnet.util import col2im, im2col

from .functions import *  # noqa: F403 (the book's layers.py star-imports its functions, np included)
from .functions import __all__ as _functions

__all__ = [*_functions, "im2col", "col2im", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout",
           "BatchNormalization", "Convolution", "Pooling"]
