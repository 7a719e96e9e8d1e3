"""The book's Trainer, and the small pieces it is made of.

==================  ==========================================================
``trainer``         :class:`Trainer`: the loop of epochs, steps and evaluations
``interrupt``       Ctrl-C that waits for the step under way
``losses``          the losses of an epoch, read from the device in batches
``divergence``      :class:`TrainingDivergedError` and the rule: NaN or infinite
                    losses and parameters, or a loss far above its start
``checkpointing``   save and resume a run, mid-epoch included, with its clock
``progress``        the progress bar and the lines of a verbose run
``checks``          the data and labels, checked once before training
==================  ==========================================================
"""

from .divergence import TrainingDivergedError
from .trainer import Trainer

__all__ = ["Trainer", "TrainingDivergedError"]
