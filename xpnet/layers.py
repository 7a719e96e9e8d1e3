"""The book's layers (chapters 5 to 7), with its names and ``forward``/``backward`` protocol.

Every layer computes with the array module (NumPy or CuPy) of its input,
and a layer with parameters on the device and in the dtype of those
parameters: an input of another dtype is cast to it (so float32 parameters
never produce float64), an input on another device is an error that says
how to move it. Gradients are kept as attributes (``dW``, ``db``,
``dgamma``, ``dbeta``) after ``backward``.

Parameters are floating point, one dtype per layer: integer, boolean or
complex weights, and a float64 bias beside float32 weights, are a
ValueError, never converted (a converted copy would no longer be the array
the network and its optimizer update). ``backward(dout)`` needs a
``forward`` first (else a RuntimeError) and a ``dout`` of exactly the
forward output's shape (else a ValueError naming both shapes; nothing is
broadcast).

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

from . import backend, fastpaths, kernels
from .backend import DeviceError, get_array_module
from .functions import log_softmax, sigmoid
from .labels import class_indices
from .threads import split
from .util import (
    batch_parts,
    Parts,
    row_parts,
    rows_of,
    whole_images,
    channels_last,
    col2im_array,
    conv_output_size,
    elementwise,
    im2col_array,
    im2col_by_offsets,
    map_elements,
    window_rows,
    map_parts,
    pad_channels_last,
    sum_in_order,
    window_offsets,
)

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


def _as_param_array(layer, x, param, what="the input", fix=None):
    """``x`` on ``param``'s device, in ``param``'s dtype; a DeviceError if the devices differ."""
    x_dev, p_dev = backend.device_of(x), backend.device_of(param)
    if x_dev != p_dev:
        fix = fix or f"move the input with xpnet.to_device(x, {p_dev!r}), or the network with net.to({x_dev!r})"
        raise DeviceError(f"{layer}: {what} is on {x_dev} but the parameters are on {p_dev}; {fix}")
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


def _memory_order(x):
    """A C-contiguous view of ``x`` and how to undo it: channels-last images (an (N, C, H, W) view of
    (N, H, W, C) memory) come back as their (N, H, W, C) view, so elementwise work keeps the layout."""
    if x.ndim == 4 and not x.flags.c_contiguous and channels_last(x).flags.c_contiguous:
        return channels_last(x), (0, 3, 1, 2)
    return x, None


def _restore_order(x, back):
    return x if back is None else x.transpose(back)


def _check_positive_int(layer, name, value, minimum):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{layer}: {name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_rank(layer, x, ranks, what):
    if x.ndim not in ranks:
        raise ValueError(f"{layer}: input must be {what}, got shape {tuple(x.shape)}")


def _check_param_dtypes(layer, **params):
    """Parameters are floating point and share one dtype (a float64 bias would make float32 outputs float64)."""
    for name, array in params.items():
        if array.dtype.kind != "f":
            raise ValueError(f"{layer}: {name} must be floating point (float32 or float64), got {array.dtype}")
    (first, a), *others = params.items()
    for name, array in others:
        if array.dtype != a.dtype:
            raise ValueError(f"{layer}: {first} is {a.dtype} but {name} is {array.dtype}; the parameters of one layer "
                             f"share one floating dtype (convert with .astype)")


def _check_dout(layer, dout, shape):
    """``dout`` of the forward output's ``shape`` (None: no forward yet); no broadcasting."""
    if shape is None:
        raise RuntimeError(f"{layer}.backward: called before forward")
    got = tuple(getattr(dout, "shape", ()))
    if got != tuple(shape):
        raise ValueError(f"{layer}.backward: dout has shape {got}, but the forward output had {tuple(shape)}")


def _check_param_shape(layer, name, array, shape):
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{layer}: {name} must have shape {tuple(shape)}, got {tuple(array.shape)}")


def _bias(layer, b, W, size):
    """The bias of a layer: an array of shape (size,) as given; a scalar (a number or a 0-d array, as the
    book's apply_filter.py passes ``0``) broadcast to ``size`` copies on W's device, in W's dtype."""
    if getattr(b, "ndim", 0) == 0:
        value = backend.to_numpy(b).item() if hasattr(b, "shape") else b
        return get_array_module(W).full(size, value, dtype=W.dtype)
    _check_param_shape(layer, "b", b, (size,))
    return b


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
        self._back = None

    def forward(self, x):
        x, self._back = _memory_order(_as_float_array(x))
        xp = get_array_module(x)
        if kernels.active(xp):
            out, mask = kernels.relu_forward(x)
        else:
            out, mask = xp.empty_like(x), xp.empty(x.shape, dtype=bool)
            map_elements(_relu_and_mask, out, x, mask)
        self.mask = _restore_order(mask, self._back)
        return _restore_order(out, self._back)

    def backward(self, dout):
        _check_dout("Relu", dout, None if self.mask is None else self.mask.shape)
        if self._back is None:
            return _product(dout, self.mask)
        return _restore_order(_product(channels_last(dout), channels_last(self.mask)), self._back)


