"""DeepConvNet: the book's 8-layer network for MNIST (chapter 8)."""

from __future__ import annotations

from ..backend import DEFAULT_DTYPE, get_device
from ..initializers import normal, weight_scale, zeros
from ..layers import Affine, Convolution, Dropout, Pooling, Relu
from ..util import conv_output_size
from .base import Network, check_conv_param, check_input_dim, check_size

_DEFAULT_CONV_PARAMS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


class DeepConvNet(Network):
    """conv-relu-conv-relu-pool, three times, then affine-relu-dropout-affine-softmax.

    The book's signature and defaults (``conv_param_1`` .. ``conv_param_6``,
    ``hidden_size=50``, ``output_size=10``), He initialization throughout.

    Fixed relative to the book: no dropout after the last Affine layer (the
    book drops half of the class scores while training), and ``loss`` and
    ``accuracy`` evaluate with dropout off unless asked otherwise. The size of
    the first Affine layer is computed from ``input_dim`` instead of being
    fixed at 64*4*4, so other image sizes work.
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param_1=None, conv_param_2=None, conv_param_3=None,
                 conv_param_4=None, conv_param_5=None, conv_param_6=None, hidden_size=50, output_size=10,
                 dropout_ratio=0.5, dtype=DEFAULT_DTYPE):
        super().__init__()
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        conv_params = [{**default, **(p or {})} for default, p in zip(_DEFAULT_CONV_PARAMS, given)]
        for i, cp in enumerate(conv_params, start=1):
            check_conv_param("DeepConvNet", f"conv_param_{i}", cp)
        hidden_size = check_size("DeepConvNet", "hidden_size", hidden_size)
        output_size = check_size("DeepConvNet", "output_size", output_size)
        self.input_dim = input_dim = check_input_dim("DeepConvNet", input_dim)
        device = get_device()
        channels, h, w = input_dim
        p = self.params
        for i, cp in enumerate(conv_params, start=1):
            fs = cp["filter_size"]
            p[f"W{i}"] = normal((cp["filter_num"], channels, fs, fs), weight_scale("he", channels * fs * fs), dtype, device)
            p[f"b{i}"] = zeros(cp["filter_num"], dtype, device)
            conv = self.layers[f"Conv{i}"] = Convolution(p[f"W{i}"], p[f"b{i}"], cp["stride"], cp["pad"])
            self._bind(f"W{i}", conv, "W")
            self._bind(f"b{i}", conv, "b")
            self.layers[f"Relu{i}"] = Relu()
            h, w = conv_output_size(h, fs, cp["stride"], cp["pad"]), conv_output_size(w, fs, cp["stride"], cp["pad"])
            channels = cp["filter_num"]
            if i % 2 == 0:
                self.layers[f"Pool{i // 2}"] = Pooling(pool_h=2, pool_w=2, stride=2)
                h, w = conv_output_size(h, 2, 2), conv_output_size(w, 2, 2)
        flat = channels * h * w
        p["W7"] = normal((flat, hidden_size), weight_scale("he", flat), dtype, device)
        p["b7"] = zeros(hidden_size, dtype, device)
        p["W8"] = normal((hidden_size, output_size), weight_scale("he", hidden_size), dtype, device)
        p["b8"] = zeros(output_size, dtype, device)
        affine1 = self.layers["Affine1"] = Affine(p["W7"], p["b7"])
        self.layers["Relu7"] = Relu()
        self.layers["Dropout1"] = Dropout(dropout_ratio)
        affine2 = self.layers["Affine2"] = Affine(p["W8"], p["b8"])
        for name, layer in (("7", affine1), ("8", affine2)):
            self._bind("W" + name, layer, "W")
            self._bind("b" + name, layer, "b")

    BOOK_DROPOUT_RATIO = 0.5  # the book's DeepConvNet: Dropout(0.5) after Relu7 and after Affine2

    @classmethod
    def convert_book_params(cls, params):
        """The book's trained weights (``deep_convnet_params.pkl``), made to give the book's test-time scores.

        The book's dropout keeps units unscaled while training and multiplies
        by (1 - 0.5) at test time, after the hidden layer and again after the
        last Affine layer, so its scores are 0.5 * (0.5 * h W8 + b8) for the
        hidden activations h. Here dropout is inverted (the identity at test
        time) and there is none after the last layer, so W8 is scaled by 0.25
        and b8 by 0.5: ``predict`` then gives exactly the book's scores.
        """
        keep = 1.0 - cls.BOOK_DROPOUT_RATIO
        params = dict(params)
        params["W8"] = params["W8"] * (keep * keep)
        params["b8"] = params["b8"] * keep
        return params
