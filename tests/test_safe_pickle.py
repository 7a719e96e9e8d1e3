"""Pickled weights, loaded safely: arrays and plain containers come back, nothing a pickle names is called."""

import builtins
import os
import pickle
import pickletools
import subprocess
from collections import OrderedDict

import numpy as np
import pytest

from xpnet.safe_pickle import UnsafePickleError, load, load_params, loads


def as_written_by_numpy_1(data):
    """The same pickle as NumPy 1.x writes it: its callables under numpy.core instead of numpy._core.

    Protocols 0 to 3 name them in text lines; 4 and 5 in length-prefixed strings inside an optional frame,
    which is dropped (a pickle without frames loads the same)."""
    ops = list(pickletools.genops(data))
    frames = [(op, arg, pos) for op, arg, pos in ops if op.name == "FRAME"]
    if frames:
        assert len(frames) == 1 and frames[0][2] == 2 and frames[0][1] == len(data) - 11, "a small pickle has one frame"
        data = data[:2] + data[11:]
    for long, short in ((b"numpy._core.multiarray", b"numpy.core.multiarray"), (b"numpy._core.numeric", b"numpy.core.numeric")):
        if data[:2] >= b"\x80\x04":
            data = data.replace(bytes([0x8C, len(long)]) + long, bytes([0x8C, len(short)]) + short)
        else:
            data = data.replace(long + b"\n", short + b"\n")
    assert b"numpy._core" not in data
    return data


def book_params(rng):
    """A dict like the book's save_params writes: float64 arrays by name."""
    return {"W1": rng.standard_normal((3, 1, 2, 2)), "b1": np.zeros(3), "W2": rng.standard_normal((4, 2)), "b2": np.ones(2)}


ODD_ARRAYS = {
    "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "strided": np.arange(10.0)[::3],
    "big_endian": np.arange(3, dtype=">f8"),
    "zero_d": np.array(7, dtype=np.int16),
    "scalar": np.float32(2.5),
    "bool": np.array([True, False]),
    "text": np.array(["ab", "c"]),
    "plain": [1, (2.5, "x"), None, True, 1 + 2j, b"\x00\xff", {"nested": np.uint8(3)}],
}


@pytest.mark.parametrize("numpy_1", [False, True], ids=["numpy-2-names", "numpy-1-names"])
@pytest.mark.parametrize("protocol", range(6))
def test_arrays_and_plain_containers_come_back_equal_from_every_protocol(rng, protocol, numpy_1):
    original = {**book_params(rng), **ODD_ARRAYS}
    data = pickle.dumps(original, protocol=protocol)
    loaded, unsafe = loads(as_written_by_numpy_1(data) if numpy_1 else data), pickle.loads(data)
    assert loaded.keys() == original.keys()
    for key, value in original.items():
        if isinstance(value, (np.ndarray, np.generic)):
            # the same as the plain pickle module gives (protocols below 5 bring '>f8' back as native float64)
            assert type(loaded[key]) is type(value) and loaded[key].dtype == unsafe[key].dtype, key
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        else:
            assert loaded[key] == value


def test_load_params_reads_the_books_format_from_a_file(rng, tmp_path):
    params = book_params(rng)
    path = tmp_path / "params.pkl"
    path.write_bytes(as_written_by_numpy_1(pickle.dumps(params, protocol=4)))
    loaded = load_params(path)
    assert list(loaded) == list(params)
    for key in params:
        np.testing.assert_array_equal(loaded[key], params[key])
        assert loaded[key].dtype == np.float64


class Command:
    """An object whose pickle calls ``function(*args)`` when loaded: what a hostile params.pkl holds."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def commands(marker):
    return {
        "posix.system": Command(os.system, f"touch {marker}"),
        "builtins.eval": Command(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": Command(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("name", ["posix.system", "builtins.eval", "subprocess.call"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_that_would_run_a_command_is_refused_without_running_it(rng, tmp_path, name, protocol):
    if name == "posix.system" and os.system.__module__ != "posix":
        pytest.skip("os.system lives in the posix module on POSIX systems only")
    marker = tmp_path / "ran"
    hostile = pickle.dumps({**book_params(rng), "W3": [np.ones(2), {"x": commands(marker)[name]}]}, protocol=protocol)
    path = tmp_path / "params.pkl"
    path.write_bytes(hostile)
    with pytest.raises(UnsafePickleError, match=rf"params.pkl: refused the global {name}( \(written as [a-z_]+\.[a-z]+\))?: only NumPy arrays"):
        load_params(path)
    assert not marker.exists()
    pickle.loads(hostile)  # the plain pickle module runs the command: the file really was hostile
    assert marker.exists()


class Plain:
    """Any class: its pickle names it, and loading would import its module and build it."""


@pytest.mark.parametrize("value, name", [(Plain(), "test_safe_pickle.Plain"),
                                         (OrderedDict(W=np.ones(2)), "collections.OrderedDict"),
                                         ({1, 2}, "builtins.set")])
def test_anything_but_arrays_and_plain_containers_is_refused(value, name):
    with pytest.raises(UnsafePickleError, match=rf"refused the global {name}"):
        loads(pickle.dumps(value, protocol=2))


def test_an_object_array_is_refused():
    with pytest.raises(UnsafePickleError, match=r"refused an object dtype \(object\)"):
        loads(pickle.dumps(np.array([1, "a"], dtype=object)))


def test_an_allowed_callable_cannot_build_another_type():
    """_reconstruct's first argument must be numpy.ndarray, not another name the loader allows."""
    data = pickle.dumps(np.zeros(2), protocol=2).replace(b"cnumpy\nndarray\n", b"cnumpy\ndtype\n", 1)
    with pytest.raises(UnsafePickleError, match="refused to reconstruct an array of type"):
        loads(data)


def test_bytes_of_protocol_2_decode_as_latin1_only():
    data = pickle.dumps(b"\x00\xff", protocol=2)
    assert loads(data) == b"\x00\xff"
    with pytest.raises(UnsafePickleError, match="refused _codecs.encode with encoding 'utf-16'"):
        loads(data.replace(b"latin1", b"utf-16"))  # the same length: the rest of the pickle stays valid


def test_load_params_wants_a_dict_of_arrays_of_numbers(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([np.ones(2)]))
    with pytest.raises(ValueError, match="list.pkl: a pickle of parameters holds a dict name -> array, not list"):
        load_params(path)
    path.write_bytes(pickle.dumps({"W": np.array(["a"])}))
    with pytest.raises(ValueError, match=r"parameter 'W' is not an array of numbers \(dtype <U1\)"):
        load_params(path)


def test_load_takes_an_open_file(rng, tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(book_params(rng)))
    with open(path, "rb") as f:
        assert set(load(f)) == {"W1", "b1", "W2", "b2"}
