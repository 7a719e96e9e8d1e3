"""The book's common/gradient.py: xpnet's central differences (``x`` must be C-contiguous, as parameters are)."""

import numpy as np

from xpnet.gradient import numerical_gradient, numerical_gradient_2d

__all__ = ["np", "numerical_gradient_2d", "numerical_gradient"]
