"""SimpleConvNet: conv - relu - pool - affine - relu - affine - softmax (the book, chapter 7)."""

from __future__ import annotations

from ..backend import DEFAULT_DTYPE, get_device
from ..initializers import normal, weight_scale, zeros
from ..layers import Affine, Convolution, Pooling, Relu
from ..util import conv_output_size
from .base import Network, check_conv_param, check_input_dim, check_size


class SimpleConvNet(Network):
    """The book's SimpleConvNet.

    Parameters (the book's)
    ----------
    input_dim : (C, H, W) of one example, e.g. (1, 28, 28)
    conv_param : dict with filter_num, filter_size, pad, stride
    hidden_size : units of the hidden Affine layer
    output_size : classes
    weight_init_std : a number (the book's 0.01), 'relu'/'he' or 'sigmoid'/'xavier'
    dtype : float32 (default) or float64 for gradient checks
    pool : True (the book's) keeps the 2x2 max pooling layer; False drops it,
        and the first Affine layer takes every convolution output (4x the
        inputs, so 4x its weights): what ``xpnet experiment pooling`` compares

    Input (N, C, H, W); the 2x2 max pooling has stride 2. Fixed relative to
    the book: the pooled size is ``floor(conv_out / 2)`` per side (the book
    computes ``(conv_out / 2) ** 2`` in floats, which is wrong for odd sizes).
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param=None, hidden_size=100, output_size=10,
                 weight_init_std=0.01, dtype=DEFAULT_DTYPE, pool=True):
        super().__init__()
        conv_param = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1, **(conv_param or {})}
        check_conv_param("SimpleConvNet", "conv_param", conv_param)
        hidden_size = check_size("SimpleConvNet", "hidden_size", hidden_size)
        output_size = check_size("SimpleConvNet", "output_size", output_size)
        filter_num, filter_size = conv_param["filter_num"], conv_param["filter_size"]
        pad, stride = conv_param["pad"], conv_param["stride"]
        channels, height, width = input_dim = check_input_dim("SimpleConvNet", input_dim)
        conv_h = conv_output_size(height, filter_size, stride, pad)
        conv_w = conv_output_size(width, filter_size, stride, pad)
        if pool:
            conv_h, conv_w = conv_output_size(conv_h, 2, 2), conv_output_size(conv_w, 2, 2)
        affine_inputs = filter_num * conv_h * conv_w
        self.input_dim = tuple(input_dim)
        device = get_device()

        def std(fan_in):
            return weight_scale(weight_init_std, fan_in)

        p = self.params
        p["W1"] = normal((filter_num, channels, filter_size, filter_size), std(channels * filter_size ** 2), dtype, device)
        p["b1"] = zeros(filter_num, dtype, device)
        p["W2"] = normal((affine_inputs, hidden_size), std(affine_inputs), dtype, device)
        p["b2"] = zeros(hidden_size, dtype, device)
        p["W3"] = normal((hidden_size, output_size), std(hidden_size), dtype, device)
        p["b3"] = zeros(output_size, dtype, device)

        conv = self.layers["Conv1"] = Convolution(p["W1"], p["b1"], stride, pad)
        self.layers["Relu1"] = Relu()
        if pool:
            self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        affine1 = self.layers["Affine1"] = Affine(p["W2"], p["b2"])
        self.layers["Relu2"] = Relu()
        affine2 = self.layers["Affine2"] = Affine(p["W3"], p["b3"])
        for name, layer in (("1", conv), ("2", affine1), ("3", affine2)):
            self._bind("W" + name, layer, "W")
            self._bind("b" + name, layer, "b")
