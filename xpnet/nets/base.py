"""What every network of the book shares: a chain of layers, its parameters and its gradients."""

from __future__ import annotations

import copy
import functools
import math
import threading

import numpy as np

from .. import backend, checkpoint, fastpaths, threads, util
from ..backend import get_array_module, is_cupy_array, to_device, to_numpy
from ..gradient import numerical_gradient
from ..labels import class_indices
from ..layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss

_TRAIN_FLG_LAYERS = (BatchNormalization, Dropout)
# Layers whose shallow copies may run on slices of a batch at the same time (their state is per call; Dropout's
# draws are shared by _WholeBatchDraws). A network with any other layer (a user's own) passes the batch whole.
_SLICEABLE_LAYERS = (Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid)


class _WholeBatchDraws:
    """A Dropout layer's uniform draws for a whole batch of ``n``, made on first use; each slice reads its rows."""

    def __init__(self, n):
        self.n = n
        self.lock = threading.Lock()
        self.values = None

    def rows(self, part):
        def draws(xp, shape):
            with self.lock:
                if self.values is None:
                    self.values = backend.random_uniform(xp, (self.n, *shape[1:]))
            return self.values[part]

        return draws


_BUFFERS = BatchNormalization.buffers
SLICE_FLOPS_PER_LAYER = 2**23  # forward floating-point operations per layer that make a slice worth a thread


def _as_array(a):
    """Arrays as they are; lists and other array-likes through numpy.asarray, on the host."""
    return a if isinstance(a, np.ndarray) or is_cupy_array(a) else np.asarray(a)


def check_size(owner, name, value, minimum=1):
    """A size given to a network's constructor: an integer >= ``minimum`` (1, or 0 for a pad), else one clear line."""
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{owner}: {name} must be {wanted}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{owner}: {name} must be {wanted}, got {value!r}")
    return int(value)


def check_input_dim(owner, input_dim):
    """(C, H, W) of one example, each a positive integer."""
    input_dim = tuple(input_dim)
    if len(input_dim) != 3:
        raise ValueError(f"{owner}: input_dim must be (C, H, W), got {input_dim}")
    return tuple(check_size(owner, f"input_dim[{i}]", size) for i, size in enumerate(input_dim))


def check_conv_param(owner, name, conv_param):
    """A convolution's filter_num, filter_size and stride (>= 1) and pad (>= 0), named in the error."""
    for key, minimum in (("filter_num", 1), ("filter_size", 1), ("stride", 1), ("pad", 0)):
        check_size(owner, f"{name}[{key!r}]", conv_param[key], minimum)


def _one_blas_thread(method):
    """``method`` with BLAS held at one thread throughout (:func:`xpnet.threads.one_blas_thread`)."""
    @functools.wraps(method)
    def held(*args, **kwargs):
        with threads.one_blas_thread():
            return method(*args, **kwargs)

    return held


