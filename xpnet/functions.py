"""The book's activation and loss functions, numerically stable, on either device."""

from __future__ import annotations

from .backend import get_array_module

__all__ = ["sigmoid", "relu", "softmax", "log_softmax", "cross_entropy_error"]


def sigmoid(x):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so that it never overflows."""
    xp = get_array_module(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def relu(x):
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

    ``t`` holds class indices (N,) or one-hot rows (N, K). Returns a 0-d
    array on ``y``'s device (no host synchronization). Probabilities are
    clipped at 1e-7 below, as in the book, to keep log finite.
    """
    xp = get_array_module(y)
    if y.ndim == 1:  # a single example: index () or one-hot (K,)
        y, t = y[None], t[None]
    if t.shape == y.shape:
        t = t.argmax(axis=1)
    picked = xp.take_along_axis(y, t.reshape(-1, 1).astype(xp.intp), axis=1)
    return -xp.log(xp.maximum(picked, 1e-7)).mean()
