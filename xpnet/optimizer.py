"""The book's optimizers (chapter 6), with its names, defaults and ``update(params, grads)``.

``params`` and ``grads`` are dicts name -> array (NumPy or CuPy). Every
update happens in place on the parameter arrays, so layers holding
references to them (``Affine.W``, ...) see the new values; a parameter that
is a Python number or a NumPy scalar is replaced in the dict by its new
value, as the book's ``params[key] -= ...`` does. The state of an
optimizer (``v``, ``h``, ``m``, ``iter``) lives on each parameter's device,
in its dtype, created with ``xp.zeros_like`` on the first update: float32
parameters stay float32 (hyperparameters are Python floats, so NEP 50
promotion never upcasts).

Relative to the book:

* ``grads`` may hold a subset of ``params`` (the others are left alone); a
  gradient for an unknown parameter, or of another shape, is a ValueError.
* Every optimizer counts its updates in ``iter`` and has ``state_dict()`` /
  ``load_state_dict()`` for checkpoints; ``AdamW`` is new.
* The state follows the parameters: after ``net.to('gpu')`` it is moved to
  the GPU at the next update.
* ``get_optimizer`` maps 'rmsprop' to RMSprop (the book's Trainer spells it
  'rmsprpo').

    >>> import numpy as np
    >>> params = {"W": np.ones(2, dtype=np.float32)}
    >>> opt = SGD(lr=0.5)
    >>> opt.update(params, {"W": np.array([1.0, 2.0], dtype=np.float32)})
    >>> params["W"]
    array([0.5, 0. ], dtype=float32)
"""

from __future__ import annotations

import math

from . import backend, kernels, util
from .backend import DeviceError, get_array_module
from .util import batch_parts, map_parts

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "OPTIMIZERS",
    "get_optimizer",
]

EPS = 1e-7  # the book's epsilon, added to sqrt(h) or sqrt(v)


