"""Training checkpoints and parameter files: plain ``.npz``, no pickle, written atomically.

A file holds only NumPy arrays of numbers or unicode strings, so it loads
with ``np.load(path, allow_pickle=False)`` on a machine without CuPy, and
whatever device wrote it. Its entries:

=========================  ===================================================
``xpnet/format_version``   0-d integer, :data:`FORMAT_VERSION`
``xpnet/kind``             0-d string, ``'checkpoint'`` or ``'params'``
``xpnet/epoch``            0-d integer (checkpoints)
``xpnet/optimizer``        0-d string, the optimizer's class name, or ``''``
``xpnet/meta``             0-d string, a JSON object of small metadata
``params/<name>``          each parameter, in its dtype (float32 stays float32)
``optimizer/<name>``       each entry of the optimizer's ``state_dict()``
=========================  ===================================================

The Trainer's checkpoints keep, in ``xpnet/meta``: ``step`` (an integer >= 0,
steps done of the epoch after ``epoch``, non-zero after Ctrl-C), ``seed``
(an integer), ``epoch_seconds`` (seconds spent on that unfinished epoch, a
finite number >= 0) and ``history`` (a string holding a JSON object of
lists of finite numbers: ``train_loss_list``, ``train_acc_list`` and
``test_acc_list`` in [0, 1], ``epoch_times`` >= 0).

A file is written to a temporary file beside it, flushed to disk, then
renamed over the target (``os.replace``): a crash or an error mid-write
leaves the previous file as it was. The book pickles its parameters
(``params.pkl``); pickles run code when loaded and need the classes that
wrote them, so xpnet writes none, and reads the book's through
:mod:`xpnet.safe_pickle`, which refuses anything but arrays and containers.

Loading checks everything before anything is used, and refuses with a
:class:`CheckpointError` naming the entry: a file that is not an ``.npz``
archive (a text file, a pickle, random bytes), a missing or negative
epoch in a checkpoint, parameters or optimizer state arrays that are not
floating point (boolean, integer, complex, strings) or hold NaN or
infinite values (a diverged run is never loaded), and training metadata of
the wrong type or out of range. :meth:`Checkpoint.validate` also checks it
against a run (its epochs and steps per epoch).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .backend import device_of, to_device, to_numpy
from .fileio import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "Checkpoint",
    "TrainingState",
    "save_checkpoint",
    "load_checkpoint",
    "restore_params",
    "save_params",
    "load_params",
    "is_pickle",
]

FORMAT_VERSION = 1

_HEADER = "xpnet/"
_PARAMS = "params/"
_OPTIMIZER = "optimizer/"
_VERSION, _KIND, _EPOCH, _OPTIMIZER_NAME, _META = (
    _HEADER + name for name in ("format_version", "kind", "epoch", "optimizer", "meta")
)


class CheckpointError(ValueError):
    """A file that is no xpnet checkpoint, or one that does not fit the network at hand."""

    def __init__(self, where, reason):
        self.where, self.reason = str(where), reason
        super().__init__(f"{self.where}: {reason}")


@dataclass
class TrainingState:
    """The Trainer's place in a run, read from a checkpoint and checked: see :meth:`Checkpoint.validate`."""

    epoch: int  # finished epochs
    step: int  # steps done of the next epoch (0 unless the run was interrupted within it)
    seed: int | None  # the shuffling seed, None when the checkpoint has none
    epoch_seconds: float  # seconds spent on the unfinished epoch
    history: dict  # those of train_loss_list, train_acc_list, test_acc_list, epoch_times it has: lists of floats


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: host NumPy arrays and plain Python values."""

    params: dict  # name -> np.ndarray
    optimizer_name: str | None = None
    optimizer_state: dict = field(default_factory=dict)  # for optimizer.load_state_dict
    epoch: int = 0
    version: int = FORMAT_VERSION
    meta: dict = field(default_factory=dict)
    path: str = "checkpoint"  # where it was read from, for error messages

    def validate(self, epochs=None, steps_per_epoch=None) -> TrainingState:
        """The training state in ``meta``, checked; against a run of ``epochs`` x ``steps_per_epoch`` steps if given.

        Every entry is checked for its type and range (:func:`load_checkpoint`
        already did this), the history against the epoch (one accuracy and
        one time per finished epoch, at least a loss per finished epoch and
        one per step of the next) and, given a run, the place in it (the
        epoch at most ``epochs``, the step at most ``steps_per_epoch``).
        Raises :class:`CheckpointError` naming the entry; nothing is changed,
        so a caller can check before it restores anything.
        """
        state = _training_state(self.path, self.epoch, self.meta)
        if epochs is not None and (state.epoch > epochs or (state.epoch == epochs and state.step)):
            where = f"epoch {state.epoch}" + (f" and {state.step} steps" if state.step else "")
            raise CheckpointError(self.path, f"the checkpoint is at {where}, beyond this run's {epochs} epochs; "
                                             f"give more epochs to train on from it")
        if steps_per_epoch is not None and state.step > steps_per_epoch:
            raise CheckpointError(self.path, f"the checkpoint stopped after step {state.step} of an epoch, but this run "
                                             f"has {steps_per_epoch} steps per epoch; resume with the same data and "
                                             f"batch size")
        history = state.history
        for name in ("train_acc_list", "test_acc_list", "epoch_times"):
            if name in history and len(history[name]) != state.epoch:
                raise CheckpointError(self.path, f"history {name!r} has {len(history[name])} entries for "
                                                 f"{state.epoch} finished epochs")
        if "train_loss_list" in history and len(history["train_loss_list"]) < state.epoch + state.step:
            raise CheckpointError(self.path, f"history 'train_loss_list' has {len(history['train_loss_list'])} losses, "
                                             f"too few for {state.epoch} finished epochs and {state.step} steps of "
                                             f"the next")
        return state


# --- writing --------------------------------------------------------------------------


def save_checkpoint(path, params, optimizer=None, epoch=0, **meta) -> None:
    """Write parameters, optimizer state, epoch and metadata to ``path`` (an .npz), atomically.

    ``params``: dict name -> array on any device (copied to the host).
    ``optimizer``: an object with ``state_dict()`` (an :mod:`xpnet.optimizer`
    optimizer), or None. ``meta``: small JSON-serializable values (strings,
    numbers, booleans, None, lists and dicts of them), returned by
    :func:`load_checkpoint` as ``Checkpoint.meta``. The file is written at
    exactly ``path``: no ``.npz`` is appended.
    """
    entries = _header("checkpoint", meta)
    entries[_EPOCH] = np.asarray(int(epoch), dtype=np.int64)
    entries.update(_prefixed(_PARAMS, params, "params"))
    if optimizer is not None:
        entries[_OPTIMIZER_NAME] = np.asarray(type(optimizer).__name__)
        entries.update(_prefixed(_OPTIMIZER, optimizer.state_dict(), "optimizer state"))
    _write_atomic(path, entries)


def save_params(path, params) -> None:
    """Write a dict of parameters (arrays on any device) to ``path`` (an .npz), atomically, without pickle."""
    entries = _header("params", {})
    entries.update(_prefixed(_PARAMS, params, "params"))
    _write_atomic(path, entries)


def _header(kind, meta):
    try:
        text = json.dumps(meta, default=_json_scalar, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata must be JSON-serializable (strings, numbers, lists, dicts): {exc}") from None
    return {
        _VERSION: np.asarray(FORMAT_VERSION, dtype=np.int64),
        _KIND: np.asarray(kind),
        _OPTIMIZER_NAME: np.asarray(""),
        _META: np.asarray(text),
    }


def _json_scalar(value):
    """NumPy/CuPy scalars and 0-d arrays in metadata become Python numbers."""
    if getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serializable")


def _prefixed(prefix, values, what):
    entries = {}
    for key, value in values.items():
        array = to_numpy(value)
        if array.dtype.hasobject:
            raise ValueError(f"{what}: {key!r} is an object array; only numbers and strings can be saved without pickle")
        entries[prefix + str(key)] = array
    return entries


def _write_atomic(path, entries):
    """np.savez through a file object (np.savez appends .npz to bare names) that replaces ``path`` atomically."""
    with atomic_write(path) as f:
        np.savez(f, **entries)


# --- reading --------------------------------------------------------------------------


def load_checkpoint(path) -> Checkpoint:
    """Read a file written by :func:`save_checkpoint` (or :func:`save_params`) into host arrays.

    Raises :class:`CheckpointError` for a file that is not an xpnet
    checkpoint, is damaged, or has a newer format version than this xpnet
    reads; FileNotFoundError when there is no file.
    """
    entries = _read_npz(path)
    if _VERSION not in entries:
        some = ", ".join(sorted(entries)[:5]) or "none"
        raise CheckpointError(path, f"not an xpnet checkpoint: no {_VERSION!r} entry (entries: {some})")
    version = _scalar(path, entries, _VERSION, int)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path, f"format version {version} is newer than this xpnet reads (up to {FORMAT_VERSION}); upgrade xpnet"
        )
    if version < 1:
        raise CheckpointError(path, f"unknown format version {version}")
    kind = _scalar(path, entries, _KIND, str)
    if kind not in ("checkpoint", "params"):
        raise CheckpointError(path, f"unknown kind {kind!r}")
    params, optimizer_state, unexpected = {}, {}, []
    for key, array in entries.items():
        if key.startswith(_PARAMS):
            params[key[len(_PARAMS):]] = _float_array(path, key, array)
        elif key.startswith(_OPTIMIZER):
            name = key[len(_OPTIMIZER):]
            # hyperparameters and counters were Python scalars; state arrays ('m/W1') stay arrays
            if array.ndim == 0 and "/" not in name:
                optimizer_state[name] = _number(path, key, array)
            else:
                optimizer_state[name] = _float_array(path, key, array)
        elif key not in (_VERSION, _KIND, _EPOCH, _OPTIMIZER_NAME, _META):
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(path, f"unexpected entries {sorted(unexpected)} for format version {version}")

    try:
        meta = json.loads(_scalar(path, entries, _META, str))
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"damaged metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(path, f"damaged metadata: a JSON {type(meta).__name__}, not an object")
    epoch = 0
    if kind == "checkpoint" or _EPOCH in entries:  # a parameters file has no epoch; a checkpoint must
        epoch = _scalar(path, entries, _EPOCH, int)
        if epoch < 0:
            raise CheckpointError(path, f"the entry {_EPOCH!r} must be >= 0, got {epoch}")
    _training_state(path, epoch, meta)  # the training metadata's types and ranges
    return Checkpoint(
        params=params,
        optimizer_name=_scalar(path, entries, _OPTIMIZER_NAME, str) or None,
        optimizer_state=optimizer_state,
        epoch=epoch,
        version=version,
        meta=meta,
        path=str(path),
    )


def load_params(path) -> dict:
    """The parameters (host NumPy arrays, by name) of a file from :func:`save_params` or :func:`save_checkpoint`,
    or of a pickle the book's ``save_params`` wrote (``.pkl``), read by :mod:`xpnet.safe_pickle`, which loads
    arrays and plain containers and nothing else."""
    if is_pickle(path):
        from .safe_pickle import load_params as load_pickled_params

        return load_pickled_params(path)
    return load_checkpoint(path).params


def _check_magic(path):
    """A clear refusal for files that are not zip archives, before NumPy tries them as a pickle."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    if not head:
        reason = "the file is empty"
    elif head.startswith(b"\x93NUMPY"):
        reason = "a single .npy array"
    elif head.startswith(b"\x80"):  # the protocol opcode that starts every pickle since protocol 2
        reason = "a Python pickle, which xpnet never loads (loading one can run any code)"
    else:
        reason = f"not an .npz archive (it begins with {head!r})"
    raise CheckpointError(path, f"not an xpnet checkpoint: {reason}; an xpnet checkpoint is an .npz archive "
                                f"written by xpnet")


