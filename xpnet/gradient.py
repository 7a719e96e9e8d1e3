"""Numerical gradients (the book's central differences) and checks of ``backward`` against them.

Checks run in float64 only: in float32 the difference quotient loses about
half of its digits to rounding, so the check helpers refuse other dtypes
with a ValueError. Everything works on whichever device the arrays
are on (slowly on the GPU: one synchronization per element).
"""

from __future__ import annotations

import numpy as np

from .backend import device_of, get_array_module, host_rng, to_device, to_numpy
from .backend import seed as set_seed
from .layers import BatchNormalization

__all__ = ["numerical_gradient", "numerical_gradient_2d", "layer_gradients", "check_layer_gradient", "check_network_gradient", "GradientCheckError"]

PARAM_GRADS = (("W", "dW"), ("b", "db"), ("gamma", "dgamma"), ("beta", "dbeta"))


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def numerical_gradient(f, x, h=1e-4):
    """Central-difference gradient of the scalar ``f(x)`` with respect to ``x``.

    ``f`` is called with no regard to its argument's identity: ``x`` is
    modified in place element by element and restored, as in the book, so
    ``f`` may be a closure over a network's parameter array. Returns an array
    of ``x``'s shape, dtype and device.
    """
    xp = get_array_module(x)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient: x must be C-contiguous so that it can be perturbed in place")
    grad = xp.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i].copy()
        flat_x[i] = original + h
        f_plus = float(f(x))
        flat_x[i] = original - h
        f_minus = float(f(x))
        flat_x[i] = original
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_gradient_2d(f, X, h=1e-4):
    """The gradient of ``f`` at each row of ``X`` (N, D), as the book's chapter 4 plots it for many points.

    ``f`` takes one point (D,); row i of the result is the gradient of ``f``
    at ``X[i]``. A 1-D ``X`` is one point (:func:`numerical_gradient`).
    """
    if X.ndim == 1:
        return numerical_gradient(f, X, h)
    xp = get_array_module(X)
    grad = xp.zeros_like(X)
    for i in range(X.shape[0]):
        grad[i] = numerical_gradient(f, X[i], h)
    return grad


def layer_gradients(layer, x, *args, dout=None, h=1e-5, **forward_kwargs):
    """Analytic and numerical gradients of a layer, as ``{name: (analytic, numerical)}``.

    The scalar checked is ``sum(forward(x, *args) * dout)`` with a random
    ``dout`` (or the loss itself for a layer that returns a scalar, such as
    SoftmaxWithLoss). Names are ``'x'`` and every parameter the layer has
    among W, b, gamma, beta. ``forward_kwargs`` go to ``forward`` (e.g.
    ``train_flg=True``); a layer that draws random masks must be reseeded
    by the caller for the numerical gradient to make sense.
    """
    out = layer.forward(x, *args, **forward_kwargs)
    xp = get_array_module(out)
    if out.ndim == 0:
        dout, scalar = 1.0, True
    else:
        scalar = False
        if dout is None:
            dout = to_device(host_rng().standard_normal(out.shape).astype(out.dtype), device_of(out))

    def f(_):
        y = layer.forward(x, *args, **forward_kwargs)
        return y if scalar else (y * dout).sum()

    dx = layer.backward(dout)
    result = {"x": (dx, numerical_gradient(f, x, h))}
    for name, grad_name in PARAM_GRADS:
        param = getattr(layer, name, None)
        if param is not None and hasattr(param, "shape"):
            layer.forward(x, *args, **forward_kwargs)
            layer.backward(dout)
            analytic = xp.array(getattr(layer, grad_name), copy=True)
            result[name] = (analytic, numerical_gradient(f, param, h))
    return result


def check_layer_gradient(layer, x, *args, rtol=1e-5, atol=1e-7, **kwargs):
    """Raise GradientCheckError unless every gradient of ``layer`` matches the numerical one.

    Compares with ``|analytic - numerical| <= atol + rtol * |numerical|``
    element by element, and names the gradient, the worst element and its
    values. ``x`` and the layer's W, b, gamma, beta and running statistics
    must be float64 (in float32 the check fails spuriously): anything else
    is a ValueError that names them. Returns the largest absolute error of
    each gradient.
    """
    owner = type(layer).__name__
    arrays = {"x": x}
    for name in [name for name, _ in PARAM_GRADS] + list(BatchNormalization.buffers):
        if hasattr(getattr(layer, name, None), "shape"):
            arrays[f"{owner}.{name}"] = getattr(layer, name)
    _require_float64("check_layer_gradient: ", arrays,
                     f"pass float64 arrays, e.g. x.astype(np.float64) and {owner}(W.astype(np.float64), ...)")
    pairs = layer_gradients(layer, x, *args, **kwargs)
    return _compare(owner, pairs, rtol, atol)


