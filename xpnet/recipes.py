"""Named data sets and networks, as the command line and the experiments ask for them."""

from __future__ import annotations

from . import datasets
from .nets import DeepConvNet, MultiLayerNet, SimpleConvNet

DATASETS = ("digits", "mnist", "fashion-mnist", "mnist-t10k")
DEFAULT_EPOCHS = {"digits": 40, "mnist": 10, "fashion-mnist": 10, "mnist-t10k": 20}
MODELS = ("simple_convnet", "deep_convnet", "mlp")


def load_dataset(name, flatten=False, data_dir=None):
    """``(x_train, t_train), (x_test, t_test)`` of a named data set: images (N, 1, H, W) or flat rows.

    digits: the embedded 8x8 UCI digits (offline); mnist, fashion-mnist:
    downloaded once and cached; mnist-t10k: the 10,000 real MNIST test
    images split 8,000 / 2,000, read from ``data_dir`` (e.g. a folder holding
    t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz).
    """
    if name == "digits":
        return datasets.load_digits(flatten=flatten)
    if name == "mnist":
        return datasets.load_mnist(flatten=flatten)
    if name == "fashion-mnist":
        return datasets.load_fashion_mnist(flatten=flatten)
    if name == "mnist-t10k":
        return datasets.load_mnist_test_split(data_dir, train_size=8000, flatten=flatten)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def build_network(name, input_dim, output_size=10, **kwargs):
    """A network of the book sized for ``input_dim`` (C, H, W), on the current device.

    simple_convnet: 30 filters, 5x5 without padding on images of 16 pixels or
    more, 3x3 with padding 1 on smaller ones (the 8x8 digits); He initial
    weights (the book's 0.01 trains too slowly with Adam's defaults on the
    small data sets). deep_convnet: the book's. mlp: MultiLayerNet with two
    hidden layers of 100.
    """
    channels, height, width = input_dim
    if name == "simple_convnet":
        small = min(height, width) < 16
        conv = {"filter_num": 30, "filter_size": 3 if small else 5, "pad": 1 if small else 0, "stride": 1}
        options = {"conv_param": conv, "hidden_size": 100, "weight_init_std": "he", **kwargs}
        return SimpleConvNet(input_dim=tuple(input_dim), output_size=output_size, **options)
    if name == "deep_convnet":
        return DeepConvNet(input_dim=tuple(input_dim), output_size=output_size, **kwargs)
    if name == "mlp":
        options = {"hidden_size_list": [100, 100], **kwargs}
        return MultiLayerNet(input_size=channels * height * width, output_size=output_size, **options)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
