"""The book's layers (chapters 5 to 7), with its names and ``forward``/``backward`` protocol.

Every layer computes with the array module (NumPy or CuPy) of its input,
and a layer with parameters on the device and in the dtype of those
parameters: an input of another dtype is cast to it (so float32 parameters
never produce float64), an input on another device is an error that says
how to move it. Gradients are kept as attributes (``dW``, ``db``,
``dgamma``, ``dbeta``) after ``backward``.

Fixed relative to the book, each noted where it happens:

* ``Relu.backward`` no longer overwrites the caller's gradient array.
* ``Dropout`` is inverted dropout: it scales by 1/(1-p) while training and
  is the identity at test time (the book multiplies by 1-p at test time).
* ``BatchNormalization`` on 4-D input normalizes per channel, over
  (N, H, W), as in the literature; the book normalizes per C*H*W element.
  Its running variance starts at 1, not 0.
* ``Pooling`` honours ``pad`` (the book's output size ignores it) and pads
  max pooling with -inf, so padding never wins a max.
* ``SoftmaxWithLoss`` uses a log-softmax; labels are indices or one-hot.
"""

from __future__ import annotations

from . import backend
from .backend import DeviceError, get_array_module
from .functions import log_softmax
from .util import col2im, conv_output_size, im2col

__all__ = [
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
]


# --- checks at the boundary ---------------------------------------------------


def _as_param_array(layer, x, param):
    """``x`` on ``param``'s device, in ``param``'s dtype; a DeviceError if the devices differ."""
    x_dev, p_dev = backend.device_of(x), backend.device_of(param)
    if x_dev != p_dev:
        raise DeviceError(
            f"{layer}: the input is on {x_dev} but the parameters are on {p_dev}; move the input with "
            f"xpnet.to_device(x, {p_dev!r}), or the network with net.to({x_dev!r})"
        )
    xp = get_array_module(param)
    if not isinstance(x, xp.ndarray):
        x = xp.asarray(x)
    return x.astype(param.dtype, copy=False)


def _as_float_array(x):
    """Arrays keep their floating dtype; integer arrays (images as uint8) become float32."""
    xp = get_array_module(x)
    if not isinstance(x, xp.ndarray):
        x = xp.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(backend.DEFAULT_DTYPE)
    return x


