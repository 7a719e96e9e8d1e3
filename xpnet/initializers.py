"""Initial weights as in the book: a fixed standard deviation, He ('relu') or Xavier ('sigmoid').

Weights are drawn on the host from xpnet's seeded generator and then moved,
so the same seed gives the same initial weights on the CPU and on the GPU.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import DEFAULT_DTYPE, host_rng, to_device

__all__ = ["weight_scale", "normal", "zeros", "ones"]

_HE = ("relu", "he")
_XAVIER = ("sigmoid", "xavier")


def weight_scale(weight_init_std, fan_in):
    """Standard deviation for a layer with ``fan_in`` inputs.

    ``weight_init_std`` is a number (used as is), 'relu'/'he' for sqrt(2 / fan_in),
    or 'sigmoid'/'xavier' for sqrt(1 / fan_in), the book's choices.
    """
    if isinstance(weight_init_std, str):
        name = weight_init_std.lower()
        if name in _HE:
            return math.sqrt(2.0 / fan_in)
        if name in _XAVIER:
            return math.sqrt(1.0 / fan_in)
        raise ValueError(f"weight_init_std must be a number, 'relu'/'he' or 'sigmoid'/'xavier', got {weight_init_std!r}")
    std = float(weight_init_std)
    if not std > 0:
        raise ValueError(f"weight_init_std must be positive, got {weight_init_std!r}")
    return std


def normal(shape, std, dtype=DEFAULT_DTYPE, device=None):
    """Normal(0, std^2) weights of ``shape``, drawn on the host and moved to ``device``."""
    return to_device((std * host_rng().standard_normal(shape)).astype(dtype), device)


def zeros(shape, dtype=DEFAULT_DTYPE, device=None):
    return to_device(np.zeros(shape, dtype=dtype), device)


def ones(shape, dtype=DEFAULT_DTYPE, device=None):
    return to_device(np.ones(shape, dtype=dtype), device)
