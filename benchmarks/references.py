"""Float64 NumPy formulas for what each benchmarked layer computes: the references of the smoke runs.

Each function takes the host arrays of a case and returns ``(y, dx)``: the
forward output and the input gradient for the upstream gradient ``dout``.
They follow the definitions, not xpnet's code (no im2col, no channels-last
windows), so a smoke run that agrees with them checks the benchmarked code.
"""

from __future__ import annotations

import numpy as np

import xpnet


def host(value):
    """A result of any backend (NumPy or CuPy array, torch tensor, Python number) as a float64 NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(xpnet.to_numpy(value), dtype=np.float64)


def assert_matches(result, expected, what):
    """A float32 result against its float64 reference, within 1e-4 of the reference's largest magnitude (float32
    sums of a few thousand terms stay far within that; a wrong index or a missing term does not)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(host(result), expected, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def assert_matches_in_norm(result, expected, what, rtol=1e-3):
    """A float32 gradient of a whole network against its float64 reference, as a whole: ||result - expected||
    within ``rtol`` of ||expected||.

    Element by element the two may differ where an activation lies so close
    to a ReLU's kink, or two values of a pooling window so close together,
    that float32 and float64 route the gradient differently; a wrong
    gradient is off by far more than 1e-3 in norm.
    """
    expected = np.asarray(expected, dtype=np.float64)
    error = np.linalg.norm(host(result) - expected)
    assert error <= rtol * np.linalg.norm(expected), f"{what}: relative error {error / np.linalg.norm(expected):.2e}"


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def convolution(x, W, b, pad, dout):
    """Stride-1 cross-correlation of x (N, C, H, W) with W (FN, C, K, K), one filter offset at a time."""
    x, W, b, dout = _f64(x, W, b, dout)
    n, c, h, w = x.shape
    k = W.shape[2]
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    y = np.zeros((n, W.shape[0], oh, ow))
    dpadded = np.zeros_like(padded)
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i:i + oh, j:j + ow]
            y += np.tensordot(window, W[:, :, i, j], axes=([1], [1])).transpose(0, 3, 1, 2)
            dpadded[:, :, i:i + oh, j:j + ow] += np.tensordot(dout, W[:, :, i, j], axes=([1], [0])).transpose(0, 3, 1, 2)
    return y + b[None, :, None, None], dpadded[:, :, pad:pad + h, pad:pad + w]


def max_pooling_2x2(x, dout):
    """2x2 max pooling with stride 2 on input without ties; the gradient goes to each window's maximum."""
    x, dout = _f64(x, dout)
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2)
    y = windows.max(axis=(3, 5))
    winner = windows == y[:, :, :, None, :, None]
    dx = winner * dout[:, :, :, None, :, None]
    return y, dx.reshape(n, c, h, w)


def affine(x, W, b, dout):
    x, W, b, dout = _f64(x, W, b, dout)
    return x @ W + b, dout @ W.T


def relu(x, dout):
    x, dout = _f64(x, dout)
    return np.maximum(x, 0), dout * (x > 0)


def batch_normalization(x, gamma, beta, eps, dout):
    """Training mode, per channel over (N, H, W)."""
    x, gamma, beta, dout = _f64(x, gamma, beta, dout)
    axes, shape = (0, 2, 3), (1, -1, 1, 1)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    g = dout * gamma.reshape(shape)
    dx = (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True)) / np.sqrt(var + eps)
    return y, dx


def softmax_cross_entropy(x, t):
    """The mean cross-entropy of softmax(x) against index labels t, and its gradient for dout = 1."""
    (x,) = _f64(x)
    n = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    log_y = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    dx = np.exp(log_y)
    dx[np.arange(n), t] -= 1
    return -log_y[np.arange(n), t].mean(), dx / n
