"""The book's common/trainer.py: xpnet's Trainer with the book's signature (see xpnet.tools.book.host.Trainer)."""

import os
import sys

import numpy as np

from xpnet.tools.book.host import Trainer

from .optimizer import *  # noqa: F403 (the book's trainer.py star-imports common.optimizer)
from .optimizer import __all__ as _optimizers

__all__ = ["sys", "os", *_optimizers, "Trainer"]
