"""Devices and arrays: the one module of xpnet that imports CuPy.

Everything else asks this module for the array module ``xp`` (NumPy or
CuPy) of the arrays at hand, in the manner of DeZero's ``cuda.py`` and
Chainer's ``get_array_module``.

The default device comes from the environment variable ``XPNET_DEVICE``:

=========  ==========================================================
``cpu``    NumPy (the default)
``gpu``    CuPy on the current CUDA device (``gpu:N`` for device N)
``auto``   the GPU when one is usable, else the CPU
=========  ==========================================================

Asking for the GPU where none is usable is an error, never a quiet move to
the CPU. CuPy is imported lazily, on the first call that needs it, so
``import xpnet`` stays fast and works without CuPy or without a driver.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading

import numpy as np

__all__ = [
    "DEFAULT_DTYPE",
    "DeviceError",
    "get_device",
    "set_device",
    "using_device",
    "gpu_available",
    "gpu_unavailable_reason",
    "get_array_module",
    "xp_of_device",
    "device_of",
    "to_device",
    "to_numpy",
    "synchronize",
    "seed",
    "seeded",
    "host_rng",
    "random_state",
    "set_random_state",
    "random_uniform",
    "is_cupy_array",
    "gpu_devices",
    "library_versions",
    "gpu_bus_id",
    "nccl_unavailable_reason",
    "nccl_process_group",
]

DEFAULT_DTYPE = np.float32
VALID_DEVICES = ("cpu", "gpu", "gpu:N", "auto")
_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install 'xpnet[cuda12]'` "
    "(cupy-cuda12x) or `pip install 'xpnet[cuda13]'` (cupy-cuda13x), "
    "or run on the CPU with XPNET_DEVICE=cpu"
)
_DRIVER_HINT = (
    "check the NVIDIA driver and the GPU with `nvidia-smi`; a driver older than the CUDA of the installed "
    "CuPy package needs an update, or the CuPy package of the CUDA version the driver supports "
    "(cupy-cuda12x or cupy-cuda13x); or run on the CPU with XPNET_DEVICE=cpu"
)


class DeviceError(RuntimeError):
    """A device was asked for that cannot be used, or arrays sit on different devices."""


# --- CuPy, imported once and only here -------------------------------------

_cupy = None
_cupy_checked = False
_cupy_reason: str | None = None
_cupy_version: str | None = None  # known whenever CuPy imports, usable GPU or not
_cupy_installed = None  # the cupy module whenever it imports, usable GPU or not (for versions only)
_lock = threading.Lock()


def _load_cupy():
    """Return the cupy module if a GPU is usable, else None (reason kept; version kept whenever CuPy imports)."""
    global _cupy, _cupy_checked, _cupy_reason, _cupy_version, _cupy_installed
    if _cupy_checked:
        return _cupy
    with _lock:
        if _cupy_checked:
            return _cupy
        try:
            import cupy  # the only import of CuPy in xpnet
        except Exception as exc:  # ImportError, OSError about libcudart, ...
            _cupy_version = None
            _cupy_reason = f"CuPy cannot be imported ({type(exc).__name__}: {exc})"
        else:
            version = getattr(cupy, "__version__", None)
            _cupy_version = None if version is None else str(version)
            _cupy_installed = cupy
            try:
                usable = bool(cupy.is_available()) and cupy.cuda.runtime.getDeviceCount() > 0
                reason = None if usable else _why_no_device(cupy, _cupy_version)
            except Exception as exc:  # CUDARuntimeError, e.g. cudaErrorInsufficientDriver
                usable, reason = False, f"CuPy is installed but CUDA fails ({type(exc).__name__}: {exc})"
            if usable:
                _cupy = cupy
            _cupy_reason = reason
        _cupy_checked = True
    return _cupy


def _why_no_device(cupy, version):
    """CuPy's own reason when ``is_available()`` says False: it swallows the CUDA error, getDeviceCount raises it."""
    runtime = getattr(getattr(cupy, "cuda", None), "runtime", None)
    if runtime is None:
        return "CuPy is installed but sees no usable CUDA device or driver"
    try:
        count = runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: cudaErrorInsufficientDriver, cudaErrorNoDevice, ...
        return f"CuPy {version} is installed but CUDA fails ({type(exc).__name__}: {exc})"
    if count == 0:
        return f"CuPy {version} is installed but CUDA sees no device"
    return "CuPy is installed but sees no usable CUDA device or driver"


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    return _load_cupy() is not None