class Optimizer:
    """Common machinery: hyperparameters, per-parameter state, checks and state_dict.

    A subclass names its hyperparameters in ``hyperparameters`` and its
    per-parameter state arrays in ``slots`` (each slot is a dict name ->
    array, an attribute as in the book: ``self.v``, ``self.h``, ...), and
    implements ``_apply(xp, param, grad, *state)``: the update of one
    parameter in place, in ``xp`` code, with its state arrays in the order
    of ``slots``. On the CPU a large parameter is updated in slices, in
    parallel; on the GPU its ``kernel`` (see :func:`xpnet.kernels.update`)
    does it in one launch with the inputs ``grad, *self._scalars()``.
    """

    hyperparameters: tuple[str, ...] = ("lr",)
    slots: tuple[str, ...] = ()
    kernel: str = ""

    def __init__(self, **hyper):
        for name in self.hyperparameters:
            setattr(self, name, float(hyper[name]))
        self._check_hyperparameters()
        self.iter = 0
        for slot in self.slots:
            setattr(self, slot, {})

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.hyperparameters)
        return f"{type(self).__name__}({args})"

    # --- the update -------------------------------------------------------------

    def update(self, params, grads):
        """Update ``params[k]`` for every ``k`` in ``grads``: arrays in place, scalars by a new dict entry.

        A parameter that is a Python number or a NumPy scalar (the book's
        chapter 6 sketch of optimizers on f(x, y) uses floats) cannot change in
        place, so ``params[k]`` is replaced by its updated value, of the same
        kind (a Python float, or a NumPy scalar of the same dtype), as the
        book's ``params[key] -= ...`` does. Its gradient may be a Python number.
        """
        grads = {key: self._scalar_gradient(key, params.get(key), grad) for key, grad in grads.items()}
        self._check(params, grads)
        self.iter += 1
        self._begin()
        host_work = []  # (param, grad, state) of the host arrays: updated together, in slices, by every thread
        for key, grad in grads.items():
            param = params[key]
            if _is_scalar(param):
                xp = get_array_module(param)  # NumPy: a scalar lives on the host
                value = xp.array(param, dtype=xp.result_type(param, 0.0))
                self._step(xp, key, value, grad.astype(value.dtype, copy=False))
                params[key] = value[()] if isinstance(param, xp.generic) else value.item()
                continue
            xp = get_array_module(param)
            state = [self._state(slot, key, param) for slot in self.slots]
            if xp.__name__ == "numpy":
                host_work.append((param, grad, state))
            else:
                self._step(xp, key, param, grad, state)
        if host_work:
            _in_slices(self._apply, host_work)

    def _step(self, xp, key, param, grad, state=None):
        """Update one parameter in place: one kernel launch on the GPU, the ``xp`` code elsewhere."""
        state = [self._state(slot, key, param) for slot in self.slots] if state is None else state
        if kernels.active(xp):
            kernels.update(self.kernel, grad, *self._scalars(), param, *state)
        else:
            self._apply(xp, param, grad, *state)

    def _scalar_gradient(self, key, param, grad):
        """A scalar gradient (a Python number, or any 0-d array of a scalar parameter) as a 0-d array:
        on the host for a scalar parameter, else on the parameter's device in its dtype."""
        if _is_scalar(param):
            grad = backend.to_numpy(grad)
            if grad.shape != ():
                raise ValueError(f"{type(self).__name__}: {key!r} is a scalar, but its gradient has shape "
                                 f"{tuple(grad.shape)}")
            return grad
        if isinstance(grad, (int, float)) and not isinstance(grad, bool) and getattr(param, "shape", None) == ():
            return get_array_module(param).asarray(grad, dtype=param.dtype)
        return grad

    def _begin(self):
        """Per-update work shared by all parameters (Adam's lr_t)."""

    def _scalars(self):
        """The hyperparameters the GPU kernel takes after the gradient, as Python floats."""
        return (float(self.lr),)

    def _apply(self, xp, param, grad, *state):
        raise NotImplementedError

    def _state(self, slot, key, param):
        """The ``slot`` array of ``key``: created as zeros, or moved to ``param``'s device and dtype."""
        table = getattr(self, slot)
        state = table.get(key)
        if state is None:
            state = table[key] = get_array_module(param).zeros_like(param)
        elif backend.device_of(state) != backend.device_of(param) or state.dtype != param.dtype:
            xp = get_array_module(param)
            state = backend.to_device(state, backend.device_of(param))
            state = table[key] = xp.array(state, dtype=param.dtype, copy=True)
        return state

    def _check(self, params, grads):
        name = type(self).__name__
        unknown = [k for k in grads if k not in params]
        if unknown:
            raise ValueError(f"{name}: gradients for unknown parameters {unknown}; the parameters are {list(params)}")
        for key, grad in grads.items():
            param = params[key]
            if _is_scalar(param):
                continue  # computed as a 0-d array of its own dtype
            if tuple(grad.shape) != tuple(param.shape):
                raise ValueError(
                    f"{name}: gradient {key!r} has shape {tuple(grad.shape)} "
                    f"but the parameter has shape {tuple(param.shape)}"
                )
            p_dev, g_dev = backend.device_of(param), backend.device_of(grad)
            if p_dev != g_dev:
                raise DeviceError(f"{name}: gradient {key!r} is on {g_dev} but the parameter is on {p_dev}")
            if grad.dtype != param.dtype:
                raise ValueError(f"{name}: gradient {key!r} is {grad.dtype} but the parameter is {param.dtype}; "
                                 f"compute the gradient in the parameter's dtype")
            for slot in self.slots:  # a loaded state of another network: refuse before changing anything
                state = getattr(self, slot).get(key)
                if state is not None and tuple(state.shape) != tuple(param.shape):
                    raise ValueError(
                        f"{name}: state {slot}/{key} has shape {tuple(state.shape)} "
                        f"but the parameter has shape {tuple(param.shape)}"
                    )

    def _check_hyperparameters(self):
        name = type(self).__name__
        for attr in ("lr", "weight_decay"):
            if attr in self.hyperparameters and not getattr(self, attr) >= 0.0:
                raise ValueError(f"{name}: {attr} must be >= 0, got {getattr(self, attr)}")
        for attr in ("momentum", "decay_rate", "beta1", "beta2"):
            if attr in self.hyperparameters and not 0.0 <= getattr(self, attr) < 1.0:
                raise ValueError(f"{name}: {attr} must be in [0, 1), got {getattr(self, attr)}")

    # --- checkpoints --------------------------------------------------------------

    def state_dict(self) -> dict:
        """Hyperparameters, ``iter`` and the state arrays, as Python scalars and host NumPy copies.

        A flat dict: ``{"lr": 0.001, ..., "iter": 3, "m/W1": array, "v/W1": array, ...}``.
        """
        state = {name: float(getattr(self, name)) for name in self.hyperparameters}
        state["iter"] = int(self.iter)
        for slot in self.slots:
            for key, array in getattr(self, slot).items():
                # to_numpy copies from the GPU but not on the CPU: copy so later updates leave the dict alone
                state[f"{slot}/{key}"] = backend.to_numpy(array) if backend.is_cupy_array(array) else array.copy()
        return state

    def _is_slot_key(self, key):
        slot, _, name = str(key).partition("/")
        return slot in self.slots and name != ""

    def load_state_dict(self, state, device=None):
        """Restore what :meth:`state_dict` returned (host or device arrays, 0-d arrays for scalars).

        With ``device`` None the arrays are kept on the host and moved to each
        parameter's device and dtype at the next update; otherwise they are
        moved to ``device`` now. The hyperparameters and ``iter`` must all be
        there, and no key this optimizer does not know (the state of another
        optimizer is a ValueError); missing state arrays start at zero.
        """
        name = type(self).__name__
        known = set(self.hyperparameters) | {"iter"}
        unknown = sorted(k for k in state if k not in known and not self._is_slot_key(k))
        if unknown:
            slots = f" and per-parameter state {', '.join(s + '/<name>' for s in self.slots)}" if self.slots else ""
            raise ValueError(f"{name}.load_state_dict: unexpected keys {unknown}; it keeps {sorted(known)}{slots}")
        missing = sorted(known - set(state))
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing keys {missing}; is this the state of another optimizer?")
        for attr in self.hyperparameters:
            setattr(self, attr, float(state[attr]))
        self._check_hyperparameters()
        self.iter = int(state["iter"])
        for slot in self.slots:
            table = {}
            prefix = slot + "/"
            for key, array in state.items():
                if key.startswith(prefix):
                    table[key[len(prefix):]] = (
                        backend.to_numpy(array).copy() if device is None else backend.to_device(array, device).copy()
                    )
            setattr(self, slot, table)