class Network:
    """A feed-forward chain of the book's layers ending in SoftmaxWithLoss.

    Subclasses fill ``self.params`` (name -> array) and ``self.layers`` (name
    -> layer, in order) and register which layer attribute holds each
    parameter with :meth:`_bind`. Inputs may be NumPy arrays whatever the
    device: each call moves them to the parameters' device once. Lists (or
    other array-likes) are converted with ``numpy.asarray``; an input that
    is not numbers, or an empty batch, is a ValueError in one line. The
    constructors check their sizes the same way (positive integers; a pad
    >= 0), before any weight is drawn.
    """

    def __init__(self, weight_decay_lambda=0.0):
        self.params = {}
        self.layers = {}
        self.last_layer = SoftmaxWithLoss()
        self.weight_decay_lambda = float(weight_decay_lambda)
        self._slots = {}  # parameter name -> (layer, attribute)
        self._decayed = []  # names of the weights under weight decay

    def _bind(self, name, layer, attribute, decay=False):
        self._slots[name] = (layer, attribute)
        if decay:
            self._decayed.append(name)

    # --- devices ---------------------------------------------------------------

    @property
    def device(self):
        """'cpu' or 'gpu:N': where the parameters are."""
        return backend.params_device(self.params)

    def to(self, device):
        """Move parameters and batch-norm statistics to ``device``; returns the network.

        The GPU kernels run on CuPy's current device, which ``xpnet.set_device``
        and ``xpnet.using_device`` select: for a network on ``gpu:N`` other than
        ``gpu:0``, compute with that device selected too.
        """
        self.params = to_device(self.params, device)
        for name, (layer, attribute) in self._slots.items():
            setattr(layer, attribute, self.params[name])
        for layer in self.layers.values():
            for buffer in _BUFFERS:
                if getattr(layer, buffer, None) is not None:
                    setattr(layer, buffer, to_device(getattr(layer, buffer), device))
        return self

    def _on_device(self, *arrays):
        device = self.device
        return [to_device(a, device) for a in arrays]

    def _check_batch(self, call, x):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{type(self).__name__}.{call}: x must hold numbers, got dtype {x.dtype}")
        if x.ndim and x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.{call}: the batch is empty (x has shape {tuple(x.shape)})")

    def _batch(self, call, x, *labels):
        """``x`` (and labels) as arrays on the network's device; lists are converted, an empty batch refused."""
        x, *labels = map(_as_array, (x, *labels))
        self._check_batch(call, x)
        return self._on_device(x, *labels)

    # --- the book's protocol ------------------------------------------------------

    # The public methods call _scores and _loss, never each other, so that a subclass may change what
    # they return (the book's compatibility layer hands NumPy back) without changing what they compute.

    def predict(self, x, train_flg=False):
        """Scores (N, output_size) before the softmax, on the network's device."""
        (x,) = self._batch("predict", x)
        return self._scores(x, train_flg)

    @_one_blas_thread
    def _scores(self, x, train_flg):
        (x,) = self._on_device(x)
        if not train_flg and self._infers_by_slices(x):
            return self._scores_by_slices(x)
        return self._forward(self.layers.values(), x, train_flg)

    @staticmethod
    def _forward(layers, x, train_flg):
        """``x`` through ``layers`` in order; BatchNormalization and Dropout are told the mode."""
        for layer in layers:
            x = layer.forward(x, train_flg) if isinstance(layer, _TRAIN_FLG_LAYERS) else layer.forward(x)
        return x

    def _infers_by_slices(self, x):
        """Whether inference takes the CPU fast path ``inference_by_slices``: only xpnet's own layers, and
        work enough for two threads at least (:meth:`_slice_count`)."""
        return self._slice_count(x) > 1 and fastpaths.enabled("inference_by_slices")

    def _slice_count(self, x):
        """How many slices the by-slices fast paths cut the batch ``x`` into: one per thread, but no more
        than the batch has forward work for, ``SLICE_FLOPS_PER_LAYER`` per layer and slice (1: the
        layer-by-layer pass).

        Handing a slice to a thread costs its waking and, on every NumPy call
        of the slice, a turn at the interpreter lock, so a slice pays only
        where its layers' calls are long: in slices, the book's MultiLayerNet
        at batch 100 took 2.2 times as long on two threads as on one and
        DeepConvNet at batch 10 1.35 times, where SimpleConvNet at batch 100,
        with as much work as the latter in a third of the layers, took 0.8
        times (``benchmarks/small_batches.py`` on a 2-core VM). Depends on
        the shapes and the thread count only, so that a run at a fixed
        thread count repeats.
        """
        count = threads.get_num_threads()
        if count < 2 or get_array_module(x).__name__ != "numpy" or x.ndim < 2:
            return 1
        if not all(type(layer) in _SLICEABLE_LAYERS for layer in self.layers.values()):
            return 1
        work = x.shape[0] * self._forward_flops_per_example(tuple(x.shape[1:]))
        per_slice = SLICE_FLOPS_PER_LAYER * (len(self.layers) + 1)
        return max(1, min(count, x.shape[0], int(work // per_slice)))

    def _forward_flops_per_example(self, shape):
        """Floating-point operations of the forward pass of one example of ``shape`` ((C, H, W) or (D,)):
        the products of the Convolution and Affine layers, a comparison per window value of Pooling, one
        per value elsewhere; 0 for a shape the layers do not take (the forward pass then says why)."""
        flops = 0
        for layer in self.layers.values():
            size = math.prod(shape)
            if isinstance(layer, (Convolution, Pooling)):
                if len(shape) != 3 or isinstance(layer, Convolution) and shape[0] != layer.W.shape[1]:
                    return 0
                c, h, w = shape
                fh, fw = layer.W.shape[2:] if isinstance(layer, Convolution) else (layer.pool_h, layer.pool_w)
                oh, ow = ((h + 2 * layer.pad - fh) // layer.stride + 1, (w + 2 * layer.pad - fw) // layer.stride + 1)
                if oh < 1 or ow < 1:
                    return 0
                if isinstance(layer, Convolution):
                    flops += 2 * layer.W.shape[0] * c * fh * fw * oh * ow
                    shape = (layer.W.shape[0], oh, ow)
                else:
                    flops += c * oh * ow * fh * fw
                    shape = (c, oh, ow)
            elif isinstance(layer, Affine):
                if size != layer.W.shape[0]:
                    return 0
                flops += 2 * size * layer.W.shape[1]
                shape = (layer.W.shape[1],)
            else:
                flops += size
        return flops

    def _scores_by_slices(self, x):
        """Scores in evaluation mode, each thread taking a slice of the batch through every layer (shallow
        copies of the layers, which keep their per-call state apart; the parameters are shared): one
        parallel call instead of one per layer, and each slice's activations stay in its core's cache."""
        def scores(part):
            return self._forward([copy.copy(layer) for layer in self.layers.values()], x[part], False)

        parts = threads.split(x.shape[0], self._slice_count(x))
        return get_array_module(x).concatenate(util.map_parts(get_array_module(x), scores, parts))

    def loss(self, x, t, train_flg=False):
        """Mean cross entropy plus 0.5 * weight_decay_lambda * sum of squared weights (0-d array).

        ``train_flg=False`` (evaluation) is the default; :meth:`gradient`
        uses the training mode. The book's DeepConvNet always evaluated its
        loss with dropout active.
        """
        x, t = self._batch("loss", x, t)
        return self._loss(x, t, train_flg)

    @_one_blas_thread
    def _loss(self, x, t, train_flg):
        x, t = self._on_device(x, t)
        loss = self.last_layer.forward(self._scores(x, train_flg), t)
        if self.weight_decay_lambda:
            decay = sum((self.params[name] ** 2).sum() for name in self._decayed)
            loss = loss + 0.5 * self.weight_decay_lambda * decay
        return loss

    def accuracy(self, x, t, batch_size=100):
        """Fraction of correct predictions (a Python float), ``batch_size`` examples at a time.

        ``t`` holds class indices (N,) or (N, 1), or one-hot rows (N, K). It is
        read on the host once: labels of another length than ``x``, or outside
        0..K-1, are a ValueError that names the numbers.
        """
        batch_size = check_size(f"{type(self).__name__}.accuracy", "batch_size", batch_size)
        x, t = _as_array(x), _as_array(t)
        self._check_batch("accuracy", x)
        n = x.shape[0]
        correct = 0
        labels = None
        for start in range(0, n, batch_size):
            scores = self._scores(x[start:start + batch_size], False)
            if labels is None:
                labels = to_numpy(t)
                indices = class_indices(labels, n, scores.shape[1], "accuracy")
                labels = labels.argmax(axis=1) if indices is None else indices
            (tb,) = self._on_device(labels[start:start + batch_size])
            correct = correct + (scores.argmax(axis=1) == tb).sum()
        return float(correct) / n

    @_one_blas_thread
    def gradient(self, x, t):
        """Gradients of the training-mode loss by backpropagation: a dict with the keys of ``params``."""
        x, t = self._batch("gradient", x, t)
        if self._trains_by_slices(x):
            grads = self._gradient_by_slices(x, t)
        else:
            self._loss(x, t, True)
            self._backward(self.layers.values(), self.last_layer.backward(1))
            grads = {name: getattr(layer, "d" + attribute) for name, (layer, attribute) in self._slots.items()}
        for name in grads:
            if name in self._decayed and self.weight_decay_lambda:
                grads[name] = grads[name] + self.weight_decay_lambda * self.params[name]
        return grads

    @staticmethod
    def _backward(layers, dout):
        """Backpropagate ``dout`` through ``layers`` (in forward order), last to first."""
        *later, first = reversed(list(layers))
        for layer in later:
            dout = layer.backward(dout)
        if isinstance(first, Convolution) and fastpaths.enabled("first_layer_without_input_gradient"):
            # Its input is the data: there is no gradient to pass on, so it skips dx.
            first.backward(dout, input_gradient=False)
        else:
            first.backward(dout)

    def _trains_by_slices(self, x):
        """Whether training takes the CPU fast path ``training_by_slices``: as :meth:`_infers_by_slices`, for a
        network without batch normalization (its statistics are the whole batch's) ending in SoftmaxWithLoss."""
        plain = not any(isinstance(layer, BatchNormalization) for layer in self.layers.values())
        return (plain and type(self.last_layer) is SoftmaxWithLoss and self._infers_by_slices(x)
                and fastpaths.enabled("training_by_slices"))

    def _gradient_by_slices(self, x, t):
        """The gradients of the training-mode loss, each thread taking a slice of the batch forward and back
        through every layer (shallow copies), weighting its loss by its share of the batch; the slices'
        gradients are added in slice order. Dropout draws its masks for the whole batch, once per layer and in
        layer order (a slice reaches a layer only after passing the ones before), as a pass over the whole
        batch does: the same masks. Sets ``last_layer.loss`` to the batch's loss."""
        xp = get_array_module(x)
        n = x.shape[0]
        draws = {name: _WholeBatchDraws(n) for name, layer in self.layers.items() if isinstance(layer, Dropout)}

        def slice_gradients(part):
            layers = {name: copy.copy(layer) for name, layer in self.layers.items()}
            for name, whole in draws.items():
                layers[name].draws = whole.rows(part)
            last = copy.copy(self.last_layer)
            share = (part.stop - part.start) / n
            loss = last.forward(self._forward(layers.values(), x[part], True), t[part]) * share
            self._backward(layers.values(), last.backward(share))
            copies = {id(self.layers[name]): layers[name] for name in layers}
            grads = {name: getattr(copies[id(layer)], "d" + attribute) for name, (layer, attribute) in self._slots.items()}
            return loss, grads

        parts = threads.split(n, self._slice_count(x))
        results = util.map_parts(xp, slice_gradients, parts)
        self.last_layer.loss = util.sum_in_order([loss for loss, _ in results])
        return {name: util.sum_in_order([grads[name] for _, grads in results]) for name in self._slots}

    def numerical_gradient(self, x, t):
        """The same gradients by central differences (slow: two losses per parameter element), in the
        parameters' dtype.

        The losses are those of a float64 copy of the network, whatever its
        dtype: in float32 a central difference loses about half of its digits
        (up to the sign of small gradients), where the book's networks, in
        float64, do not. Uses the training-mode loss; the copy's batch-norm
        running statistics take its updates and the network's stay as they
        were. With dropout, each evaluation draws a new mask, so compare with
        :func:`xpnet.gradient.check_network_gradient`, which fixes the mask.
        """
        x, t = self._on_device(x, t)
        twin = self._float64_copy()
        grads = {name: numerical_gradient(lambda _: twin._loss(x, t, True), p) for name, p in twin.params.items()}
        return {name: grad.astype(self.params[name].dtype) for name, grad in grads.items()}

    def _float64_copy(self):
        """A deep copy of the network with its parameters and batch-norm statistics in float64 (the layers'
        links to other ranks, which cannot be copied, are shared)."""
        shared = {id(layer.sync): layer.sync for layer in self.layers.values() if getattr(layer, "sync", None)}
        twin = copy.deepcopy(self, shared)
        xp = get_array_module(next(iter(self.params.values())))
        twin.params = {name: p.astype(xp.float64) for name, p in twin.params.items()}
        for name, (layer, attribute) in twin._slots.items():
            setattr(layer, attribute, twin.params[name])
        for layer in twin.layers.values():
            for buffer in _BUFFERS:
                if getattr(layer, buffer, None) is not None:
                    setattr(layer, buffer, getattr(layer, buffer).astype(xp.float64))
        return twin

    # --- saving ---------------------------------------------------------------------

    def state(self):
        """Parameters and batch-norm running statistics, by name (arrays on the network's device)."""
        state = dict(self.params)
        for lname, layer in self.layers.items():
            for buffer in _BUFFERS:
                if getattr(layer, buffer, None) is not None:
                    state[f"{lname}.{buffer}"] = getattr(layer, buffer)
        return state

    def load_state(self, state, where="state"):
        """Copy ``state`` (host or device arrays) into the network in place, checking names, shapes and kinds.

        Everything is checked before anything is copied, so a wrong file leaves the network as it was.
        Floating-point values are cast to the network's dtype; any other kind is refused.
        """
        params = {k: v for k, v in state.items() if "." not in k}
        buffers = {k: v for k, v in state.items() if "." in k}
        for key, value in buffers.items():
            lname, buffer = key.split(".", 1)
            layer = self.layers.get(lname)
            if layer is None or buffer not in _BUFFERS or not hasattr(layer, buffer):
                raise ValueError(f"{where}: unexpected entry {key!r}")
            expected = tuple(layer.gamma.shape)  # a running statistic has one value per feature or channel
            if tuple(value.shape) != expected:
                raise ValueError(f"{where}: {key} has shape {tuple(value.shape)} but the network's is {expected}")
            if value.dtype.kind != "f":
                raise ValueError(f"{where}: {key} is {value.dtype}, expected {layer.gamma.dtype} like the network's "
                                 f"statistics")
        saved = {key.split(".", 1)[0] for key in buffers}
        missing = [f"{lname}.{b}" for lname in saved for b in _BUFFERS if f"{lname}.{b}" not in buffers]
        if missing:
            raise ValueError(f"{where}: missing entries {missing}")
        checkpoint.restore_params(self.params, params, where=where)
        xp = get_array_module(*self.params.values())
        dtype = self.params[next(iter(self.params))].dtype
        for key, value in buffers.items():
            lname, buffer = key.split(".", 1)
            setattr(self.layers[lname], buffer, xp.asarray(to_device(value, self.device), dtype=dtype))

    def save_params(self, file_name="params.npz"):
        """Write parameters (and batch-norm statistics) to an .npz file, atomically, without pickle."""
        checkpoint.save_params(file_name, self.state())

    def load_params(self, file_name="params.npz"):
        """Load what :meth:`save_params` wrote, on whatever device this network is.

        A ``.pkl`` file is taken for the book's own ``save_params`` of the same
        network: it is read by :mod:`xpnet.safe_pickle` (arrays and plain
        containers only, nothing called) and converted by
        :meth:`convert_book_params`.
        """
        params = checkpoint.load_params(file_name)
        if checkpoint.is_pickle(file_name):
            params = self.convert_book_params(params)
        self.load_state(params, where=str(file_name))

    @classmethod
    def convert_book_params(cls, params):
        """Parameters saved by the book's class of this network, made to compute the same here: unchanged.

        Networks where xpnet computes differently from the book with the same
        weights override this (:class:`~xpnet.nets.DeepConvNet`).
        """
        return dict(params)