def _relu_and_mask(out, x, mask):
    xp = get_array_module(x)
    xp.maximum(x, 0, out=out)  # functions.relu (the book's signature) written in place; NaN stays NaN
    xp.greater(x, 0, out=mask)


def _product(a, b):
    """``a * b`` in slices of the batch (in parallel on the CPU), laid out in memory as ``b``."""
    xp = get_array_module(a)
    if kernels.active(xp) or a.ndim == 0 or a.shape != b.shape:
        return a * b
    out = xp.empty_like(b, dtype=xp.result_type(a, b))
    return map_elements(lambda out, a, b: xp.multiply(a, b, out=out), out, a, b)


class Sigmoid:
    """1 / (1 + exp(-x)), computed without overflow."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        x = _as_float_array(x)
        self.out = map_elements(_sigmoid, get_array_module(x).empty_like(x), x)
        return self.out

    def backward(self, dout):
        _check_dout("Sigmoid", dout, None if self.out is None else self.out.shape)
        xp = get_array_module(dout)
        return map_elements(_sigmoid_gradient, xp.empty_like(self.out, dtype=xp.result_type(dout, self.out)), dout,
                            self.out)


def _sigmoid(out, x):
    out[...] = sigmoid(x)


def _sigmoid_gradient(dx, dout, out):
    """dx = dout * (1 - out) * out"""
    xp = get_array_module(out)
    xp.subtract(1.0, out, out=dx)
    dx *= out
    dx *= dout


# --- dense layers -------------------------------------------------------------


class Affine:
    """y = x W + b.

    ``W`` (D, M), ``b`` (M,) (a scalar is broadcast to M copies), floating
    point of one dtype (else a ValueError); ``x`` is (N, D) or any (N, ...)
    whose trailing dimensions multiply to D (an image batch from a
    convolution), cast to ``W``'s dtype. ``dx`` has ``x``'s shape.
    """

    def __init__(self, W, b):
        if W.ndim != 2:
            raise ValueError(f"Affine: W must be 2-D (D, M), got shape {tuple(W.shape)}")
        b = _bias("Affine", b, W, W.shape[1])
        _check_param_dtypes("Affine", W=W, b=b)
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
        n, d = x.shape[0], x[:1].size
        if d != self.W.shape[0]:
            raise ValueError(
                f"Affine: input of shape {tuple(self.original_x_shape)} has {d} features per "
                f"example, but W has {self.W.shape[0]} rows"
            )
        xp = get_array_module(x)
        parts = batch_parts(xp, n, (d + self.W.shape[1]) * x.itemsize, flops_per_example=2 * d * self.W.shape[1])
        flat = len(parts) == 1 or x.flags.c_contiguous
        # A view that cannot be flattened as it is (an image batch in channels-last memory) is copied:
        # by reshape, or slice by slice into a new array.
        self.x = x.reshape(n, d) if flat else xp.empty((n, d), dtype=x.dtype)
        out = xp.empty((n, self.W.shape[1]), dtype=x.dtype)

        def forward_part(part):
            if not flat:
                self.x[part].reshape(x[part].shape)[...] = x[part]
            xp.matmul(self.x[part], self.W, out=out[part])
            out[part] += self.b

        map_parts(xp, forward_part, parts)
        return out

    def backward(self, dout):
        _check_dout("Affine", dout, None if self.x is None else (self.x.shape[0], self.W.shape[1]))
        dout = dout.astype(self.W.dtype, copy=False)
        xp = get_array_module(dout)
        n, (d, m) = self.x.shape[0], self.W.shape
        self.db = dout.sum(axis=0)
        parts = batch_parts(xp, n, (d + m) * dout.itemsize, flops_per_example=4 * d * m)
        # dW by slices of its rows (each a full sum over the batch: nothing to add up), dx by slices of the batch;
        # even as one slice of each, the products run inside xpnet's work, where BLAS is held at one thread.
        self.dW = xp.empty_like(self.W)
        dx = xp.empty((n, d), dtype=self.W.dtype)
        if len(parts) == 1:  # small: both products in one item, no thread woken
            items = [(("dW", slice(None)), ("dx", slice(None)))]
        else:
            items = Parts([(("dW", rows),) for rows in split(d, len(parts))] + [(("dx", part),) for part in parts],
                          parts.workers)

        def backward_part(item):
            for which, part in item:
                if which == "dW":
                    xp.matmul(self.x[:, part].T, dout, out=self.dW[part])
                else:
                    xp.matmul(dout[part], self.W.T, out=dx[part])

        map_parts(xp, backward_part, items)
        return dx.reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss.

    ``forward(x, t)``: scores ``x`` (N, K); labels ``t`` as class indices (N,)
    or (N, 1), or as rows (N, K) of target probabilities, one-hot or not. Returns the
    loss as a 0-d array on ``x``'s device (read it with ``float(loss)``).
    ``backward(dout=1)`` returns (N, K).

    Fixed relative to the book: the book turns label rows into indices with
    ``argmax`` in the forward pass but uses the rows themselves in the
    backward pass, so soft labels get a loss and a gradient that disagree;
    here a row ``t`` gives the full cross-entropy ``-sum(t * log y)`` and its
    gradient ``sum(t) * y - t``. Index labels outside 0..K-1 are a
    ValueError on the CPU; on the GPU they make the loss NaN (checking them
    on the host would wait for the GPU at every step).
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
        indices = class_indices(t, n, k, "SoftmaxWithLoss")
        if indices is None:
            return self._forward_rows(x, t)
        self.t = indices.astype(xp.intp, copy=False)
        if kernels.active(xp):
            self.y, row_loss = kernels.softmax_cross_entropy(xp.ascontiguousarray(x), self.t)
            self.loss = row_loss.mean()
            return self.loss
        self.y = xp.empty_like(x)

        def forward_rows(part):
            """softmax of a slice of rows into y; the sum of the log-probabilities of their labels (NaN for a
            label outside 0..K-1)."""
            log_y = log_softmax(x[part])
            xp.exp(log_y, out=self.y[part])
            t = self.t[part]
            inside = (t >= 0) & (t < k)
            picked = xp.take_along_axis(log_y, xp.where(inside, t, 0)[:, None], axis=1)[:, 0]
            return xp.where(inside, picked, xp.nan).sum()

        total = sum_in_order(map_parts(xp, forward_rows, batch_parts(xp, n, 4 * k * x.itemsize)))
        self.loss = -(total / n)
        return self.loss

    def _forward_rows(self, x, t):
        xp = get_array_module(x)
        if t.dtype.kind not in "biuf":
            raise ValueError(f"SoftmaxWithLoss: label rows must be numbers, got dtype {t.dtype}")
        self.t = t.astype(x.dtype, copy=False)
        log_y = log_softmax(x)
        self.y = xp.exp(log_y)
        self.loss = -(self.t * log_y).sum(axis=1).mean()
        return self.loss

    def backward(self, dout=1):
        if self.y is None:
            raise RuntimeError("SoftmaxWithLoss.backward: called before forward")
        xp = get_array_module(self.y)
        n = self.y.shape[0]
        if self.t.ndim == 2:
            return (self.t.sum(axis=1, keepdims=True) * self.y - self.t) * (dout / n)
        if kernels.active(xp):
            return kernels.softmax_cross_entropy_backward(self.y, self.t, dout / n)
        dx = xp.empty_like(self.y)
        scale = dout / n

        def backward_rows(part):
            """(y - one_hot(t)) * dout / N for a slice of rows."""
            d = dx[part]
            d[...] = self.y[part]
            d[xp.arange(d.shape[0]), self.t[part]] -= 1
            d *= scale

        map_parts(xp, backward_rows, batch_parts(xp, n, 2 * self.y.shape[1] * self.y.itemsize))
        return dx


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
        self.draws = None  # (xp, shape) -> uniform draws in place of the generator's (a network's pass by slices)

    def forward(self, x, train_flg=True):
        x = _as_float_array(x)
        if not train_flg:
            return x
        xp = get_array_module(x)
        keep = (self.draws or backend.random_uniform)(xp, x.shape) >= self.dropout_ratio
        self.mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.dropout_ratio))
        return _product(x, self.mask)

    def backward(self, dout):
        _check_dout("Dropout", dout, None if self.mask is None else self.mask.shape)
        return _product(dout, self.mask)


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

    ``running_mean`` and ``running_var``, when given, have ``gamma``'s shape
    (D,) or (C,) and sit on ``gamma``'s device (else a DeviceError says how
    to move them); they are cast to ``gamma``'s dtype, so float64 statistics
    never turn a float32 layer into float64. Either may be given alone: the
    missing one starts at zeros (mean) or ones (variance).

    ``sync`` is None (statistics of this process's batch) or an object whose
    ``statistics(x, axes)`` returns the batch mean and variance over the
    batches of every process and whose ``gradient_means(dxn, xn, axes)``
    returns the matching means in ``backward``: the synchronized batch
    normalization of data-parallel training (see
    :func:`xpnet.distributed.synchronize_batch_norm`).
    """

    eps = 1e-6
    buffers = ("running_mean", "running_var")  # state kept with the parameters, not trained

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        if gamma.ndim != 1:
            raise ValueError(f"BatchNormalization: gamma must be 1-D, got shape {tuple(gamma.shape)}")
        _check_param_shape("BatchNormalization", "beta", beta, gamma.shape)
        _check_param_dtypes("BatchNormalization", gamma=gamma, beta=beta)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum}")
        self.gamma, self.beta = gamma, beta
        self.momentum = float(momentum)
        if running_mean is not None or running_var is not None:
            xp = get_array_module(gamma)
            running_mean = (xp.zeros_like(gamma) if running_mean is None
                            else self._as_statistic("running_mean", running_mean, gamma))
            running_var = (xp.ones_like(gamma) if running_var is None
                           else self._as_statistic("running_var", running_var, gamma))
        self.running_mean, self.running_var = running_mean, running_var
        self.train_flg = True
        self.sync = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    @staticmethod
    def _as_statistic(name, value, gamma):
        """A running statistic on ``gamma``'s device, in its dtype, after checking its shape."""
        fix = f"move it with xpnet.to_device({name}, {backend.device_of(gamma)!r})"
        value = _as_param_array("BatchNormalization", value, gamma, what=name, fix=fix)
        if value.shape != gamma.shape:
            raise ValueError(
                f"BatchNormalization: {name} has shape {tuple(value.shape)}, gamma {tuple(gamma.shape)}; "
                f"a running statistic has one value per feature or channel"
            )
        return value

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
        # Sums over the batch are taken slice by slice (in parallel on the CPU) and added in slice order.
        count = x.size // max(x.shape[1], 1)  # values per feature or channel
        xc = xp.empty_like(x)
        if train_flg:
            if self.sync is None:
                (mu,) = _sums_over_slices(lambda x: (x.sum(axis=axes),), x)
                mu = mu / count

                def center(xc, x):
                    xp.subtract(x, mu.reshape(shape), out=xc)
                    return ((xc * xc).sum(axis=axes),)

                (var,) = _sums_over_slices(center, xc, x)
                var = var / count
            else:  # the statistics of the global batch, across ranks
                mu, var = self.sync.statistics(x, axes)
                elementwise(lambda xc, x: xp.subtract(x, mu.reshape(shape), out=xc), xc, x)
            m = self.momentum
            self.running_mean = m * self.running_mean + (1.0 - m) * mu
            self.running_var = m * self.running_var + (1.0 - m) * var
        else:
            elementwise(lambda xc, x: xp.subtract(x, self.running_mean.reshape(shape), out=xc), xc, x)
            var = self.running_var
        self.std = xp.sqrt(var + self.eps).reshape(shape)
        gamma, beta = self.gamma.reshape(shape), self.beta.reshape(shape)

        def normalize(out, xn, xc):
            xp.divide(xc, self.std, out=xn)
            xp.multiply(xn, gamma, out=out)
            out += beta

        self.xn = xp.empty_like(x)
        return elementwise(normalize, xp.empty_like(x), self.xn, xc)

    def backward(self, dout):
        _check_dout("BatchNormalization", dout, None if self.xn is None else self.xn.shape)
        dout = dout.astype(self.gamma.dtype, copy=False)
        xp = get_array_module(dout)
        axes, shape = self._axes(dout)
        self.dbeta, self.dgamma = _sums_over_slices(lambda d, xn: (d.sum(axis=axes), (xn * d).sum(axis=axes)),
                                                    dout, self.xn)
        scale = self.gamma.reshape(shape) / self.std
        if not self.train_flg:  # the running statistics are constants
            return elementwise(lambda dx, d: xp.multiply(d, scale, out=dx), xp.empty_like(dout), dout)
        if self.sync is not None:  # the means of the global batch, across ranks
            dxn = dout * self.gamma.reshape(shape)
            mean_dxn, mean_dxn_xn = self.sync.gradient_means(dxn, self.xn, axes)
            return (dxn - mean_dxn.reshape(shape) - self.xn * mean_dxn_xn.reshape(shape)) / self.std
        # d/dx of gamma * (x - batch mean) / batch std + beta, in closed form: with m values per channel,
        # gamma / std * (dout - dbeta / m - xn * dgamma / m).
        count = dout.size // max(dout.shape[1], 1)
        mean_d, mean_d_xn = (self.dbeta / count).reshape(shape), (self.dgamma / count).reshape(shape)

        def input_gradient(dx, d, xn):
            xp.multiply(xn, mean_d_xn, out=dx)
            xp.subtract(d, dx, out=dx)
            dx -= mean_d
            dx *= scale

        return elementwise(input_gradient, xp.empty_like(dout), dout, self.xn)