def check_network_gradient(network, x, t, rtol=1e-5, atol=1e-7, directions=None, h=1e-5, seed=0):
    """Compare ``network.gradient(x, t)`` with central differences of its training-mode loss.

    Any object with the book's network protocol will do (``params``,
    ``loss(x, t, train_flg)``, ``gradient``). xpnet's generators are reseeded
    with ``seed`` before every loss, so dropout draws the same mask each time.
    With ``directions=None`` every parameter element is checked (small
    networks only); with ``directions=k`` the check is k random directional
    derivatives, (L(p + h r) - L(p - h r)) / 2h against <grad, r> for
    unit vectors r, cheap for
    any size. The parameters must be float64 (a ValueError names any that are
    not; ``x`` may be float32, the layers cast it). Raises GradientCheckError
    on the first mismatch, else returns the largest absolute error per
    parameter (or per direction).
    """

    _require_float64(
        f"check_network_gradient: {type(network).__name__} parameters ", network.params,
        "build the network in float64 (xpnet's networks take dtype=np.float64) or cast its parameters",
    )

    def loss(_=None):
        set_seed(seed)
        return network.loss(x, t, train_flg=True)

    set_seed(seed)
    analytic = network.gradient(x, t)
    if directions is None:
        pairs = {name: (analytic[name], numerical_gradient(loss, p, h)) for name, p in network.params.items()}
        return _compare(type(network).__name__, pairs, rtol, atol)
    pairs = {}
    directions_rng = np.random.default_rng(seed + 1)  # apart from the stream that loss() reseeds
    for k in range(directions):
        host = {name: directions_rng.standard_normal(p.shape) for name, p in network.params.items()}
        norm = np.sqrt(sum((v ** 2).sum() for v in host.values()))  # a unit step, however many parameters
        r = {name: to_device((v / norm).astype(network.params[name].dtype), device_of(network.params[name]))
             for name, v in host.items()}
        for name, p in network.params.items():
            p += h * r[name]
        plus = float(loss())
        for name, p in network.params.items():
            p -= 2 * h * r[name]
        minus = float(loss())
        for name, p in network.params.items():
            p += h * r[name]
        along = sum(float((analytic[name] * r[name]).sum()) for name in analytic)
        pairs[f"direction {k}"] = (np.array(along), np.array((plus - minus) / (2 * h)))
    return _compare(type(network).__name__, pairs, rtol, atol)


def _require_float64(prefix, arrays, fix):
    """A ValueError naming every array of ``arrays`` (name -> array) that is not float64, and the ``fix``."""
    wrong = {}
    for name, array in arrays.items():
        dtype = getattr(array, "dtype", None)
        if dtype != np.float64:
            wrong.setdefault(str(dtype) if dtype is not None else type(array).__name__, []).append(name)
    if wrong:
        found = "; ".join(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {kind}" for kind, names in wrong.items())
        raise ValueError(
            f"{prefix}{found}, but the check needs float64 (central differences in lower precision lose "
            f"about half their digits and fail spuriously); {fix}"
        )


def _compare(owner, pairs, rtol, atol):
    errors = {}
    for name, (analytic, numerical) in pairs.items():
        a, n = to_numpy(analytic), to_numpy(numerical)
        if a.shape != n.shape:
            raise GradientCheckError(f"gradient of {name}: analytic shape {a.shape} != numerical shape {n.shape}")
        bad = ~(abs(a - n) <= atol + rtol * abs(n))  # NaN on either side is a failure too
        if bad.any():
            excess = np.where(bad, np.nan_to_num(abs(a - n) - (atol + rtol * abs(n)), nan=np.inf), -np.inf)
            worst = int(excess.argmax())
            raise GradientCheckError(
                f"{owner} gradient of {name} at flat index {worst}: analytic "
                f"{float(a.flat[worst])!r}, numerical {float(n.flat[worst])!r} (atol={atol}, rtol={rtol})"
            )
        errors[name] = float(abs(a - n).max()) if a.size else 0.0
    return errors