def is_pickle(path) -> bool:
    """Whether ``path`` names a pickle (``.pkl`` or ``.pickle``), as the book's parameter files are."""
    return os.fspath(path).lower().endswith((".pkl", ".pickle"))


def _read_npz(path):
    _check_magic(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(path, "not an xpnet checkpoint: a single .npy array, not an .npz archive")
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError, CheckpointError):
        raise
    except Exception as exc:  # BadZipFile, pickled data refused, truncated members, bad CRC, ...
        raise CheckpointError(path, f"cannot be read as an .npz archive ({type(exc).__name__}: {exc})") from None


def _scalar(path, entries, key, kind):
    if key not in entries:
        raise CheckpointError(path, f"the entry {key!r} is missing")
    array = entries[key]
    expected = "U" if kind is str else "iu"
    if array.ndim != 0 or array.dtype.kind not in expected:
        raise CheckpointError(path, f"the entry {key!r} must be a 0-d {kind.__name__}, got {array.dtype} {array.shape}")
    return kind(array.item())


def _float_array(path, key, array):
    """A parameter or optimizer state array: floating point and finite, or a CheckpointError naming it."""
    if array.dtype.kind != "f":
        raise CheckpointError(path, f"{key} is {array.dtype} {array.shape}; expected a floating-point array "
                                    f"(float32 or float64)")
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise CheckpointError(path, f"{key} holds {bad} NaN or infinite values of {array.size}; values of a diverged "
                                    f"run are never loaded")
    return array


