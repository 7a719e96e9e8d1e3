"""Pickles that hold only NumPy arrays and plain containers, loaded without running anything else.

The book saves trained weights with ``pickle.dump`` (``ch07/params.pkl``,
``ch08/deep_convnet_params.pkl``). ``pickle.load`` calls whatever callables
the file names, so a pickle from anywhere can run any command. The
:class:`RestrictedUnpickler` here resolves only the callables that NumPy's
own array pickling uses (array and scalar reconstruction, ``numpy.dtype``,
for pickles written by NumPy 1.x and 2.x with protocols 0 to 5) and the
latin-1 bytes of protocols 0 to 2, as PyTorch's ``weights_only`` loading
does for tensors. Dicts, lists, tuples, numbers (complex too), strings,
bytes, booleans and None need no callable. Every other name in the file
(``os.system``, ``builtins.eval``, ``subprocess.Popen``, any class) is
refused with :class:`UnsafePickleError` before anything is called, and
object arrays are refused too.

    >>> import pickle, numpy as np
    >>> loads(pickle.dumps({"W1": np.ones(2)}))
    {'W1': array([1., 1.])}
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle

import numpy as np

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "load", "loads", "load_params"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle names a callable or holds a value that is not an array or a plain container."""


# The callables NumPy's pickles name, found through NumPy's own reductions rather than private modules.
_reconstruct = np.ndarray((0,)).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
_scalar = np.float64(0.0).__reduce__()[0]  # numpy(._)core.multiarray.scalar
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numpy(._)core.numeric._frombuffer: protocol 5


def _dtype(*args, **kwargs):
    """numpy.dtype, refusing object dtypes (their items would be arbitrary Python objects)."""
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise UnsafePickleError(f"refused an object dtype ({dtype}): only arrays of numbers, booleans and strings load")
    return dtype


def _array(subtype, shape, typecode):
    """_reconstruct for plain ndarrays only (its first argument could otherwise name another allowed callable)."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused to reconstruct an array of type {subtype!r}; only numpy.ndarray loads")
    return _reconstruct(subtype, shape, typecode)


def _latin1(text, encoding="latin1"):
    """_codecs.encode as protocols 0 to 2 use it for bytes: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r}; pickles of bytes use 'latin1'")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
    ("builtins", "complex"): complex,
    ("__builtin__", "complex"): complex,  # protocols 0 to 2 name Python 2's module
}
for _core in ("numpy.core", "numpy._core"):  # NumPy 1.x wrote numpy.core, NumPy 2.x writes numpy._core
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _array
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the names NumPy arrays need; any other name is an UnsafePickleError."""

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            # protocols 0 to 2 write Python 2's names (__builtin__.eval, commands.call): name what they mean
            meant = _compat_pickle.NAME_MAPPING.get((module, name)) or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
            written = f" (written as {module}.{name})" if meant != (module, name) else ""
            raise UnsafePickleError(
                f"refused the global {meant[0]}.{meant[1]}{written}: only NumPy arrays and plain containers (dict, list, tuple, "
                f"numbers, strings, booleans, None) are loaded from a pickle, and nothing it names is called"
            )
        return found

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused the persistent id {pid!r}: plain pickles of arrays have none")


def loads(data, where="<bytes>", *, encoding="ASCII", errors="strict"):
    """The object in the pickle ``data`` (bytes), if it holds only arrays and plain containers."""
    return load(io.BytesIO(data), where=where, encoding=encoding, errors=errors)


def load(file, where=None, *, encoding="ASCII", errors="strict"):
    """The object in a pickle file (a path or a binary file object), if it holds only arrays and plain containers.

    Raises :class:`UnsafePickleError` (a ``pickle.UnpicklingError``) naming
    the file and the refused name, before calling anything the file names.
    ``encoding`` and ``errors`` are ``pickle.load``'s, for Python 2's strings
    (NumPy arrays pickled by Python 2 need ``encoding="latin1"``).
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return load(f, where=os.fspath(file) if where is None else where, encoding=encoding, errors=errors)
    where = where or getattr(file, "name", "<stream>")
    try:
        obj = RestrictedUnpickler(file, encoding=encoding, errors=errors).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{where}: {exc}") from None
    _refuse_object_arrays(obj, where)
    return obj


def _refuse_object_arrays(obj, where):
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise UnsafePickleError(f"{where}: refused an array of dtype {obj.dtype}: only arrays of numbers load")
    if isinstance(obj, dict):
        for value in obj.values():
            _refuse_object_arrays(value, where)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _refuse_object_arrays(value, where)


def load_params(path) -> dict:
    """A pickled dict of parameters, the book's ``save_params`` format: name -> NumPy array (host)."""
    params = load(path)
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError(f"{path}: a pickle of parameters holds a dict name -> array, not {type(params).__name__}")
    arrays = {}
    for key, value in params.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{path}: parameter {key!r} is not an array of numbers (dtype {array.dtype})")
        arrays[key] = array
    return arrays
