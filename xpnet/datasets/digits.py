"""The embedded data set: the UCI handwritten digits, 8x8 pixels, shipped inside the package."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["load_digits", "DIGITS_PATH"]

DIGITS_PATH = Path(__file__).with_name("data") / "digits.csv.gz"


def load_digits(normalize=True, flatten=True, one_hot_label=False):
    """The UCI "Optical Recognition of Handwritten Digits" test set, offline, as the book's loaders return data.

    1,797 images of 8x8 pixels (values 0..16) by E. Alpaydin and C. Kaynak
    (1998), UCI Machine Learning Repository, CC BY 4.0. A fixed split that
    depends on no generator: rows whose index is 4 modulo 5 are the test set
    (359 images), the others the training set (1,438).

    Returns ``(x_train, t_train), (x_test, t_test)``: images (N, 64) with
    ``flatten``, else (N, 1, 8, 8); float32 values / 16 in [0, 1] with
    ``normalize``, else uint8 0..16; labels uint8, or float32 one-hot (N, 10).
    """
    with gzip.open(DIGITS_PATH, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    x, t = table[:, :-1], table[:, -1]
    if not flatten:
        x = x.reshape(-1, 1, 8, 8)
    if normalize:
        x = x.astype(np.float32) / 16.0
    if one_hot_label:
        t = np.eye(10, dtype=np.float32)[t]
    test = np.arange(len(table)) % 5 == 4
    return (x[~test], t[~test]), (x[test], t[test])