def _number(path, key, array):
    """An optimizer hyperparameter or counter: a finite real number, as a Python scalar."""
    if array.dtype.kind not in "iuf" or not np.isfinite(array):
        raise CheckpointError(path, f"{key} must be a finite number, got {array.dtype} {array.item()!r}")
    return array.item()


_HISTORY = ("train_loss_list", "train_acc_list", "test_acc_list", "epoch_times")


def _training_state(path, epoch, meta) -> TrainingState:
    """The Trainer's entries of ``meta``, each checked for its type and range (absent ones take defaults)."""
    def fail(reason):
        raise CheckpointError(path, reason)

    def integer(value):
        return isinstance(value, int) and not isinstance(value, bool)

    def number(value):
        return (integer(value) or isinstance(value, float)) and math.isfinite(value)

    step, seed, seconds = meta.get("step", 0), meta.get("seed"), meta.get("epoch_seconds", 0.0)
    if not (integer(step) and step >= 0):
        fail(f"meta 'step' must be an integer >= 0, got {step!r}")
    if seed is not None and not integer(seed):
        fail(f"meta 'seed' must be an integer, got {seed!r}")
    if not (number(seconds) and seconds >= 0):
        fail(f"meta 'epoch_seconds' must be a finite number >= 0, got {seconds!r}")
    text = meta.get("history", "{}")
    if not isinstance(text, str):
        fail(f"meta 'history' must be a JSON object in a string, got a {type(text).__name__}")
    try:
        history = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"meta 'history' is not valid JSON ({exc})")
    if not isinstance(history, dict):
        fail(f"meta 'history' must be a JSON object in a string, got a {type(history).__name__}")
    for name in _HISTORY:
        if name not in history:
            continue
        values = history[name]
        if not isinstance(values, list):
            fail(f"history {name!r} must be a list of numbers, got a {type(values).__name__}")
        for i, value in enumerate(values):
            if not number(value):
                fail(f"history {name!r} must be a list of finite numbers, got {value!r} at {i}")
            if name.endswith("acc_list") and not 0 <= value <= 1:
                fail(f"history {name!r} holds {value!r} at {i}; an accuracy lies in [0, 1]")
            if name == "epoch_times" and value < 0:
                fail(f"history {name!r} holds {value!r} at {i}; seconds are >= 0")
        history[name] = [float(v) for v in values]
    return TrainingState(epoch=epoch, step=step, seed=seed, epoch_seconds=float(seconds), history=history)


