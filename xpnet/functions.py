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
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so that it never overflows.

    The error is absolute, below one unit in the last place of 1 (6e-8 in
    float32): values under that, for x below about -16 in float32, are 0.
    """
    xp = get_array_module(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def sigmoid_grad(x):
    """d sigmoid / dx = (1 - sigmoid(x)) sigmoid(x)."""
    y = sigmoid(x)
    return (1.0 - y) * y


def relu(x):
    """max(x, 0), element by element, in ``x``'s dtype."""
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


def softmax_loss(X, t):
    """Mean cross entropy of the softmax of scores ``X`` (N, K) against labels ``t`` (the book's names)."""
    return cross_entropy_error(softmax(X), t)
