"""Plain-loop float64 references, independent of im2col, for convolution and pooling."""

import numpy as np


def conv2d(x, W, b, stride, pad):
    """Cross-correlation of x (N, C, H, W) with W (FN, C, FH, FW), one output element at a time."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    fn, _, fh, fw = W.shape
    oh, ow = (h - fh) // stride + 1, (w - fw) // stride + 1
    out = np.zeros((n, fn, oh, ow))
    for i in range(n):
        for f in range(fn):
            for y in range(oh):
                for z in range(ow):
                    patch = x[i, :, y * stride:y * stride + fh, z * stride:z * stride + fw]
                    out[i, f, y, z] = (patch * W[f]).sum() + b[f]
    return out


def pool2d(x, ph, pw, stride, pad, mode="max"):
    """Max or average pooling with -inf (max) or zero (average) padding, window by window."""
    fill = -np.inf if mode == "max" else 0.0
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    n, c, h, w = x.shape
    oh, ow = (h - ph) // stride + 1, (w - pw) // stride + 1
    out = np.zeros((n, c, oh, ow))
    reduce = np.max if mode == "max" else np.mean
    for y in range(oh):
        for z in range(ow):
            out[:, :, y, z] = reduce(x[:, :, y * stride:y * stride + ph, z * stride:z * stride + pw], axis=(2, 3))
    return out


def distinct_values(rng, shape):
    """Values without ties (a shuffled linspace), so that every max is unique on every backend."""
    size = int(np.prod(shape))
    return rng.permutation(np.linspace(-1.0, 1.0, size)).reshape(shape)
