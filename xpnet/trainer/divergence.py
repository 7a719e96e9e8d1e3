"""A training run that diverged: NaN or infinite losses or parameters, found and named with the step."""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module

__all__ = ["TrainingDivergedError", "check_losses", "check_parameters"]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


def _kept(checkpoint_path):
    return f"; the last good checkpoint, {checkpoint_path}, is unchanged" if checkpoint_path else ""


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