def _check_positive_int(layer, name, value, minimum):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{layer}: {name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_rank(layer, x, ranks, what):
    if x.ndim not in ranks:
        raise ValueError(f"{layer}: input must be {what}, got shape {tuple(x.shape)}")


def _check_param_shape(layer, name, array, shape):
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{layer}: {name} must have shape {tuple(shape)}, got {tuple(array.shape)}")


def _output_size(layer, axis, size, window, stride, pad):
    try:
        return conv_output_size(size, window, stride, pad)
    except ValueError as exc:
        raise ValueError(f"{layer}: {axis}: {exc}") from None


# --- activations --------------------------------------------------------------


class Relu:
    """max(0, x). ``backward`` returns a new array (the book zeroes ``dout`` in place)."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        x = _as_float_array(x)
        self.mask = x > 0
        return get_array_module(x).maximum(x, 0)

    def backward(self, dout):
        return dout * self.mask


class Sigmoid:
    """1 / (1 + exp(-x)), computed without overflow."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        xp = get_array_module(x)
        x = _as_float_array(x)
        self.out = 0.5 * (1.0 + xp.tanh(0.5 * x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


# --- dense layers -------------------------------------------------------------


class Affine:
    """y = x W + b.

    ``W`` (D, M), ``b`` (M,); ``x`` is (N, D) or any (N, ...) whose trailing
    dimensions multiply to D (an image batch from a convolution). ``dx`` has
    ``x``'s shape.
    """

    def __init__(self, W, b):
        if W.ndim != 2:
            raise ValueError(f"Affine: W must be 2-D (D, M), got shape {tuple(W.shape)}")
        _check_param_shape("Affine", "b", b, (W.shape[1],))
        self.W, self.b = W, b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x = _as_param_array("Affine", x, self.W)
        if x.ndim < 1:
            raise ValueError("Affine: input must have a batch axis, got a scalar")
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.W.shape[0]:
            raise ValueError(
                f"Affine: input of shape {tuple(self.original_x_shape)} has {x.shape[1]} features per "
                f"example, but W has {self.W.shape[0]} rows"
            )
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        dout = dout.astype(self.W.dtype, copy=False)
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return (dout @ self.W.T).reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss.

    ``forward(x, t)``: scores ``x`` (N, K); labels ``t`` as class indices (N,)
    or one-hot rows (N, K). Returns the loss as a 0-d array on ``x``'s device
    (read it with ``float(loss)``). ``backward(dout=1)`` returns (N, K).
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        xp = get_array_module(x)
        x = _as_float_array(x)
        _check_rank("SoftmaxWithLoss", x, (2,), "2-D scores (N, K)")
        n, k = x.shape
        if backend.device_of(t) != backend.device_of(x):
            raise DeviceError(
                f"SoftmaxWithLoss: the scores are on {backend.device_of(x)} but the labels are on "
                f"{backend.device_of(t)}; move the labels with xpnet.to_device(t, {backend.device_of(x)!r})"
            )
        if t.shape == x.shape:
            t = t.argmax(axis=1)
        elif t.shape != (n,):
            raise ValueError(
                f"SoftmaxWithLoss: labels must be indices ({n},) or one-hot ({n}, {k}), got shape {tuple(t.shape)}"
            )
        if t.dtype.kind not in "iu":
            raise ValueError(f"SoftmaxWithLoss: index labels must be integers, got dtype {t.dtype}")
        if xp.__name__ == "numpy" and n and (t.min() < 0 or t.max() >= k):
            raise ValueError(f"SoftmaxWithLoss: labels must lie in 0..{k - 1}, got {t.min()}..{t.max()}")
        log_y = log_softmax(x)
        self.t = t.astype(xp.intp, copy=False)
        self.y = xp.exp(log_y)
        self.loss = -xp.take_along_axis(log_y, self.t[:, None], axis=1).mean()
        return self.loss

    def backward(self, dout=1):
        xp = get_array_module(self.y)
        n = self.y.shape[0]
        dx = self.y.copy()
        dx[xp.arange(n), self.t] -= 1
        return dx * (dout / n)


class Dropout:
    """Inverted dropout: during training each unit is zeroed with probability
    ``dropout_ratio`` and the survivors are scaled by 1/(1 - dropout_ratio);
    at test time it is the identity.

    The book instead scales by (1 - dropout_ratio) at test time; the expected
    outputs agree, but inverted dropout leaves inference untouched. Masks are
    drawn on the input's device from the generator seeded by ``xpnet.seed``.
    """

    def __init__(self, dropout_ratio=0.5):
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = float(dropout_ratio)
        self.mask = None

    def forward(self, x, train_flg=True):
        x = _as_float_array(x)
        if not train_flg:
            return x
        xp = get_array_module(x)
        keep = backend.random_uniform(xp, x.shape) >= self.dropout_ratio
        self.mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.dropout_ratio))
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class BatchNormalization:
    """Batch normalization (Ioffe and Szegedy, 2015).

    Input (N, D) with ``gamma``, ``beta`` of shape (D,), or (N, C, H, W) with
    ``gamma``, ``beta`` of shape (C,): statistics are taken per feature over
    the batch, or per channel over (N, H, W). The book flattens 4-D input and
    normalizes each of the C*H*W elements separately; this class does not.

    ``forward(x, train_flg=True)`` uses the batch statistics and updates
    ``running_mean``/``running_var`` as ``momentum * running + (1 - momentum)
    * batch`` (biased variance, as the book); with ``train_flg=False`` it uses
    the running statistics, which start at mean 0 and variance 1 (the book
    starts the variance at 0, so an untrained network divides by sqrt(eps)).
    """

    eps = 1e-6

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        if gamma.ndim != 1:
            raise ValueError(f"BatchNormalization: gamma must be 1-D, got shape {tuple(gamma.shape)}")
        _check_param_shape("BatchNormalization", "beta", beta, gamma.shape)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum}")
        self.gamma, self.beta = gamma, beta
        self.momentum = float(momentum)
        self.running_mean, self.running_var = running_mean, running_var
        self.train_flg = True
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def _axes(self, x):
        _check_rank("BatchNormalization", x, (2, 4), "(N, D) or (N, C, H, W)")
        features = x.shape[1]
        if features != self.gamma.shape[0]:
            what = "channels" if x.ndim == 4 else "features"
            raise ValueError(
                f"BatchNormalization: input of shape {tuple(x.shape)} has {features} {what}, "
                f"but gamma has {self.gamma.shape[0]}"
            )
        return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))

    def forward(self, x, train_flg=True):
        x = _as_param_array("BatchNormalization", x, self.gamma)
        xp = get_array_module(x)
        axes, shape = self._axes(x)
        self.train_flg = train_flg
        if self.running_mean is None:
            self.running_mean = xp.zeros(x.shape[1], dtype=x.dtype)
            self.running_var = xp.ones(x.shape[1], dtype=x.dtype)
        if train_flg:
            mu = x.mean(axis=axes)
            xc = x - mu.reshape(shape)
            var = (xc * xc).mean(axis=axes)
            m = self.momentum
            self.running_mean = m * self.running_mean + (1.0 - m) * mu
            self.running_var = m * self.running_var + (1.0 - m) * var
        else:
            xc = x - self.running_mean.reshape(shape)
            var = self.running_var
        self.std = xp.sqrt(var + self.eps).reshape(shape)
        self.xn = xc / self.std
        return self.gamma.reshape(shape) * self.xn + self.beta.reshape(shape)

    def backward(self, dout):
        dout = dout.astype(self.gamma.dtype, copy=False)
        axes, shape = self._axes(dout)
        self.dbeta = dout.sum(axis=axes)
        self.dgamma = (self.xn * dout).sum(axis=axes)
        dxn = dout * self.gamma.reshape(shape)
        if not self.train_flg:  # the running statistics are constants
            return dxn / self.std
        # d/dx of (x - batch mean) / batch std, in closed form.
        mean_dxn = dxn.mean(axis=axes).reshape(shape)
        mean_dxn_xn = (dxn * self.xn).mean(axis=axes).reshape(shape)
        return (dxn - mean_dxn - self.xn * mean_dxn_xn) / self.std


