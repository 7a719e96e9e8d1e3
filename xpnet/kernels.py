"""CuPy fast paths: single kernels where the generic ``xp`` code launches many.

At the book's sizes a GPU training step costs what it launches, not what
it computes. These kernels replace the generic code's chains of small
launches with one each: im2col reading the unpadded input, col2im as a
gather (one thread per input pixel, deterministic, no atomics), max and
average pooling forward and backward, ReLU with its mask, and the
optimizers' per-parameter updates.

They are compiled by NVRTC on first use and cached by CuPy; nothing
here runs at import. CuPy comes from :mod:`xpnet.backend`, the only module
that imports it. The generic path stays the reference: the GPU tests run
both on the same inputs, and ``with kernels.disabled():`` turns the fast
paths off.

Images are channels-last, (N, H, W, C), and columns (N*OH*OW, FH*FW*C)
in (fy, fx, c) order, the layout of :func:`xpnet.util.im2col_array`, which
calls these kernels on a GPU and NumPy's strided copies on the CPU: one
layout for both devices. Neighbouring threads then read neighbouring
channels of one pixel.
"""

from __future__ import annotations

import contextlib
import threading

from . import backend

__all__ = ["enabled", "disabled", "active", "im2col", "col2im", "pool_forward", "pool_backward",
           "relu_forward", "softmax_cross_entropy", "softmax_cross_entropy_backward", "update"]

_state = threading.local()
_cache: dict = {}


def enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def disabled():
    """Run the generic ``xp`` code on the GPU too (for tests and comparisons)."""
    previous = enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


def active(xp) -> bool:
    """True when ``xp`` is CuPy and the fast paths are on."""
    return xp.__name__ == "cupy" and enabled()


def _kernel(name, in_params, out_params, body, **options):
    kernel = _cache.get(name)
    if kernel is None:
        cp = backend.xp_of_device("gpu")
        kernel = _cache[name] = cp.ElementwiseKernel(in_params, out_params, body, "xpnet_" + name, **options)
    return kernel


def _indexed_kernel(name, in_params, out_params, body, size):
    """An index-decoding kernel in 32-bit arithmetic when every index fits (64-bit division is slow on GPUs)."""
    wide = size >= 2**31
    typedef = "typedef long long idx_t;" if wide else "typedef int idx_t;"
    return _kernel(f"{name}_{64 if wide else 32}", in_params, out_params, body, preamble=typedef)


# --- im2col and col2im ------------------------------------------------------------------

_IM2COL = """
    idx_t r = i;
    const int c = r % C; r /= C;
    const int fx = r % FW; r /= FW;
    const int fy = r % FH; r /= FH;
    const int ox = r % OW; r /= OW;
    const int oy = r % OH;
    const idx_t n = r / OH;
    const int y = oy * S - P + fy;
    const int x = ox * S - P + fx;
    col = (y >= 0 && y < H && x >= 0 && x < W) ? img[((n * H + y) * W + x) * C + c] : (T)0;
"""

def _gather_windows(body, out):
    """CUDA source: pixel i of an (N, H, W, C) image sums ``body`` over the output windows (oy, ox) that
    cover it, with (fy, fx) its place in each window: the adjoint of a window read, as a gather (no atomics)."""
    return """
    idx_t r = i;
    const int c = r % C; r /= C;
    const int x = r % W; r /= W;
    const int y = r % H;
    const idx_t n = r / H;
    T sum = 0;
    for (int fy = 0; fy < FH; ++fy) {
        const int ty = y + P - fy;
        if (ty < 0 || ty % S != 0) continue;
        const int oy = ty / S;
        if (oy >= OH) continue;
        for (int fx = 0; fx < FW; ++fx) {
            const int tx = x + P - fx;
            if (tx < 0 || tx % S != 0) continue;
            const int ox = tx / S;
            if (ox >= OW) continue;
""" + body + """        }
    }
    """ + out + """ = sum;
"""


_COL2IM = _gather_windows("""            sum += col[((n * OH + oy) * OW + ox) * (C * FH * FW) + (fy * FW + fx) * C + c];
""", "img")