def _sums_over_slices(fn, *arrays):
    """``fn(*slices)`` over slices of the batch (in parallel on the CPU), each of its results summed in slice
    order: a reduction over the batch as partial sums, then their total."""
    xp = get_array_module(arrays[0])
    parts = batch_parts(xp, arrays[0].shape[0], sum(a[:1].nbytes for a in arrays))
    partials = map_parts(xp, lambda part: fn(*(a[part] for a in arrays)), parts)
    return [sum_in_order(list(sums)) for sums in zip(*partials)]


# --- convolution and pooling ----------------------------------------------------


class Convolution:
    """2-D convolution (cross-correlation, as in the book) by im2col and one matrix product.

    ``W`` (FN, C, FH, FW) filters, ``b`` (FN,) biases (a scalar is broadcast to
    FN copies: ``Convolution(W, 0)``). ``forward`` takes
    (N, C, H, W) and returns (N, FN, OH, OW) with
    ``OH = floor((H + 2*pad - FH) / stride) + 1`` (likewise OW).

    The book's steps on both devices: :func:`xpnet.util.im2col_array` (whose
    device branch is inside), one product with the filters, the bias; and
    back, the products for dW, db and the column gradient, folded back by
    :func:`xpnet.util.col2im_array`. The output is an (N, FN, OH, OW) view of
    channels-last memory, which the next Convolution or Pooling reads without
    a copy. The batch is unfolded in slices of at most ``col_bytes`` of
    columns (per device kind), on the CPU by every thread at once, and
    ``backward`` unfolds the input again instead of keeping every layer's
    columns alive.

    On the CPU, three fast paths (:mod:`xpnet.fastpaths`) replace steps of
    that generic code where they pay: ``products_by_filter_row`` (stride 1,
    window rows of at least ``filter_row_min_width`` values: one product per
    filter row over :func:`xpnet.util.window_rows` instead of one over the
    full columns), ``columns_by_offset`` (inputs of at most
    ``offset_max_channels`` channels: :func:`xpnet.util.im2col_by_offsets`)
    and ``input_gradient_by_gather`` (dx as a convolution of dout with the
    rotated filters instead of col2im).
    """

    col_bytes = {"cpu": 8 * 2**20, "gpu": 512 * 2**20}  # CPU: few enough items that threads seldom wait on the GIL
    filter_row_min_width = 32  # products_by_filter_row: narrower window rows make products too thin to pay
    offset_max_channels = 3  # columns_by_offset: images of more channels have im2col runs long enough to copy

    def __init__(self, W, b, stride=1, pad=0):
        if W.ndim != 4:
            raise ValueError(f"Convolution: W must be 4-D (FN, C, FH, FW), got shape {tuple(W.shape)}")
        b = _bias("Convolution", b, W, W.shape[0])
        _check_param_dtypes("Convolution", W=W, b=b)
        self.W, self.b = W, b
        self.stride = _check_positive_int("Convolution", "stride", stride, 1)
        self.pad = _check_positive_int("Convolution", "pad", pad, 0)
        self.x_shape = None
        self.x_nhwc = None  # the input, channels-last and C-contiguous, for backward
        self.dW = None
        self.db = None

    def _chunks(self, n, bytes_per_example):
        """Slices of the batch, each unfolding at most ``col_bytes`` of columns; on the CPU a multiple of the
        thread count, so that every thread gets as many examples."""
        xp = get_array_module(self.W)
        return batch_parts(xp, n, bytes_per_example, self.col_bytes["cpu"], self.col_bytes["gpu"])

    def _items(self, n, rows, bytes_per_row):
        """Items ``(batch slice, k, cuts)``: slices of the batch as :meth:`_chunks` cuts it, or on the CPU, for a
        batch smaller than the thread count, runs of output rows of each image (``xpnet.util.row_parts``)."""
        xp = get_array_module(self.W)
        return row_parts(xp, n, rows, bytes_per_row, self.col_bytes["cpu"], self.col_bytes["gpu"])

    def _im2col(self, img, rows=slice(None)):
        """The columns of ``img`` (n, H, W, C), output ``rows`` only, for this layer's window, stride and pad: an
        (n*OH*OW, FH*FW*C) matrix, built by offsets (fast path ``columns_by_offset``) for few channels."""
        fh, fw = self.W.shape[2:]
        if self._columns_by_offset(get_array_module(img)):
            return im2col_by_offsets(img, fh, fw, self.stride, self.pad, rows=rows)
        return im2col_array(img, fh, fw, self.stride, self.pad, rows=rows)

    def _columns_by_offset(self, xp):
        """Whether the fast path ``columns_by_offset`` applies: on the CPU, for inputs of at most
        ``offset_max_channels`` channels."""
        c = self.W.shape[1]
        return c <= self.offset_max_channels and xp.__name__ == "numpy" and fastpaths.enabled("columns_by_offset")

    def _col_W(self):
        """W as a (FH*FW*C, FN) matrix, matching the (fy, fx, c) column order."""
        fn = self.W.shape[0]
        return self.W.transpose(0, 2, 3, 1).reshape(fn, -1).T

    def forward(self, x):
        x = _as_param_array("Convolution", x, self.W)
        _check_rank("Convolution", x, (4,), "4-D (N, C, H, W)")
        xp = get_array_module(x)
        fn, c, fh, fw = self.W.shape
        n, xc, h, w = x.shape
        if xc != c:
            raise ValueError(f"Convolution: input has {xc} channels, but W of shape {tuple(self.W.shape)} expects {c}")
        out_h = _output_size("Convolution", "height", h, fh, self.stride, self.pad)
        out_w = _output_size("Convolution", "width", w, fw, self.stride, self.pad)
        self.x_shape = x.shape
        self.x_nhwc = xp.ascontiguousarray(channels_last(x))  # free when x came from a Convolution or Pooling
        by_filter_row = self._by_filter_row(xp, c)
        W_rows = self._filter_rows() if by_filter_row else None
        col_W = None if by_filter_row else self._col_W()
        out = xp.empty((n, out_h, out_w, fn), dtype=x.dtype)

        def forward_part(item):
            """The book's steps on one slice of the batch (or rows of an image): im2col, one product, the bias."""
            part, k, cuts = item
            rows = rows_of(out_h, k, cuts)
            if by_filter_row:
                self._products_by_filter_row(self.x_nhwc[part], self.pad, W_rows, rows, out[part, rows])
            else:
                out_rows = out[part, rows].reshape(-1, fn)  # a view: one image's rows, or whole images
                xp.matmul(self._im2col(self.x_nhwc[part], rows), col_W, out=out_rows)
            out[part, rows] += self.b

        map_parts(xp, forward_part, self._items(n, out_h, out_w * fh * fw * c * x.itemsize))
        return out.transpose(0, 3, 1, 2)

    def _by_filter_row(self, xp, channels):
        """Whether the fast path ``products_by_filter_row`` applies: stride 1 on the CPU, and windows whose rows
        hold at least ``filter_row_min_width`` values (FW * the input's channels)."""
        fw = self.W.shape[3]
        wide = fw * channels >= self.filter_row_min_width
        return self.stride == 1 and wide and not kernels.active(xp) and fastpaths.enabled("products_by_filter_row")

    def _filter_rows(self, flipped=False):
        """W as FH matrices (FW*C, FN), one per filter row, in the (fx, c) order of :func:`window_rows`; or the
        180-degree-rotated filters as FH matrices (FW*FN, C), which map dout to dx."""
        fn, c, fh, fw = self.W.shape
        if flipped:
            return self.W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(fh, fw * fn, c)
        return self.W.transpose(2, 3, 1, 0).reshape(fh, fw * c, fn)

    @staticmethod
    def _products_by_filter_row(img, pad, W_rows, rows, out):
        """``out`` (n, r, OW, K) = the stride-1 convolution of ``img`` (n, H, W, C), padded by ``pad``, for the
        output ``rows`` (r of them): the window rows of the input rows they need, then one product per filter
        row, added up. ``W_rows`` (FH, FW*C, K); ``out`` must be a C-contiguous view."""
        xp = get_array_module(img)
        n, r, out_w, k = out.shape
        fh = W_rows.shape[0]
        first = rows.start or 0
        px = window_rows(img, W_rows.shape[1] // img.shape[3], pad, first, r + fh - 1)
        products = out.reshape(n, r * out_w, k)
        width = px.shape[3]
        xp.matmul(px[:, :r].reshape(n, r * out_w, width), W_rows[0], out=products)
        if fh > 1:
            term = xp.empty_like(products)
            for fy in range(1, fh):
                xp.matmul(px[:, fy:fy + r].reshape(n, r * out_w, width), W_rows[fy], out=term)
                products += term

    def _output_shape(self):
        """(N, FN, OH, OW) of the last forward, or None before any."""
        if self.x_shape is None:
            return None
        n, _, h, w = self.x_shape
        fn, _, fh, fw = self.W.shape
        return n, fn, conv_output_size(h, fh, self.stride, self.pad), conv_output_size(w, fw, self.stride, self.pad)

    def _gathers_input_gradient(self, xp):
        """Whether dx is better computed as a convolution of dout with the flipped filters (the CPU fast path
        ``input_gradient_by_gather``; a GPU's col2im kernel is a gather already).

        That gather (an im2col of dout, then one product) beats scattering the
        column gradient back (one strided add per filter offset) when the
        layer does not widen the channels much; it needs stride 1 and
        pad < the filter size.
        """
        fn, c, fh, fw = self.W.shape
        fits = self.stride == 1 and self.pad < min(fh, fw) and fn <= 2 * c
        return fits and not kernels.active(xp) and fastpaths.enabled("input_gradient_by_gather")

    def backward(self, dout, input_gradient=True):
        """dW, db and the returned dx from ``dout`` (N, FN, OH, OW).

        ``input_gradient=False`` skips dx and returns None: a network's first
        layer, whose input is the data, needs only dW and db.
        """
        _check_dout("Convolution", dout, self._output_shape())
        xp = get_array_module(dout)
        fn, c, fh, fw = self.W.shape
        n, _, h, w = self.x_shape
        dout = channels_last(dout.astype(self.W.dtype, copy=False))
        out_h, out_w = dout.shape[1:3]
        gather = input_gradient and self._gathers_input_gradient(xp)
        dx = xp.empty((n, h, w, c), dtype=self.W.dtype) if input_gradient else None
        col_W = self._col_W() if input_gradient and not gather else None  # for col2im's column gradient
        by_filter_row = self._by_filter_row(xp, c)
        dx_by_filter_row = gather and self._by_filter_row(xp, fn)
        flipped_rows = self._filter_rows(flipped=True) if gather else None  # (FH, FW*FN, C)

        def backward_part(item):
            """The book's steps on one slice of the batch (or rows of an image): dW and db of the slice, and its
            rows of dx."""
            part, k, cuts = item
            rows = rows_of(out_h, k, cuts)
            d_img = xp.ascontiguousarray(dout[part])
            d = d_img[:, rows].reshape(-1, fn)
            if by_filter_row:
                dW = self._weight_gradient_by_filter_row(self.x_nhwc[part], d_img[:, rows], rows)
            else:
                dW = xp.dot(d.T, self._im2col(self.x_nhwc[part], rows))  # dot, not @: see _column_sums
            db = _column_sums(d)
            if dx_by_filter_row:
                dx_rows = rows_of(h, k, cuts)
                self._products_by_filter_row(d_img, (fh - 1 - self.pad, fw - 1 - self.pad), flipped_rows, dx_rows,
                                             dx[part, dx_rows])
            elif gather:
                self._input_gradient_by_gather(d_img, flipped_rows, dx[part], rows_of(h, k, cuts))
            elif dx is not None:
                col2im_array(d @ col_W.T, dx[part].shape, fh, fw, self.stride, self.pad, out=dx[part])
            return dW, db

        widest = max(c, fn) if gather else c  # the columns of x, and of dout where dx is a gather
        column_bytes = max(out_h * out_w, h * w) * fh * fw * widest * dout.itemsize
        if gather or dx is None:
            items = self._items(n, out_h, -(-column_bytes // out_h))
        else:  # col2im adds into neighbouring rows: whole images only
            items = whole_images(self._chunks(n, column_bytes))
        parts = map_parts(xp, backward_part, items)
        self.db = sum_in_order([db for _, db in parts])
        dW = sum_in_order([dW for dW, _ in parts])
        self.dW = xp.ascontiguousarray(dW.reshape(fn, fh, fw, c).transpose(0, 3, 1, 2))
        return None if dx is None else dx.transpose(0, 3, 1, 2)

    def _weight_gradient_by_filter_row(self, img, d, rows):
        """dW (FN, FH*FW*C), (fy, fx, c) columns, of one slice from its input ``img`` (n, H, W, C) and the
        gradient ``d`` (n, r, OW, FN) of its output ``rows``: per filter row, the window rows' products with d,
        summed over the slice's images."""
        xp = get_array_module(img)
        fn, c, fh, fw = self.W.shape
        n, r, out_w, _ = d.shape
        px = window_rows(img, fw, self.pad, rows.start or 0, r + fh - 1)
        d_t = d.reshape(n, r * out_w, fn).transpose(0, 2, 1)
        return xp.concatenate([xp.matmul(d_t, px[:, fy:fy + r].reshape(n, r * out_w, fw * c)).sum(axis=0)
                               for fy in range(fh)], axis=1)

    def _input_gradient_by_gather(self, d_img, flipped_rows, dx, rows):
        """``rows`` of dx (n, H, W, C) of one slice as im2col of its dout (n, OH, OW, FN), padded by
        (filter - 1 - pad), times the 180-degree-rotated filters ``flipped_rows`` (FH, FW*FN, C)."""
        xp = get_array_module(d_img)
        fn, c, fh, fw = self.W.shape
        dx_rows = dx[:, rows]
        d_col = im2col_array(d_img, fh, fw, 1, (fh - 1 - self.pad, fw - 1 - self.pad), rows=rows)
        xp.matmul(d_col, flipped_rows.reshape(fh * fw * fn, c), out=dx_rows.reshape(-1, c))


def _column_sums(d):
    """``d.sum(axis=0)`` of a tall (rows, FN) matrix as a product with ones: BLAS adds in blocks, faster and
    more accurate than NumPy's row-by-row reduction over the long axis (on an H100, 0.06 ms against CuPy's
    reduction's 1 ms for a (200704, 16) matrix).

    ``dot``, not ``@``: NumPy's ``matmul`` holds the interpreter lock for
    the whole product when its result has at most 500 values (a vector
    times a matrix, or a small weight gradient over a long batch), so two
    threads' products ran one after the other (column sums of a (28800, 30)
    matrix: 78 us alone, 152 us each at once; the (16, 9) weight gradient
    of DeepConvNet's first convolution over 39,200 rows: 380 us alone, 830
    us each at once), where ``dot`` calls the same BLAS routine, with the
    same result bit for bit, and lets them run together (80 and 390 us)."""
    xp = get_array_module(d)
    return xp.dot(xp.ones(d.shape[0], dtype=d.dtype), d)


class Pooling:
    """Max (default) or average pooling over ``pool_h`` x ``pool_w`` windows.

    (N, C, H, W) in, (N, C, OH, OW) out with ``OH = floor((H + 2*pad -
    pool_h) / stride) + 1``. ``stride`` defaults to 2, as in the book, so
    ``Pooling(2, 2)`` halves each side. ``pad`` must be smaller than
    the window, so that every window holds at least one real pixel.

    Fixed relative to the book: the output size accounts for ``pad`` (the
    book's ignores it and fails or misplaces values when pad > 0), and max
    pooling pads with -inf rather than zero. Average pooling pads with zero
    and divides by the full window size (PyTorch's ``count_include_pad``).
    Ties inside a window send the gradient to the first maximum. Like
    Convolution, it works on channels-last memory behind (N, C, H, W) views;
    forward and backward loop over the window offsets (4 for 2x2), each step
    a strided elementwise operation on a slice of the batch of at most
    ``part_bytes`` of input (as :data:`xpnet.util.PART_BYTES`); on the CPU
    the slices run in parallel.
    """

    part_bytes = 2**22

    def __init__(self, pool_h, pool_w, stride=2, pad=0, mode="max"):
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

    def _output_shape(self):
        """(N, C, OH, OW) of the last forward, or None before any."""
        if self.x_shape is None:
            return None
        n, c, h, w = self.x_shape
        return (n, c, conv_output_size(h, self.pool_h, self.stride, self.pad),
                conv_output_size(w, self.pool_w, self.stride, self.pad))

    def forward(self, x):
        x = _as_float_array(x)
        xp = get_array_module(x)
        _check_rank("Pooling", x, (4,), "4-D (N, C, H, W)")
        n, c, h, w = x.shape
        out_h = _output_size("Pooling", "height", h, self.pool_h, self.stride, self.pad)
        out_w = _output_size("Pooling", "width", w, self.pool_w, self.stride, self.pad)
        self.x_shape = x.shape
        if kernels.active(xp):
            img = xp.ascontiguousarray(channels_last(x))
            out, self.arg_max = kernels.pool_forward(img, self.pool_h, self.pool_w, self.stride, self.pad,
                                                     out_h, out_w, self.mode == "avg")
            return out.transpose(0, 3, 1, 2)
        fill = -xp.inf if self.mode == "max" else 0.0
        img = channels_last(x)
        out = xp.empty((n, out_h, out_w, c), dtype=x.dtype)
        if self.mode == "max":
            self.arg_max = xp.empty(out.shape, dtype=xp.uint8 if self.pool_h * self.pool_w < 256 else xp.int32)

        def forward_part(item):
            part, k, cuts = item
            rows = rows_of(out_h, k, cuts)
            padded = pad_channels_last(img[part], self.pad, fill=fill)
            pixels = [v[:, rows] for v in window_offsets(padded, self.pool_h, self.pool_w, self.stride, out_h, out_w)]
            if self.mode == "max":
                _max_and_first_argmax(pixels, out[part, rows], self.arg_max[part, rows])
            else:
                _window_mean(pixels, out[part, rows])

        image_bytes = (h + 2 * self.pad) * (w + 2 * self.pad) * c * x.itemsize
        map_parts(xp, forward_part, row_parts(xp, n, out_h, -(-image_bytes // out_h), self.part_bytes))
        return out.transpose(0, 3, 1, 2)

    def backward(self, dout):
        _check_dout("Pooling", dout, self._output_shape())
        xp = get_array_module(dout)
        n, c, h, w = self.x_shape
        p, ph, pw = self.pad, self.pool_h, self.pool_w
        if kernels.active(xp):
            dx = kernels.pool_backward(channels_last(dout), self.arg_max, (n, h, w, c), ph, pw, self.stride, p,
                                       self.mode == "avg")
            return dx.transpose(0, 3, 1, 2)
        dout = channels_last(dout)
        out_h, out_w = dout.shape[1:3]
        dx = xp.empty((n, h + 2 * p, w + 2 * p, c), dtype=dout.dtype)
        # Windows that neither overlap nor leave pixels out write every pixel of dx once: no zeros, no sums.
        tiles = self.stride == ph == pw and (h + 2 * p) == out_h * ph and (w + 2 * p) == out_w * pw

        def backward_part(item):
            part, cut, cuts = item
            rows = rows_of(out_h, cut, cuts)
            d, dx_part = dout[part, rows], dx[part]
            arg_max = self.arg_max[part, rows] if self.mode == "max" else None
            if self.mode == "avg":
                d = d * (1.0 / (ph * pw))
            if not tiles:
                dx_part[...] = 0
            for k, pixels in enumerate(window_offsets(dx_part, ph, pw, self.stride, out_h, out_w)):
                pixels = pixels[:, rows]
                if self.mode == "avg":
                    routed = d
                elif tiles:
                    xp.multiply(d, arg_max == k, out=pixels)
                    continue
                else:
                    routed = d * (arg_max == k)
                if tiles:
                    pixels[...] = routed
                else:
                    pixels += routed

        image_bytes = (h + 2 * p) * (w + 2 * p) * c * dout.itemsize
        if tiles:  # each window's pixels are its own: runs of rows of an image may go to different threads
            items = row_parts(xp, n, out_h, -(-image_bytes // out_h), self.part_bytes)
        else:
            items = whole_images(batch_parts(xp, n, image_bytes, self.part_bytes))
        map_parts(xp, backward_part, items)
        return dx[:, p:p + h, p:p + w, :].transpose(0, 3, 1, 2)


def _max_and_first_argmax(pixels, out, arg_max):
    """``out`` = the maximum over the window offsets' views ``pixels``; ``arg_max`` = the first offset holding it.

    A running maximum: an offset takes over only where it is strictly larger,
    so ties keep the first maximum, and as offsets only grow, ``arg_max`` is
    the maximum of itself and ``k`` where offset ``k`` took over (masked
    writes are many times slower than this arithmetic). A NaN wins, as in
    ``xp.maximum``, and the first NaN keeps the gradient.
    """
    xp = get_array_module(out)
    xp.copyto(out, pixels[0])
    arg_max[...] = 0
    index = arg_max.dtype.type
    for k, candidate in enumerate(pixels[1:], start=1):
        took_over = candidate > out
        xp.maximum(out, candidate, out=out)
        xp.maximum(arg_max, took_over * index(k), out=arg_max)
    # '>' is never true for a NaN: where a NaN won, point at the first one (as rare as it is slow).
    nan = xp.isnan(out)
    if xp.__name__ != "numpy" or bool(nan.any()):
        for k in range(len(pixels) - 1, -1, -1):
            first = nan & xp.isnan(pixels[k])
            arg_max *= ~first
            arg_max += first * index(k)


def _window_mean(pixels, out):
    """``out`` = the mean over the window offsets' views ``pixels`` (padding counts as zeros)."""
    xp = get_array_module(out)
    xp.copyto(out, pixels[0])
    for candidate in pixels[1:]:
        out += candidate
    out *= 1.0 / len(pixels)