def gpu_unavailable_reason() -> str | None:
    """Why the GPU cannot be used, or None when it can."""
    _load_cupy()
    return _cupy_reason


def gpu_devices() -> list[dict]:
    """One dict per CUDA device CuPy sees: index, name, memory in bytes, compute capability."""
    cp = _load_cupy()
    if cp is None:
        return []
    devices = []
    for index in range(cp.cuda.runtime.getDeviceCount()):
        props = cp.cuda.runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        devices.append({"index": index, "name": name, "memory_bytes": int(props["totalGlobalMem"]),
                        "compute_capability": f"{props['major']}.{props['minor']}"})
    return devices


def gpu_bus_id(device) -> str:
    """The PCI bus id of a GPU, e.g. '0000:3B:00.0': it names the same physical GPU in every process,
    however ``CUDA_VISIBLE_DEVICES`` numbers the devices in each."""
    target = _parse(device)
    if target == "cpu":
        raise ValueError("gpu_bus_id: the CPU has no PCI bus id")
    return str(_require_cupy().cuda.runtime.deviceGetPCIBusId(int(target[4:])))


def library_versions() -> dict:
    """Versions of NumPy, of CuPy where it imports (even without a usable GPU), and of CUDA where usable.

    ``cuda_runtime`` and ``cuda_driver`` are what CuPy reports, also without a
    usable GPU (the runtime CuPy was built with, the driver where one is
    installed), and None where it reports nothing; ``cupy`` is None only
    when CuPy cannot be imported (or has no version).
    """
    _load_cupy()
    versions = {"numpy": np.__version__, "cupy": _cupy_version, "cuda_runtime": None, "cuda_driver": None}
    runtime = getattr(getattr(_cupy_installed, "cuda", None), "runtime", None)
    for key, ask in (("cuda_runtime", "runtimeGetVersion"), ("cuda_driver", "driverGetVersion")):
        try:
            number = int(getattr(runtime, ask)())
        except Exception:  # no such call, or CUDA fails (no driver): nothing reported
            continue
        if number > 0:  # a driver version of 0: no driver
            versions[key] = _cuda_version(number)
    return versions


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def _require_cupy():
    cp = _load_cupy()
    if cp is None:
        hint = _INSTALL_HINT if _cupy_version is None else _DRIVER_HINT  # installed: the driver or device is at fault
        raise DeviceError(f"the GPU was asked for but cannot be used: {_cupy_reason}. Fix: {hint}.")
    return cp


# --- NCCL, for data-parallel training (xpnet.distributed) ---------------------


def _load_nccl():
    """(cupy.cuda.nccl, cupyx.distributed), or (None, why not)."""
    cp = _load_cupy()
    if cp is None:
        return None, f"no usable GPU: {_cupy_reason}"
    try:
        from cupy.cuda import nccl
    except Exception as exc:
        return None, f"cupy.cuda.nccl cannot be imported ({type(exc).__name__}: {exc})"
    if not getattr(nccl, "available", False):
        return None, ("CuPy finds no NCCL library; install the NCCL wheel for your CUDA version "
                      "(nvidia-nccl-cu12 or nvidia-nccl-cu13)")
    try:
        import cupyx.distributed
    except Exception as exc:
        return None, f"cupyx.distributed cannot be imported ({type(exc).__name__}: {exc})"
    return (nccl, cupyx.distributed), None


def nccl_unavailable_reason() -> str | None:
    """Why CuPy cannot use NCCL here (no usable GPU, no NCCL library), or None when it can."""
    return _load_nccl()[1]


