"""What the Trainer checks once, before training: data and labels that fit each other and the network."""

from __future__ import annotations

import numbers
import warnings

from ..backend import to_numpy
from ..labels import class_indices

__all__ = ["check_counts", "check_batch_size", "check_data", "check_labels"]


def check_counts(**counts):
    """Each of ``counts`` (epochs, mini_batch_size) a whole number >= 1: 2.7 epochs is an error, not 2."""
    for name, value in counts.items():
        whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())
        if isinstance(value, bool) or not whole or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def check_batch_size(batch_size, train_size):
    """Warn when a batch is larger than the training set: each epoch is then one step of all the examples.

    xpnet's epoch is one pass without replacement, so no batch holds an
    example twice; the book's Trainer would draw ``batch_size`` examples with
    replacement instead.
    """
    if int(batch_size) > train_size:
        warnings.warn(f"the batch size {int(batch_size)} is larger than the training set ({train_size} examples): "
                      f"each epoch is one step of all {train_size} examples (xpnet draws without replacement)",
                      UserWarning, stacklevel=3)


def check_data(what, x, t):
    """As many labels as examples, and at least one example; ``what`` names the set in the error."""
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"{what} data: {x.shape[0]} examples but {t.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{what} data is empty")


def check_labels(network, x, t, what):
    """Once, on the host: labels are valid class indices (or one-hot rows) for the network's output."""
    if not hasattr(network, "predict"):  # a duck-typed network: its loss checks the labels
        return
    classes = network.predict(x[:1]).shape[1]
    labels = to_numpy(t)
    if labels.ndim == 2 and labels.shape[1] != 1:
        if labels.shape[1] != classes:
            raise ValueError(f"{what} one-hot labels have {labels.shape[1]} columns but the network has {classes} outputs")
        return
    labels = class_indices(labels, len(labels), classes, f"{what} labels", check_range=False)
    if labels is None:  # one-hot rows of a one-output network
        return
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"{what} labels run from {labels.min()} to {labels.max()}, but the network has {classes} outputs")