_SIZES = "int32 H, int32 W, int32 C, int32 OH, int32 OW, int32 FH, int32 FW, int32 S, int32 P"


def im2col(img, filter_h, filter_w, stride, pad, out_h, out_w, out=None):
    """Columns (N*OH*OW, FH*FW*C), (fy, fx, c) order, of a C-contiguous channels-last ``img`` (N, H, W, C),
    zero-padded on the fly; into ``out`` (C-contiguous, as many elements) where given."""
    cp = backend.xp_of_device("gpu")
    n, h, w, c = img.shape
    shape = (n * out_h * out_w, filter_h * filter_w * c)
    col = cp.empty(shape, dtype=img.dtype) if out is None else out.reshape(shape)
    kernel = _indexed_kernel("im2col", "raw T img, " + _SIZES, "T col", _IM2COL, max(col.size, img.size))
    return kernel(img, h, w, c, out_h, out_w, filter_h, filter_w, stride, pad, col)


def col2im(col, input_shape, filter_h, filter_w, stride, pad, out_h, out_w, out=None):
    """The adjoint of :func:`im2col`: an image (N, H, W, C), each pixel the sum of its column entries;
    into ``out`` (C-contiguous) where given."""
    cp = backend.xp_of_device("gpu")
    n, h, w, c = input_shape
    img = cp.empty((n, h, w, c), dtype=col.dtype) if out is None else out
    kernel = _indexed_kernel("col2im", "raw T col, " + _SIZES, "T img", _COL2IM, max(col.size, img.size))
    return kernel(cp.ascontiguousarray(col), h, w, c, out_h, out_w, filter_h, filter_w, stride, pad, img)


# --- pooling --------------------------------------------------------------------------------

_POOL_FORWARD = """
    idx_t r = i;
    const int c = r % C; r /= C;
    const int ox = r % OW; r /= OW;
    const int oy = r % OH;
    const idx_t n = r / OH;
    // pad < window, so every window holds a real pixel; padding is skipped
    // (never the max; zero in the average, which divides by the full window).
    bool found = false;
    T best = 0, total = 0;
    int best_k = 0;
    for (int fy = 0; fy < FH; ++fy) {
        const int y = oy * S - P + fy;
        if (y < 0 || y >= H) continue;
        for (int fx = 0; fx < FW; ++fx) {
            const int x = ox * S - P + fx;
            if (x < 0 || x >= W) continue;
            const T v = img[((n * H + y) * W + x) * C + c];
            total += v;
            if (!found || v > best || (v != v && best == best)) {  // NaN wins, as in xp.maximum
                best = v;
                best_k = fy * FW + fx;
                found = true;
            }
        }
    }
    out = AVG ? total / (T)(FH * FW) : best;
    arg = best_k;
"""

_POOL_BACKWARD = _gather_windows("""            const idx_t o = ((n * OH + oy) * OW + ox) * C + c;
            if (AVG) {
                sum += dout[o] / (T)(FH * FW);
            } else if (arg[o] == fy * FW + fx) {
                sum += dout[o];
            }
""", "dx")


def pool_forward(img, pool_h, pool_w, stride, pad, out_h, out_w, average):
    """Pooled (N, OH, OW, C) and the argmax index inside each window (int32; zeros for average pooling)."""
    cp = backend.xp_of_device("gpu")
    n, h, w, c = img.shape
    out = cp.empty((n, out_h, out_w, c), dtype=img.dtype)
    arg = cp.empty((n, out_h, out_w, c), dtype=cp.int32)
    kernel = _indexed_kernel("pool_forward", "raw T img, " + _SIZES + ", bool AVG", "T out, int32 arg", _POOL_FORWARD,
                             img.size)
    kernel(img, h, w, c, out_h, out_w, pool_h, pool_w, stride, pad, average, out, arg)
    return out, arg


