"""MultiLayerNet and MultiLayerNetExtend: fully connected networks (the book, chapter 6)."""

from __future__ import annotations

from ..backend import DEFAULT_DTYPE, get_device
from ..initializers import normal, ones, weight_scale, zeros
from ..layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid
from .base import Network, check_size

_ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}


class MultiLayerNetExtend(Network):
    """Affine -> [BatchNorm] -> activation -> [Dropout], repeated, then Affine -> softmax.

    Parameters (the book's)
    ----------
    input_size : features per example, e.g. 784
    hidden_size_list : units of each hidden layer, e.g. [100, 100, 100]
    output_size : classes, e.g. 10
    activation : 'relu' or 'sigmoid'
    weight_init_std : a number, 'relu'/'he' or 'sigmoid'/'xavier'
    weight_decay_lambda : L2 strength on the weights W1..Wn
    use_dropout, dropout_ration : dropout after each hidden activation
        (``dropout_ration`` is the book's spelling; ``dropout_ratio`` works too)
    use_batchnorm : batch normalization after each hidden Affine
    dtype : float32 (default) or float64 for gradient checks

    Parameters live on the current default device (``XPNET_DEVICE``).
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu", weight_init_std="relu",
                 weight_decay_lambda=0, use_dropout=False, dropout_ration=0.5, use_batchnorm=False,
                 dropout_ratio=None, dtype=DEFAULT_DTYPE):
        super().__init__(weight_decay_lambda)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        owner = type(self).__name__
        self.input_size = check_size(owner, "input_size", input_size)
        self.output_size = check_size(owner, "output_size", output_size)
        self.hidden_size_list = [check_size(owner, f"hidden_size_list[{i}]", n) for i, n in enumerate(hidden_size_list)]
        self.hidden_layer_num = len(self.hidden_size_list)
        self.use_dropout, self.use_batchnorm = use_dropout, use_batchnorm
        ratio = dropout_ration if dropout_ratio is None else dropout_ratio
        device = get_device()
        sizes = [self.input_size] + self.hidden_size_list + [self.output_size]
        for i in range(1, len(sizes)):
            std = weight_scale(weight_init_std, sizes[i - 1])
            self.params[f"W{i}"] = normal((sizes[i - 1], sizes[i]), std, dtype, device)
            self.params[f"b{i}"] = zeros(sizes[i], dtype, device)
            affine = self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            self._bind(f"W{i}", affine, "W", decay=True)
            self._bind(f"b{i}", affine, "b")
            if i == len(sizes) - 1:
                break
            if use_batchnorm:
                self.params[f"gamma{i}"] = ones(sizes[i], dtype, device)
                self.params[f"beta{i}"] = zeros(sizes[i], dtype, device)
                bn = self.layers[f"BatchNorm{i}"] = BatchNormalization(self.params[f"gamma{i}"], self.params[f"beta{i}"])
                self._bind(f"gamma{i}", bn, "gamma")
                self._bind(f"beta{i}", bn, "beta")
            self.layers[f"Activation_function{i}"] = _ACTIVATIONS[activation]()
            if use_dropout:
                self.layers[f"Dropout{i}"] = Dropout(ratio)


class MultiLayerNet(MultiLayerNetExtend):
    """Affine -> activation, repeated, then Affine -> softmax (no batch norm, no dropout).

    The book's signature: ``MultiLayerNet(input_size, hidden_size_list,
    output_size, activation='relu', weight_init_std='relu',
    weight_decay_lambda=0)``; see :class:`MultiLayerNetExtend`.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu", weight_init_std="relu",
                 weight_decay_lambda=0, dtype=DEFAULT_DTYPE):
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda, dtype=dtype)
