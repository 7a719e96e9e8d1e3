"""The book's activation and loss functions, numerically stable, on either device."""

from __future__ import annotations

from .backend import get_array_module

__all__ = ["sigmoid", "relu", "softmax", "log_softmax", "cross_entropy_error"]


def sigmoid(x):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so that it never overflows.

    The error is absolute, below one unit in the last place of 1 (6e-8 in
    float32): values under that, for x below about -16 in float32, are 0.
    """
    xp = get_array_module(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def relu(x):
    """max(x, 0), element by element, in ``x``'s dtype."""
    return get_array_module(x).maximum(x, 0)


def log_softmax(x):
    """log softmax along the last axis, shifted by the maximum for stability."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(x):
    """softmax along the last axis; rows sum to 1."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """Mean cross entropy of probabilities ``y`` (N, K) against labels ``t``.

    ``t`` holds class indices (N,) or rows (N, K) of target probabilities,
    one-hot or not: a row gives ``-sum(t * log y)``, as
    :class:`~xpnet.layers.SoftmaxWithLoss` does (the book takes the argmax of
    each row, which is right for one-hot rows only). Returns a 0-d array on
    ``y``'s device (no host synchronization). Probabilities are clipped at
    1e-7 below, as in the book, to keep log finite.

        >>> import numpy as np
        >>> y = np.array([[0.5, 0.25, 0.25]])
        >>> float(cross_entropy_error(y, np.array([0])))            # -log 0.5
        0.6931471805599453
        >>> float(cross_entropy_error(y, np.array([[0.5, 0.5, 0]])))  # -(log 0.5 + log 0.25) / 2
        1.0397207708399179
    """
    xp = get_array_module(y)
    if y.ndim == 1:  # a single example: index () or row (K,)
        y, t = y[None], t[None]
    log_y = xp.log(xp.maximum(y, 1e-7))
    if t.shape == y.shape:
        return -(t * log_y).sum(axis=1).mean()
    return -xp.take_along_axis(log_y, t.reshape(-1, 1).astype(xp.intp), axis=1).mean()