class SGD(Optimizer):
    """Stochastic gradient descent: W ← W − η ∂L/∂W."""

    kernel = "sgd"

    def __init__(self, lr=0.01):
        super().__init__(lr=lr)

    def _apply(self, xp, param, grad):
        param -= float(self.lr) * grad


class Momentum(Optimizer):
    """Momentum SGD: v ← αv − η ∂L/∂W;  W ← W + v  (α = ``momentum``)."""

    hyperparameters = ("lr", "momentum")
    slots = ("v",)

    kernel = "momentum"

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr=lr, momentum=momentum)

    def _scalars(self):
        return float(self.lr), float(self.momentum)

    def _apply(self, xp, param, grad, v):
        v *= float(self.momentum)
        v -= float(self.lr) * grad
        param += v


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the book's reformulated form (Bengio et al., arXiv:1212.0901).

    The parameters are the look-ahead point, and with α = ``momentum``, in
    the order the book computes it::

        v ← αv − η ∂L/∂W
        W ← W + α² v − (1 + α) η ∂L/∂W

    Kept as the book has it. Note that Bengio et al.'s eq. (7) uses the
    velocity *before* its update in the second line (W ← W + α² v_{t−1} −
    (1 + α) η g); the book's order uses v_t, which has the same fixed point
    (a steady step of −η g / (1 − α) under a constant gradient) but weights
    the momentum and gradient terms differently step by step.
    """

    hyperparameters = ("lr", "momentum")
    slots = ("v",)

    kernel = "nesterov"

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr=lr, momentum=momentum)

    def _scalars(self):
        return float(self.lr), float(self.momentum)

    def _apply(self, xp, param, grad, v):
        lr, mu = float(self.lr), float(self.momentum)
        v *= mu
        v -= lr * grad
        param += mu * mu * v
        param -= (1.0 + mu) * lr * grad


class AdaGrad(Optimizer):
    """AdaGrad: h ← h + g ⊙ g;  W ← W − η g / (√h + ε),  g = ∂L/∂W, ε = 1e-7."""

    slots = ("h",)

    kernel = "adagrad"

    def __init__(self, lr=0.01):
        super().__init__(lr=lr)

    def _scalars(self):
        return float(self.lr), EPS

    def _apply(self, xp, param, grad, h):
        h += grad * grad
        param -= float(self.lr) * grad / (xp.sqrt(h) + EPS)


class RMSprop(Optimizer):
    """RMSprop: h ← ρh + (1 − ρ) g ⊙ g;  W ← W − η g / (√h + ε),  ρ = ``decay_rate``, ε = 1e-7."""

    hyperparameters = ("lr", "decay_rate")
    slots = ("h",)
    kernel = "rmsprop"

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr=lr, decay_rate=decay_rate)

    def _scalars(self):
        return float(self.lr), float(self.decay_rate), EPS

    def _apply(self, xp, param, grad, h):
        rho = float(self.decay_rate)
        h *= rho
        h += (1.0 - rho) * grad * grad
        param -= float(self.lr) * grad / (xp.sqrt(h) + EPS)


class Adam(Optimizer):
    """Adam (Kingma & Ba, arXiv:1412.6980) with the book's bias correction folded into the step size.

    At update t (``iter``), with g = ∂L/∂W and ε = 1e-7::

        m ← m + (1 − β₁)(g − m)            (= β₁m + (1 − β₁)g)
        v ← v + (1 − β₂)(g ⊙ g − v)
        η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ)
        W ← W − η_t m / (√v + ε)

    This is the book's form (the "efficient version" of the paper's
    Algorithm 1, section 2): it equals W ← W − η m̂ / (√v̂ + ε̂) with
    m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ), except that ε is added before the
    correction (ε̂ = ε / √(1 − β₂ᵗ)). Kept so results match the book.
    """

    hyperparameters = ("lr", "beta1", "beta2")
    slots = ("m", "v")
    kernel = "adam"

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        super().__init__(lr=lr, beta1=beta1, beta2=beta2)
        self.lr_t = None

    def _decay(self):
        """The factor the weights are multiplied by before the step: 1, or AdamW's 1 - lr * weight_decay."""
        return 1.0

    def _begin(self):
        t, b1, b2 = self.iter, float(self.beta1), float(self.beta2)
        self.lr_t = float(self.lr) * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)

    def _scalars(self):
        return self.lr_t, float(self.beta1), float(self.beta2), EPS, self._decay()

    def _apply(self, xp, param, grad, m, v):
        b1, b2 = float(self.beta1), float(self.beta2)
        m += (1.0 - b1) * (grad - m)
        v += (1.0 - b2) * (grad * grad - v)
        param -= self.lr_t * m / (xp.sqrt(v) + EPS)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101). Not in the book.

    The decay shrinks the weights directly, apart from the gradient and its
    moments (so it acts even where the gradient is zero), then the step is
    :class:`Adam`'s, with λ = ``weight_decay``::

        W ← W − η λ W
        W ← W − η_t m / (√v + ε)

    The decay uses η itself, not the bias-corrected η_t (as in PyTorch's
    AdamW). Do not also add λW to the gradient (the networks'
    ``weight_decay_lambda``): that is the coupled L2 penalty AdamW replaces.
    """

    hyperparameters = ("lr", "beta1", "beta2", "weight_decay")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, weight_decay=0.01):
        Optimizer.__init__(self, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay)
        self.lr_t = None

    def _decay(self):
        return 1.0 - float(self.lr) * float(self.weight_decay)

    def _apply(self, xp, param, grad, m, v):
        param *= self._decay()  # the GPU kernel decays and steps in one launch
        super()._apply(xp, param, grad, m, v)


SLICE_BYTES = 2**18  # of one parameter: with its gradient and state, a slice stays in a core's cache


def _in_slices(apply, work):
    """``apply(numpy, param, grad, *state)`` for every ``(param, grad, state)`` of ``work`` (host arrays), over
    slices of the large parameters, all in one parallel call.

    Every update is elementwise, so slices of the flattened arrays give the
    very same result as the whole arrays, whatever the thread count.
    """
    xp = get_array_module(work[0][0])
    if sum(param.nbytes * (len(state) + 2) for param, _, state in work) <= util.SERIAL_BYTES:
        for param, grad, state in work:  # too little to wake a thread for (see xpnet.util.batch_parts)
            apply(xp, param, grad, *state)
        return
    items = []  # (param, grad, state, slice)
    for param, grad, state in work:
        arrays = (param, *state)
        if not all(a.flags.c_contiguous for a in arrays):
            items.append((param, grad, state, ...))
            continue
        flat, flat_grad = [a.reshape(-1) for a in arrays], grad.reshape(-1)
        for s in batch_parts(xp, param.size, param.itemsize * (len(arrays) + 1), SLICE_BYTES):
            items.append((flat[0], flat_grad, flat[1:], s))

    def update(item):
        param, grad, state, s = item
        apply(xp, param[s], grad[s], *(a[s] for a in state))

    map_parts(xp, update, items)


def _is_scalar(value):
    """A Python number or NumPy scalar: a parameter that has no memory to update in place."""
    if isinstance(value, bool) or backend.is_cupy_array(value):
        return False
    return isinstance(value, (int, float)) or isinstance(value, get_array_module(value).generic)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}


def get_optimizer(name, **params) -> Optimizer:
    """An optimizer by name, case-insensitive: ``get_optimizer('Adam', lr=0.01)``."""
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names are {', '.join(OPTIMIZERS)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}: {exc}; its parameters are {', '.join(cls.hyperparameters)}") from None
