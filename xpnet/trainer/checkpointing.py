"""A training run to and from a checkpoint: parameters, optimizer state, where it stopped, its history, its clock.

A run stops between epochs, or after Ctrl-C in the middle of one (after
the step under way). The checkpoint then holds the steps done of the
unfinished epoch and the seconds spent on them; a resumed run goes on from
that step and adds its own seconds, so that the epoch is timed as if it had
not been cut (:class:`EpochClock`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..backend import params_device, random_state, set_random_state
from ..checkpoint import CheckpointError, load_checkpoint, restore_params, save_checkpoint

__all__ = ["EpochClock", "Resumed", "save_training", "load_training"]


class EpochClock:
    """Seconds spent on the epoch under way, before and after a resume; ``clock`` gives seconds (perf_counter).

    >>> ticks = iter([10.0, 12.5, 20.0])
    >>> clock = EpochClock(clock=lambda: next(ticks))
    >>> clock.resume(3.0)               # 3 s were spent on this epoch before the checkpoint
    >>> clock.start()                   # at 10 s: the epoch counts from 7 s
    7.0
    >>> clock.unfinished(steps_done=2)  # at 12.5 s
    5.5
    >>> clock.elapsed()                 # at 20 s
    13.0
    """

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self.started = None  # when the epoch under way started (earlier by the seconds carried over)
        self.carried = 0.0  # seconds of the epoch spent before a resume, not yet counted in ``started``

    def resume(self, seconds):
        """The epoch was cut after ``seconds`` of work: count them when it starts again."""
        self.started, self.carried = None, float(seconds)

    def start(self):
        """The epoch (re)starts now; returns its start on the clock, moved back by the seconds carried over."""
        self.started = self._clock() - self.carried
        self.carried = 0.0
        return self.started

    def elapsed(self):
        """Seconds since :meth:`start`, the carried ones included."""
        return self._clock() - self.started

    def unfinished(self, steps_done):
        """Seconds spent on an epoch cut after ``steps_done`` steps (0 between epochs), for a checkpoint."""
        if not steps_done:
            return 0.0
        if self.started is None:  # resumed, not yet trained
            return self.carried
        return self.elapsed()


@dataclass
class Resumed:
    """Where a checkpointed run stopped: after ``epoch`` epochs and ``step`` steps of the next, and its history."""

    epoch: int
    step: int
    examples: int  # of the shuffle of the next epoch, seen in those ``step`` steps
    seed: int | None
    epoch_seconds: float
    history: dict = field(default_factory=dict)  # train_loss_list, train_acc_list, test_acc_list, epoch_times


def save_training(path, network, optimizer, *, epoch, step, seed, epoch_seconds, history, examples=None, ranks=1):
    """Write ``network``'s state, ``optimizer``'s state and where the run is to ``path``, atomically (no pickle).

    ``step`` steps of the epoch after ``epoch`` are done, having seen its
    first ``examples`` examples (of its shuffle; a resume goes on from there
    whatever its batch size); ``ranks`` trained them. ``history`` holds the
    lists of the run (one loss per step done, the unfinished epoch's
    included; accuracies and seconds per finished epoch). The metadata also
    records the network's class (``network``) and the state of the generator
    of the dropout masks on the network's device (``random_state``), so that
    a resumed run draws the masks a straight run draws.
    """
    meta = {} if examples is None else {"examples": int(examples)}
    masks = random_state(params_device(network.params))
    save_checkpoint(path, _state(network), optimizer=optimizer, epoch=epoch, step=step, seed=seed,
                    epoch_seconds=epoch_seconds, history=json.dumps(history), ranks=int(ranks),
                    network=type(network).__name__, random_state=masks, **meta)


def _state(network):
    """What a checkpoint keeps of ``network``: its state, or the parameters of a duck-typed one (the book's)."""
    return network.state() if hasattr(network, "state") else network.params


def _restore(network, state, where):
    if hasattr(network, "load_state"):
        network.load_state(state, where=where)
    else:  # a duck-typed network, such as the book's own: its parameters only
        restore_params(network.params, state, where=where)


def load_training(path, network, optimizer, *, train_size, batch_size, epochs=None, keep=(), say=print):
    """Load the state written by :func:`save_training` into ``network`` and ``optimizer``; returns :class:`Resumed`.

    The checkpoint may come from another device than the network's. The
    optimizer takes the checkpoint's hyperparameters except those named in
    ``keep``, which keep their current values (``say`` tells which changed).
    All or nothing: the checkpoint is checked against the run first
    (:meth:`Checkpoint.validate` with ``epochs``, the examples of the epoch
    seen against ``train_size``, the network's class, the optimizer's), and
    when restoring fails part way the network, the optimizer and the
    generator are put back as they were. A checkpoint without ``examples``
    (older ones) counts ``step`` batches of ``batch_size``. Raises
    :class:`~xpnet.checkpoint.CheckpointError` (a ValueError).
    """
    checkpoint = load_checkpoint(path)
    state = checkpoint.validate(epochs=epochs)
    examples = checkpoint.meta.get("examples", state.step * batch_size)
    if not (isinstance(examples, int) and 0 <= examples <= train_size and (examples > 0) == (state.step > 0)):
        raise CheckpointError(path, f"the checkpoint stopped after {examples!r} examples ({state.step} steps) of an "
                                    f"epoch, but this run has {train_size} training examples; resume with the same data")
    held, mine = checkpoint.meta.get("network"), type(network).__name__
    if held is not None and held != mine:
        raise CheckpointError(path, f"the checkpoint holds a {held}, but this run trains a {mine}")
    if checkpoint.optimizer_state and checkpoint.optimizer_name and checkpoint.optimizer_name != type(optimizer).__name__:
        raise CheckpointError(path, f"the checkpoint holds the state of {checkpoint.optimizer_name}, but this run "
                                    f"uses {type(optimizer).__name__}; resume with the same optimizer")
    device = params_device(network.params)
    before = ({k: v.copy() for k, v in _state(network).items()}, optimizer.state_dict(), random_state(device))
    try:
        _restore(network, checkpoint.params, str(path))
        if checkpoint.optimizer_state:
            kept = {name: getattr(optimizer, name) for name in keep}
            optimizer.load_state_dict(checkpoint.optimizer_state)
            for name, value in kept.items():
                if value != getattr(optimizer, name):
                    say(f"resuming with {name}={value:g} (the checkpoint's was {getattr(optimizer, name):g})")
                    setattr(optimizer, name, value)
        if "random_state" in checkpoint.meta:
            set_random_state(checkpoint.meta["random_state"], device)
    except BaseException as exc:
        _restore(network, before[0], str(path))
        optimizer.load_state_dict(before[1])
        set_random_state(before[2], device)
        if isinstance(exc, ValueError) and not isinstance(exc, CheckpointError):
            raise CheckpointError(path, str(exc)) from None
        raise
    return Resumed(epoch=state.epoch, step=state.step, examples=examples, seed=state.seed,
                   epoch_seconds=state.epoch_seconds if state.step else 0.0, history=state.history)