# --- convolution and pooling ----------------------------------------------------


class Convolution:
    """2-D convolution (cross-correlation, as in the book) by im2col and one matrix product.

    ``W`` (FN, C, FH, FW) filters, ``b`` (FN,) biases. ``forward`` takes
    (N, C, H, W) and returns (N, FN, OH, OW) with
    ``OH = floor((H + 2*pad - FH) / stride) + 1`` (likewise OW).
    """

    def __init__(self, W, b, stride=1, pad=0):
        if W.ndim != 4:
            raise ValueError(f"Convolution: W must be 4-D (FN, C, FH, FW), got shape {tuple(W.shape)}")
        _check_param_shape("Convolution", "b", b, (W.shape[0],))
        self.W, self.b = W, b
        self.stride = _check_positive_int("Convolution", "stride", stride, 1)
        self.pad = _check_positive_int("Convolution", "pad", pad, 0)
        self.x_shape = None
        self.col = None
        self.col_W = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x = _as_param_array("Convolution", x, self.W)
        _check_rank("Convolution", x, (4,), "4-D (N, C, H, W)")
        fn, c, fh, fw = self.W.shape
        n, xc, h, w = x.shape
        if xc != c:
            raise ValueError(f"Convolution: input has {xc} channels, but W of shape {tuple(self.W.shape)} expects {c}")
        out_h = _output_size("Convolution", "height", h, fh, self.stride, self.pad)
        out_w = _output_size("Convolution", "width", w, fw, self.stride, self.pad)
        self.x_shape = x.shape
        self.col = im2col(x, fh, fw, self.stride, self.pad)
        self.col_W = self.W.reshape(fn, -1).T
        out = self.col @ self.col_W + self.b
        return out.reshape(n, out_h, out_w, fn).transpose(0, 3, 1, 2)

    def backward(self, dout):
        fn, c, fh, fw = self.W.shape
        dout = dout.astype(self.W.dtype, copy=False).transpose(0, 2, 3, 1).reshape(-1, fn)
        self.db = dout.sum(axis=0)
        self.dW = (dout.T @ self.col).reshape(fn, c, fh, fw)
        dcol = dout @ self.col_W.T
        return col2im(dcol, self.x_shape, fh, fw, self.stride, self.pad)


