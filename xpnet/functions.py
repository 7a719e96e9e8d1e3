"""The book's activation and loss functions, numerically stable, on either device."""

from __future__ import annotations

from .backend import get_array_module

__all__ = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "log_softmax",
    "sum_squared_error",
    "cross_entropy_error",
    "softmax_loss",
]


def identity_function(x):
    """The output function of regression (chapter 3): ``x`` itself."""
    return x


def step_function(x):
    """1 where x > 0, else 0, as integers (int64), the book's first activation."""
    xp = get_array_module(x)
    return (xp.asarray(x) > 0).astype(xp.int64)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so that it never overflows."""
    xp = get_array_module(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def sigmoid_grad(x):
    """d sigmoid / dx = (1 - sigmoid(x)) sigmoid(x)."""
    y = sigmoid(x)
    return (1.0 - y) * y


def relu(x):
    return get_array_module(x).maximum(x, 0)


def relu_grad(x):
    """1 where x >= 0, else 0, in x's dtype (the book takes the derivative at 0 to be 1)."""
    return (x >= 0).astype(x.dtype)


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


def sum_squared_error(y, t):
    """0.5 * sum((y - t)^2) over every element (not a mean, as in the book); a 0-d array."""
    d = y - t
    return 0.5 * (d * d).sum()


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


def softmax_loss(X, t):
    """Mean cross entropy of the softmax of scores ``X`` (N, K) against labels ``t`` (the book's names)."""
    return cross_entropy_error(softmax(X), t)