def pool_backward(dout, arg, input_shape, pool_h, pool_w, stride, pad, average):
    """Gradient (N, H, W, C) of the pooled input from ``dout`` (N, OH, OW, C): a gather, no atomics."""
    cp = backend.xp_of_device("gpu")
    n, h, w, c = input_shape
    out_h, out_w = dout.shape[1:3]
    dx = cp.empty((n, h, w, c), dtype=dout.dtype)
    kernel = _indexed_kernel("pool_backward", "raw T dout, raw int32 arg, " + _SIZES + ", bool AVG", "T dx",
                             _POOL_BACKWARD, dx.size)
    return kernel(cp.ascontiguousarray(dout), arg, h, w, c, out_h, out_w, pool_h, pool_w, stride, pad, average, dx)


# --- softmax with cross-entropy loss ----------------------------------------------------------

_SOFTMAX_LOSS = """
    const idx_t row = (idx_t)i * K;
    T top = x[row];
    for (int k = 1; k < K; ++k) top = max(top, x[row + k]);
    T total = 0;
    for (int k = 0; k < K; ++k) total += exp(x[row + k] - top);
    for (int k = 0; k < K; ++k) y[row + k] = exp(x[row + k] - top) / total;
    const I label = t[i];
    // a label outside 0..K-1 makes the loss NaN (sqrt(-1)) instead of reading another row
    loss = (label >= 0 && label < K) ? log(total) + top - x[row + label] : sqrt((T)-1);
"""


def softmax_cross_entropy(x, t):
    """Row-wise softmax ``y`` (N, K) of C-contiguous scores and each row's loss (N,), in one launch.

    A label outside 0..K-1 gives its row a NaN loss: checking on the host would wait for the GPU.
    """
    cp = backend.xp_of_device("gpu")
    n, k = x.shape
    y = cp.empty_like(x)
    loss = cp.empty(n, dtype=x.dtype)
    kernel = _indexed_kernel("softmax_loss", "raw T x, raw I t, int32 K", "raw T y, T loss", _SOFTMAX_LOSS, x.size)
    kernel(x, t, k, y, loss)
    return y, loss


def softmax_cross_entropy_backward(y, t, scale):
    """``(y - one_hot(t)) * scale`` (N, K) in one launch."""
    n, k = y.shape
    kernel = _indexed_kernel("softmax_loss_backward", "T y, raw I t, int32 K, T scale", "T dx",
                             "const idx_t j = i; dx = (y - (T)(j % K == t[j / K])) * scale;", y.size)
    return kernel(y, t, k, scale)


# --- activations ------------------------------------------------------------------------------


def relu_forward(x):
    """``(max(x, 0), x > 0)`` in one launch; NaN stays NaN, as in ``xp.maximum``."""
    kernel = _kernel("relu", "T x", "T y, bool mask", "mask = x > (T)0; y = (mask || x != x) ? x : (T)0;")
    return kernel(x)


# --- optimizers: one launch per parameter ----------------------------------------------------

_UPDATES = {
    "sgd": ("T grad, T lr", "T param", "param -= lr * grad;"),
    "momentum": ("T grad, T lr, T mu", "T param, T v", "v = mu * v - lr * grad; param += v;"),
    "nesterov": ("T grad, T lr, T mu", "T param, T v",
                 "v = mu * v - lr * grad; param += mu * mu * v - (1 + mu) * lr * grad;"),
    "adagrad": ("T grad, T lr, T eps", "T param, T h", "h += grad * grad; param -= lr * grad / (sqrt(h) + eps);"),
    "rmsprop": ("T grad, T lr, T rho, T eps", "T param, T h",
                "h = rho * h + (1 - rho) * grad * grad; param -= lr * grad / (sqrt(h) + eps);"),
    "adam": ("T grad, T lr_t, T b1, T b2, T eps, T decay", "T param, T m, T v",
             "m += (1 - b1) * (grad - m); v += (1 - b2) * (grad * grad - v);"
             " param = param * decay - lr_t * m / (sqrt(v) + eps);"),
}


def update(name, *args):
    """Apply optimizer ``name``'s update in place: ``args`` are its inputs, then the arrays it updates."""
    in_params, out_params, body = _UPDATES[name]
    return _kernel("update_" + name, in_params, out_params, body)(*args)
