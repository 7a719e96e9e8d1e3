"""The book's common/optimizer.py: xpnet's optimizers, taking host gradients for parameters on any device."""

import numpy as np

from xpnet.tools.book.host import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

__all__ = ["np", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]
