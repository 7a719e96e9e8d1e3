"""A training run that diverged, found and named with the step.

The rule: a run has diverged when

- a loss, or a parameter, is NaN or infinite; or
- the loss stays above :data:`FACTOR` times the run's first loss (at least
  :data:`FACTOR` x 1) for :data:`PATIENCE` steps in a row, or is above it
  at the end of an epoch or when a checkpoint is due: a checkpoint is never
  written, and a run never ends well, while the loss is that high.

A cross-entropy 100 times its starting value (about 2.3 for ten classes)
means logits in the hundreds on the wrong class: ``--lr 1e6`` reaches about
1e24 and stays finite for many steps, at chance accuracy.
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import get_array_module

__all__ = ["FACTOR", "PATIENCE", "TrainingDivergedError", "LossWatch", "check_losses", "check_parameters"]

FACTOR = 100.0
PATIENCE = 10


class TrainingDivergedError(FloatingPointError):
    """The loss or the parameters became NaN or infinite, or the loss stayed far above its start (see the rule)."""


def _kept(checkpoint_path):
    if not checkpoint_path:
        return ""
    if os.path.exists(checkpoint_path):
        return f"; the last good checkpoint, {checkpoint_path}, is unchanged"
    return f"; no checkpoint was written to {checkpoint_path}"


def check_losses(values, first_step, epoch, checkpoint_path=None):
    """Raise TrainingDivergedError at the first NaN or infinite loss of ``values`` (host floats of consecutive
    steps, the first being step ``first_step``, counted from 1 over the whole run, in epoch ``epoch``)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=float)))
    if bad.size:
        raise TrainingDivergedError(
            f"the loss became {values[bad[0]]} at step {first_step + int(bad[0])} (epoch {epoch}); "
            f"try a smaller learning rate{_kept(checkpoint_path)}"
        )


def check_parameters(params, step, epoch, checkpoint_path=None):
    """Raise TrainingDivergedError naming the parameters that hold NaN or infinity after the update of ``step``.

    The losses alone miss an update that breaks the weights on the last step
    read, since a loss is computed before its update: this is checked before
    every checkpoint. One synchronization with the GPU when all is well.
    """
    xp = get_array_module(*params.values())
    if bool(xp.stack([xp.isfinite(p).all() for p in params.values()]).all()):
        return
    bad = [name for name, p in params.items() if not bool(xp.isfinite(p).all())]
    raise TrainingDivergedError(
        f"{', '.join(bad)} became NaN or infinite by the update of step {step} (epoch {epoch}); "
        f"try a smaller learning rate{_kept(checkpoint_path)}"
    )


class LossWatch:
    """The rule above, applied to the losses of a run as they are read; ``first`` is the run's first loss.

    >>> watch = LossWatch(first=2.0)
    >>> watch.check([2.1, 250.0], first_step=1, epoch=1)   # one step above 200: not yet
    >>> watch.check_settled(step=2, epoch=1)
    Traceback (most recent call last):
    ...
    xpnet.trainer.divergence.TrainingDivergedError: the loss is 250 at step 2 (epoch 1), more than 100 times the first loss (2): the run diverged; try a smaller learning rate
    """

    def __init__(self, first=None):
        self.first = first
        self.streak = 0  # steps in a row above the limit, up to the last loss read
        self.last = None

    @property
    def limit(self):
        return FACTOR * max(self.first, 1.0)

    def check(self, values, first_step, epoch, checkpoint_path=None):
        """Losses of consecutive steps from ``first_step``: raise at a NaN or infinity, or at the PATIENCE-th
        step in a row above the limit."""
        check_losses(values, first_step, epoch, checkpoint_path)
        for i, value in enumerate(values):
            if self.first is None:
                self.first = float(value)
            self.last = float(value)
            self.streak = self.streak + 1 if value > self.limit else 0
            if self.streak >= PATIENCE:
                self._raise(first_step + i, epoch, checkpoint_path)

    def check_settled(self, step, epoch, checkpoint_path=None):
        """At the end of an epoch or before a checkpoint: the last loss read must be below the limit."""
        if self.streak:
            self._raise(step, epoch, checkpoint_path)

    def _raise(self, step, epoch, checkpoint_path):
        held = f"for {self.streak} steps up to step {step}" if self.streak > 1 else f"at step {step}"
        raise TrainingDivergedError(
            f"the loss is {self.last:.3g} {held} (epoch {epoch}), more than {FACTOR:g} times the first loss "
            f"({self.first:.3g}): the run diverged; try a smaller learning rate{_kept(checkpoint_path)}"
        )