class Pooling:
    """Max (default) or average pooling over ``pool_h`` x ``pool_w`` windows.

    (N, C, H, W) in, (N, C, OH, OW) out with ``OH = floor((H + 2*pad -
    pool_h) / stride) + 1``. Note the book's default ``stride=1``; its
    networks pass ``stride=2`` for 2x2 pooling. ``pad`` must be smaller than
    the window, so that every window holds at least one real pixel.

    Fixed relative to the book: the output size accounts for ``pad`` (the
    book's ignores it and fails or misplaces values when pad > 0), and max
    pooling pads with -inf rather than zero. Average pooling pads with zero
    and divides by the full window size (PyTorch's ``count_include_pad``).
    Ties inside a window send the gradient to the first maximum.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0, mode="max"):
        self.pool_h = _check_positive_int("Pooling", "pool_h", pool_h, 1)
        self.pool_w = _check_positive_int("Pooling", "pool_w", pool_w, 1)
        self.stride = _check_positive_int("Pooling", "stride", stride, 1)
        self.pad = _check_positive_int("Pooling", "pad", pad, 0)
        if self.pad >= min(self.pool_h, self.pool_w):
            raise ValueError(
                f"Pooling: pad ({self.pad}) must be smaller than the window ({self.pool_h}x{self.pool_w})"
            )
        if mode not in ("max", "avg"):
            raise ValueError(f"Pooling: mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode
        self.x_shape = None
        self.arg_max = None

    def forward(self, x):
        x = _as_float_array(x)
        xp = get_array_module(x)
        _check_rank("Pooling", x, (4,), "4-D (N, C, H, W)")
        n, c, h, w = x.shape
        out_h = _output_size("Pooling", "height", h, self.pool_h, self.stride, self.pad)
        out_w = _output_size("Pooling", "width", w, self.pool_w, self.stride, self.pad)
        self.x_shape = x.shape
        if self.pad:
            p = self.pad
            fill = -xp.inf if self.mode == "max" else 0.0
            x = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
        col = im2col(x, self.pool_h, self.pool_w, self.stride).reshape(-1, self.pool_h * self.pool_w)
        if self.mode == "max":
            self.arg_max = col.argmax(axis=1)
            out = xp.take_along_axis(col, self.arg_max[:, None], axis=1)
        else:
            out = col.mean(axis=1)
        return out.reshape(n, out_h, out_w, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        xp = get_array_module(dout)
        n, c, h, w = self.x_shape
        p = self.pad
        window = self.pool_h * self.pool_w
        dout = dout.transpose(0, 2, 3, 1).reshape(-1)
        if self.mode == "max":
            dcol = xp.zeros((dout.size, window), dtype=dout.dtype)
            dcol[xp.arange(dout.size), self.arg_max] = dout
        else:
            dcol = xp.broadcast_to((dout * (1.0 / window))[:, None], (dout.size, window))
        padded_shape = (n, c, h + 2 * p, w + 2 * p)
        dx = col2im(dcol.reshape(-1, c * window), padded_shape, self.pool_h, self.pool_w, self.stride)
        return dx[:, :, p:p + h, p:p + w]
