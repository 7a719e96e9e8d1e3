"""Data sets: MNIST and Fashion-MNIST (downloaded once), the embedded digits, and an IDX reader."""

from .digits import load_digits
from .errors import DatasetError
from .idx import read_idx, write_idx
from .mnist import data_home, load_fashion_mnist, load_mnist, load_mnist_test_split

__all__ = ["load_mnist", "load_fashion_mnist", "load_digits", "load_mnist_test_split", "read_idx", "write_idx",
           "data_home", "DatasetError"]