def nccl_process_group(size: int, rank: int):
    """This process's NCCL communicator among ``size`` processes, one GPU each (CuPy's current device).

    It is ``cupyx.distributed.init_process_group(size, rank, use_mpi=True)``:
    a collective call that every process of ``MPI.COMM_WORLD`` must make, the
    rendezvous going through MPI (without ``use_mpi`` CuPy would open a TCP
    store on port 13333 instead). The communicator has ``all_reduce(in,
    out, op)``, ``broadcast(array, root)`` and ``all_gather(in, out,
    count)`` on CuPy arrays. NCCL refuses two processes on one GPU. Raises
    DeviceError saying why when NCCL cannot be used.
    """
    loaded, reason = _load_nccl()
    if loaded is None:
        raise DeviceError(f"NCCL cannot be used: {reason}")
    return loaded[1].init_process_group(int(size), int(rank), use_mpi=True)


# --- device names -----------------------------------------------------------


def _parse(name) -> str:
    """Normalize a device name to 'cpu' or 'gpu:N', checking the GPU is usable."""
    if name is None:
        return get_device()
    text = str(name).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "auto":
        return "gpu:0" if gpu_available() else "cpu"
    if text == "gpu" or text == "cuda":
        cp = _require_cupy()
        return f"gpu:{cp.cuda.runtime.getDevice()}"
    for prefix in ("gpu:", "cuda:"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            cp = _require_cupy()
            index, count = int(text[len(prefix):]), cp.cuda.runtime.getDeviceCount()
            if index >= count:
                raise DeviceError(f"device {name!r} does not exist: CUDA sees {count} device(s), gpu:0 to gpu:{count - 1}")
            return f"gpu:{index}"
    raise ValueError(f"unknown device {name!r}; valid values are {', '.join(VALID_DEVICES)}")


_state = threading.local()


def _default_device() -> str:
    return _parse(os.environ.get("XPNET_DEVICE", "cpu") or "cpu")


def get_device() -> str:
    """The current default device, 'cpu' or 'gpu:N'."""
    device = getattr(_state, "device", None)
    if device is None:
        try:
            device = _default_device()
        except ValueError as exc:
            raise ValueError(f"XPNET_DEVICE: {exc}") from None
        _state.device = device
    return device


def set_device(name) -> str:
    """Make ``name`` ('cpu', 'gpu', 'gpu:N' or 'auto') the default device; returns its normalized name."""
    device = _parse(name)
    _state.device = device
    if device != "cpu":
        _require_cupy().cuda.Device(int(device[4:])).use()
    return device


@contextlib.contextmanager
def using_device(name):
    """``with using_device('gpu'):`` makes a device the default inside the block."""
    previous = get_device()
    device = set_device(name)
    try:
        yield device
    finally:
        set_device(previous)


# --- arrays -----------------------------------------------------------------


def is_cupy_array(x) -> bool:
    kind = type(x)
    return kind is not np.ndarray and kind.__module__.split(".", 1)[0] == "cupy"  # NumPy's, quickly: layers ask often


def get_array_module(*arrays):
    """numpy, or cupy when any argument is a CuPy array (no import of CuPy otherwise)."""
    for x in arrays:
        if is_cupy_array(x):
            return _require_cupy()
    return np


def xp_of_device(device=None):
    """The array module of a device name (default: the current device)."""
    return np if _parse(device) == "cpu" else _require_cupy()


def device_of(x) -> str:
    """'cpu' for a NumPy array, 'gpu:N' for a CuPy array on device N."""
    return f"gpu:{x.device.id}" if is_cupy_array(x) else "cpu"


def params_device(params) -> str:
    """Where a network's parameters (a dict of arrays, all on one device) are: :func:`device_of` its first."""
    return device_of(next(iter(params.values())))


def to_device(x, device=None):
    """Move an array (or a dict, list or tuple of arrays) to ``device``; a no-op when already there."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    target = _parse(device)
    if target == "cpu":
        return to_numpy(x)
    cp = _require_cupy()
    with cp.cuda.Device(int(target[4:])):
        if is_cupy_array(x):
            # asarray would hand back an array on another GPU as it is; copy() copies to the current one
            return x if device_of(x) == target else x.copy()
        return cp.asarray(x)


def to_numpy(x):
    """A NumPy array (or scalar) from a NumPy or CuPy array; copies only from the GPU."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def synchronize(device=None) -> None:
    """Wait for all queued GPU work; a no-op on the CPU."""
    if _cupy is None:
        return
    if device is None:
        _cupy.cuda.Device().synchronize()
    elif _parse(device) != "cpu":
        _cupy.cuda.Device(int(_parse(device)[4:])).synchronize()


# --- random numbers ---------------------------------------------------------

_host_rng = np.random.default_rng()
_device_rngs: dict = {}
_seed: int | None = None


def seed(n: int) -> None:
    """Seed xpnet's generators: the host one (weights, shuffles) and the GPU one (dropout masks)."""
    global _host_rng, _seed
    _seed = int(n)
    _host_rng = np.random.default_rng(_seed)
    _device_rngs.clear()


def host_rng() -> np.random.Generator:
    """The seeded NumPy generator for initial weights and shuffles (same on every device)."""
    return _host_rng


@contextlib.contextmanager
def seeded(n: int):
    """:func:`seed` for the duration of a ``with`` block; xpnet's generators are put back after it."""
    global _host_rng, _seed
    saved = _host_rng, _seed, dict(_device_rngs)
    seed(n)
    try:
        yield
    finally:
        _host_rng, _seed = saved[0], saved[1]
        _device_rngs.clear()
        _device_rngs.update(saved[2])


def random_uniform(xp, shape, dtype=DEFAULT_DTYPE):
    """Uniform [0, 1) numbers of ``dtype`` drawn on the device of ``xp`` (for per-step masks).

    On the CPU they come from the host generator; on the GPU from a CuPy
    generator seeded by :func:`seed`, so they never cross the bus.
    """
    if xp is np:
        return _host_rng.random(shape, dtype=dtype)
    device = xp.cuda.runtime.getDevice()
    rng = _device_rngs.get(device)
    if rng is None:
        rng = _device_rngs[device] = xp.random.default_rng(_seed)
    return rng.random(shape, dtype=dtype)


def random_state(device="cpu") -> dict:
    """The state of the generator that draws the dropout masks on ``device``, as JSON-serializable values.

    On the CPU it is the host generator's (``bit_generator.state``, which the
    initial weights and shuffles share); on a GPU the cuRAND states of its
    CuPy generator (bytes in base64), or ``{"device": "gpu", "state": None}``
    when no mask was drawn there yet. :func:`set_random_state` puts it back,
    so that a resumed run draws the masks a straight run draws.
    """
    target = _parse(device)
    if target == "cpu":
        return {"device": "cpu", "state": _host_rng.bit_generator.state}
    rng = _device_rngs.get(int(target[4:]))
    if rng is None:
        return {"device": "gpu", "seed": _seed, "state": None}
    raw = rng.bit_generator._state  # CuPy keeps cuRAND's per-thread states in one int8 array
    return {"device": "gpu", "seed": _seed, "state": base64.b64encode(raw.get().tobytes()).decode("ascii")}


def set_random_state(state, device="cpu") -> None:
    """Restore what :func:`random_state` returned for ``device``; a ValueError when it is not one."""
    global _host_rng
    target = _parse(device)
    if not isinstance(state, dict) or state.get("device") != ("cpu" if target == "cpu" else "gpu"):
        kind = state.get("device") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"random state of {kind!r}, not of {target}")
    if target == "cpu":
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["state"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"damaged random state of the CPU ({exc})") from None
        _host_rng = rng
        return
    cp = _require_cupy()
    index = int(target[4:])
    with cp.cuda.Device(index):
        rng = _device_rngs[index] = cp.random.default_rng(state.get("seed"))
        if state["state"] is not None:
            raw = np.frombuffer(base64.b64decode(state["state"]), dtype=np.int8)
            if raw.size != rng.bit_generator._state.size:
                raise ValueError(f"random state of {raw.size} bytes, but this GPU's generator has "
                                 f"{rng.bit_generator._state.size}")
            rng.bit_generator._state[...] = cp.asarray(raw)