# --- restoring ------------------------------------------------------------------------


def restore_params(params, loaded_params, where="checkpoint") -> None:
    """Copy ``loaded_params`` (host or device arrays) into the arrays of ``params``, in place.

    Each value is moved to its parameter's device and cast to its dtype
    (float64 to a float32 network, say), so layers holding references to
    the parameter arrays see the new values. The names and shapes must
    match exactly and every value must be floating point (a boolean,
    integer, complex or string array is never cast); otherwise nothing is
    copied and a :class:`CheckpointError` names the missing and unexpected
    names, each shape mismatch and each array of the wrong kind. ``where``
    (a path) starts the message.
    """
    missing = sorted(set(params) - set(loaded_params))
    unexpected = sorted(set(loaded_params) - set(params))
    mismatched = [
        f"{key!r}: expected {tuple(params[key].shape)}, found {_shape(loaded_params[key])}"
        for key in params
        if key in loaded_params and tuple(params[key].shape) != _shape(loaded_params[key])
    ]
    wrong_kind = [
        f"{key!r} is {_dtype(loaded_params[key])}, expected {params[key].dtype} like the network's parameter"
        for key in params
        if key in loaded_params and _dtype(loaded_params[key]).kind != "f"
    ]
    problems = []
    if missing:
        problems.append(f"missing parameters {missing}")
    if unexpected:
        problems.append(f"unexpected parameters {unexpected}")
    if mismatched:
        problems.append("shape mismatches " + ", ".join(mismatched))
    problems += wrong_kind
    if problems:
        raise CheckpointError(where, "the parameters do not fit this network: " + "; ".join(problems))
    for key, param in params.items():
        param[...] = to_device(loaded_params[key], device_of(param))


def _shape(value):
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _dtype(value):
    return value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
