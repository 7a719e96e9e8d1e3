"""The losses of the epoch under way: kept on the device step by step, read to the host a batch at a time.

Reading a loss from the GPU waits for the GPU to finish; the Trainer reads
every ``log_every`` steps, so that the GPU runs ahead of Python in between.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_numpy

__all__ = ["EpochLosses", "read_losses"]


def read_losses(pending):
    """0-d loss arrays (NumPy or CuPy, one device) as a list of Python floats: one transfer, one synchronization."""
    xp = get_array_module(*pending)
    return to_numpy(xp.stack(pending)).astype(float).tolist()


class EpochLosses:
    """The loss of each step of one epoch: ``pending`` (0-d arrays not yet read) and ``values`` (floats read).

    >>> losses = EpochLosses()
    >>> losses.add(np.float32(0.5)); losses.add(np.float32(0.25))
    >>> losses.take_pending()
    [np.float32(0.5), np.float32(0.25)]
    >>> losses.values += [0.5, 0.25]
    >>> losses.pending, losses.values
    ([], [0.5, 0.25])
    """

    def __init__(self, values=()):
        self.pending = []
        self.values = list(values)

    def add(self, loss):
        """The loss of one more step, left on its device."""
        self.pending.append(loss)

    def take_pending(self):
        """The losses not yet read, in step order; they are no longer pending."""
        pending, self.pending = self.pending, []
        return pending
