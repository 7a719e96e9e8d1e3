"""Fixtures shared by the tests: every test body that touches arrays runs once per usable backend."""

import sys
import types

import numpy as np
import pytest

import xpnet
from xpnet import backend


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: numpy always, cupy where a GPU is usable."""
    if request.param == "numpy":
        return np
    if not backend.gpu_available():
        pytest.skip(f"cupy case skipped: no usable GPU ({backend.gpu_unavailable_reason()})")
    return backend.xp_of_device("gpu")


@pytest.fixture
def device(xp):
    """The device name that goes with ``xp``."""
    return "cpu" if xp is np else "gpu:0"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts on the CPU with a seeded generator, whatever XPNET_DEVICE says."""
    xpnet.set_device("cpu")
    xpnet.seed(0)
    yield
    xpnet.set_device("cpu")


@pytest.fixture
def forget_cupy_probe(monkeypatch):
    """Make the backend look for CuPy again (its cache is restored when the test ends)."""
    for name, value in {"_cupy": None, "_cupy_checked": False, "_cupy_reason": None, "_cupy_version": None,
                        "_cupy_installed": None}.items():
        monkeypatch.setattr(backend, name, value)


@pytest.fixture
def fake_cupy(monkeypatch, forget_cupy_probe):
    """``fake_cupy(is_available, get_device_count=None)``: an installed CuPy 14.0.0, imported from
    sys.modules, that answers ``is_available()`` as told, and ``cuda.runtime.getDeviceCount()`` too
    when that is given (real CuPy's is_available() hides the CUDA error that getDeviceCount raises)."""
    def install(is_available, get_device_count=None):
        fake = types.ModuleType("cupy")
        fake.__version__ = "14.0.0"
        fake.is_available = is_available
        if get_device_count is not None:
            fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
        monkeypatch.setitem(sys.modules, "cupy", fake)
        return fake

    return install


# The book-style scripts are run by tests/test_book_scripts.py through `xpnet book run`, never imported:
# importing one runs it (and --doctest-modules would import them all).
collect_ignore = ["book_scripts"]
