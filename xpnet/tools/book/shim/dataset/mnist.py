"""The book's dataset/mnist.py on xpnet's MNIST: mirrors that work, SHA-256 checks, an .npz cache, no pickle.

``load_mnist(normalize=True, flatten=True, one_hot_label=False)`` returns
``(x_train, t_train), (x_test, t_test)`` as the book's does: images (N, 784)
or (N, 1, 28, 28), float32 in [0, 1] or uint8, labels uint8 indices or
one-hot rows (float32 here, float64 in the book). The files are downloaded
once into ``$XPNET_DATA/mnist`` (default ``~/.cache/xpnet/mnist``); offline,
the error says which files to put where.

On a machine without the internet that has MNIST's two test files,
``XPNET_BOOK_MNIST=t10k`` (or ``t10k:FOLDER``, the folder holding
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; ``xpnet book run
--mnist-t10k [FOLDER]`` sets it) makes ``load_mnist`` return those 10,000
test images split 8,000 for training and 2,000 for testing instead, and say
so on stderr at every call: the scripts then run, on real digits, but their
accuracies are not the book's.
"""

import gzip  # noqa: F401 (the book's module hands these names out to star imports)
import os
import pickle  # noqa: F401
import sys
import urllib.request  # noqa: F401

import numpy as np

from xpnet.datasets import load_mnist as _load_mnist
from xpnet.datasets import load_mnist_test_split as _load_mnist_test_split
from xpnet.datasets.mnist import DATASETS as _DATASETS
from xpnet.datasets.mnist import FILES as _FILES
from xpnet.datasets.mnist import data_home as _data_home

url_base = _DATASETS["mnist"]["mirrors"][0]
key_file = dict(zip(("train_img", "train_label", "test_img", "test_label"), _FILES))
dataset_dir = str(_data_home() / "mnist")
save_file = dataset_dir + "/mnist.npz"  # the parsed arrays, as .npz (the book pickles them)
train_num = 60000
test_num = 10000
img_dim = (1, 28, 28)
img_size = 784

SUBSTITUTE_VARIABLE = "XPNET_BOOK_MNIST"
SUBSTITUTE_TRAIN_SIZE = 8000

__all__ = ["gzip", "os", "pickle", "urllib", "np", "url_base", "key_file", "dataset_dir", "save_file", "train_num",
           "test_num", "img_dim", "img_size", "download_mnist", "init_mnist", "load_mnist"]


def download_mnist():
    """Fetch the four MNIST files into ``dataset_dir`` (checked against their SHA-256) unless they are there."""
    _load_mnist()


def init_mnist():
    """Fetch the files and write the parsed arrays to ``save_file`` (an .npz)."""
    _load_mnist()


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    """MNIST as ``(x_train, t_train), (x_test, t_test)``, the book's layout; see the module's docstring."""
    substitute = os.environ.get(SUBSTITUTE_VARIABLE)
    if substitute:
        return _load_substitute(substitute, normalize, flatten, one_hot_label)
    return _load_mnist(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label)


def _load_substitute(value, normalize, flatten, one_hot_label):
    kind, _, folder = value.partition(":")
    if kind != "t10k":
        raise ValueError(f"{SUBSTITUTE_VARIABLE}={value!r}: the one substitute for MNIST is 't10k' or 't10k:FOLDER'")
    folder = folder or None
    where = folder or str(_data_home() / "mnist")
    print(f"dataset.mnist: {SUBSTITUTE_VARIABLE}={value}: in place of MNIST (60,000 training and 10,000 test images), "
          f"its 10,000 test images from {where}, the first {SUBSTITUTE_TRAIN_SIZE:,} for training and the other "
          f"{10000 - SUBSTITUTE_TRAIN_SIZE:,} for testing; accuracies are not comparable with the book's",
          file=sys.stderr)
    return _load_mnist_test_split(folder, train_size=SUBSTITUTE_TRAIN_SIZE, normalize=normalize, flatten=flatten,
                                  one_hot_label=one_hot_label)
