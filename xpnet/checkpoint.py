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

A file is written to a temporary file beside it, flushed to disk, then
renamed over the target (``os.replace``): a crash or an error mid-write
leaves the previous file as it was. The book pickles its parameters
(``params.pkl``); pickles run code when loaded and need the classes that
wrote them, so xpnet does not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .backend import device_of, to_device, to_numpy
from .fileio import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "restore_params",
    "save_params",
    "load_params",
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
class Checkpoint:
    """What :func:`load_checkpoint` read: host NumPy arrays and plain Python values."""

    params: dict  # name -> np.ndarray
    optimizer_name: str | None = None
    optimizer_state: dict = field(default_factory=dict)  # for optimizer.load_state_dict
    epoch: int = 0
    version: int = FORMAT_VERSION
    meta: dict = field(default_factory=dict)


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
            params[key[len(_PARAMS):]] = array
        elif key.startswith(_OPTIMIZER):
            name = key[len(_OPTIMIZER):]
            # hyperparameters and counters were Python scalars; state arrays ('m/W1') stay arrays
            optimizer_state[name] = array.item() if array.ndim == 0 and "/" not in name else array
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
    return Checkpoint(
        params=params,
        optimizer_name=_scalar(path, entries, _OPTIMIZER_NAME, str) or None,
        optimizer_state=optimizer_state,
        epoch=_scalar(path, entries, _EPOCH, int) if _EPOCH in entries else 0,
        version=version,
        meta=meta,
    )


def load_params(path) -> dict:
    """The parameters (host NumPy arrays, by name) of a file from :func:`save_params` or :func:`save_checkpoint`."""
    return load_checkpoint(path).params


def _read_npz(path):
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


# --- restoring ------------------------------------------------------------------------


def restore_params(params, loaded_params, where="checkpoint") -> None:
    """Copy ``loaded_params`` (host or device arrays) into the arrays of ``params``, in place.

    Each value is moved to its parameter's device and cast to its dtype, so
    layers holding references to the parameter arrays see the new values.
    The names and shapes must match exactly; otherwise nothing is copied and
    a :class:`CheckpointError` names the missing and unexpected names and
    each shape mismatch. ``where`` (a path) starts the message.
    """
    missing = sorted(set(params) - set(loaded_params))
    unexpected = sorted(set(loaded_params) - set(params))
    mismatched = [
        f"{key!r}: expected {tuple(params[key].shape)}, found {_shape(loaded_params[key])}"
        for key in params
        if key in loaded_params and tuple(params[key].shape) != _shape(loaded_params[key])
    ]
    problems = []
    if missing:
        problems.append(f"missing parameters {missing}")
    if unexpected:
        problems.append(f"unexpected parameters {unexpected}")
    if mismatched:
        problems.append("shape mismatches " + ", ".join(mismatched))
    if problems:
        raise CheckpointError(where, "the parameters do not fit this network: " + "; ".join(problems))
    for key, param in params.items():
        param[...] = to_device(loaded_params[key], device_of(param))


def _shape(value):
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
