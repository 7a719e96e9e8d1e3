"""The benchmark harness: backends, batch sizes, honest timing, memory peaks and machine facts.

Two ways to run this folder:

* smoke (the default, and what CI does through plain ``python -m pytest``):
  timing is disabled, every case runs once, as a test of its result: at
  batch 1 in the default suite, at the other batches with ``-m slow``;
* real: ``XPNET_BENCH=1 python -m pytest benchmarks --bench-library xpnet
  --benchmark-json=FILE`` (or ``--benchmark-enable``), every case of one
  library is warmed up and timed. ``suite.py`` here runs one process per
  library, alternating, and the report; a timed run of both libraries in
  one process stops with a usage error (their thread pools slow each other).

Every timed call ends in a device synchronization, so a GPU time is the
time the work took, not the time it took to queue it. See README.md here.
"""

from __future__ import annotations

import math
import os
import platform
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import backend as xb
from xpnet import threads
from xpnet.tools.benchreport import LIBRARY as LIBRARY_OF  # backend -> library

import peers

BATCHES = (1, 32, 128, 256, 512)  # 256: the batch of the GPU targets
BACKENDS = ("numpy", "cupy", "torch-cpu", "torch-cuda")
LIBRARIES = ("xpnet", "torch")
DTYPE = np.float32
MAX_ROUNDS = 1000  # enough for stable medians of microsecond cases
WARMUP_CALLS = 2  # untimed: kernel compilation, first allocations, caches; the second also sizes the rounds


# --- smoke or real, and which library ---------------------------------------------------


def pytest_addoption(parser):
    parser.getgroup("xpnet benchmarks").addoption(
        "--bench-library", choices=LIBRARIES, default=None,
        help="run the cases of one library only (xpnet: numpy and cupy; torch: torch-cpu and torch-cuda); "
             "the others skip. A timed run needs it: each library is timed in a process of its own "
             "(benchmarks/suite.py runs both, alternating).")


_LOAD_AT_START = None  # the 1-minute load average when this process began, for the result file


def _real_run_asked(config) -> bool:
    return os.environ.get("XPNET_BENCH") == "1" or bool(config.getoption("benchmark_enable", False))


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure reads the option
def pytest_configure(config):
    global _LOAD_AT_START
    try:
        _LOAD_AT_START = os.getloadavg()[0]
    except (AttributeError, OSError):
        _LOAD_AT_START = None
    real = _real_run_asked(config)
    if not real and not config.getoption("benchmark_disable", False):
        config.option.benchmark_disable = True
    xdist = config.getoption("dist", "no") != "no" or os.environ.get("PYTEST_XDIST_WORKER")
    if real and xdist:
        raise pytest.UsageError(
            "xpnet benchmarks must not run under pytest-xdist: parallel workers share the cores and the GPU, "
            "so every time would be wrong. Run them with -p no:xdist (or without -n)."
        )


def is_smoke(config) -> bool:
    """True when timing is off: each case runs once, as a test that the benchmark works."""
    return bool(config.getoption("benchmark_disable", False)) and not config.getoption("benchmark_enable", False)


SMOKE_BATCHES = (1,)  # a smoke run of the default suite; the larger batches run with -m slow


def library_of(item) -> str | None:
    """"xpnet" or "torch" for a case of the suite (by its backend), None for any other test."""
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec else None
    return LIBRARY_OF.get(backend)


ONE_PROCESS_ERROR = (
    "a timed run of xpnet ({xpnet}) and PyTorch ({torch}) in one process is not a result: their thread "
    "pools take each other's cores, and every ratio would be wrong. Time each library in a process of its "
    "own: python benchmarks/suite.py --out DIR [--rounds 3] [-k EXPR] runs both, alternating, and writes "
    "the report; or select one library with --bench-library xpnet|torch (or with -k)."
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """In a smoke run, the cases at batches beyond SMOKE_BATCHES are slow ones: -m slow runs them.
    With --bench-library, the other library's cases skip, and so do the tests that are no case of its own."""
    smoke = is_smoke(config)
    chosen = config.getoption("bench_library", None)
    here = Path(__file__).parent
    for item in items:
        if here not in Path(item.path).parents:
            continue
        batch = getattr(item, "callspec", None) and item.callspec.params.get("batch")
        if smoke and batch is not None and batch not in SMOKE_BATCHES:
            item.add_marker(pytest.mark.slow)
        library = library_of(item)
        if chosen and library != chosen:
            if library is None:
                why = (f"not a case of the timed suite (a check that needs both libraries, or a test of a "
                       f"script): --bench-library {chosen} runs {chosen}'s cases only")
            else:
                why = (f"{item.callspec.params['backend']} case skipped: --bench-library {chosen} times "
                       f"{chosen} alone (each library in a process of its own)")
            item.add_marker(pytest.mark.skip(reason=why))


def pytest_collection_finish(session):
    """A timed run of the cases of both libraries in one process stops here (after -k and -m deselected)."""
    if is_smoke(session.config):
        return
    here = Path(__file__).parent
    timed = {}
    for item in session.items:
        library = library_of(item)
        if library and here in Path(item.path).parents and item.get_closest_marker("skip") is None:
            timed.setdefault(library, set()).add(item.callspec.params["backend"])
    if len(timed) > 1:
        names = {library: ", ".join(sorted(backends, key=BACKENDS.index)) for library, backends in timed.items()}
        raise pytest.UsageError(ONE_PROCESS_ERROR.format(**names))


def pytest_report_header(config):
    chosen = config.getoption("bench_library", None)
    which = f", {chosen} only" if chosen else ""
    if is_smoke(config):
        return (f"xpnet benchmarks: smoke run (timing disabled, each case once{which}); "
                f"for a real run: python benchmarks/suite.py")
    return f"xpnet benchmarks: real run, timed, batches {', '.join(map(str, BATCHES))}{which}"


# --- machine facts ------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def blas_info() -> dict:
    """The BLAS NumPy uses: name, version, threads (threadpoolctl when installed, else NumPy's build config)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        pools.sort(key=lambda p: "numpy" not in p.get("filepath", ""))  # NumPy's own BLAS first
        if pools:
            p = pools[0]
            return {"name": p.get("internal_api"), "version": p.get("version"), "threads": p.get("num_threads"),
                    "architecture": p.get("architecture"), "source": "threadpoolctl"}
    info = {"name": None, "version": None, "threads": None, "architecture": None, "source": "numpy.show_config"}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=blas.get("name"), version=blas.get("version"))
    except Exception:  # older NumPy without mode="dicts", or a build without the entry
        pass
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            info["threads"] = int(os.environ[var])
            break
    else:
        info["threads"] = usable_cores()
    return info


def cpu_threads() -> int:
    """The CPU threads of xpnet's work (``xpnet.set_num_threads``, ``XPNET_NUM_THREADS``, else every usable core);
    the PyTorch peer gets as many."""
    return xpnet.get_num_threads()


def gpu_name() -> str | None:
    if not xb.gpu_available():
        return None
    cp = xb.xp_of_device("gpu")
    index = cp.cuda.runtime.getDevice()
    for device in xb.gpu_devices():
        if device["index"] == index:
            return device["name"]
    return None


def cupy_tf32() -> bool:
    """CuPy uses TF32 tensor cores for float32 matrix products when CUPY_TF32=1."""
    return os.environ.get("CUPY_TF32", "0") == "1"


def pytest_benchmark_update_machine_info(config, machine_info):
    """Machine-level facts for every result file (pytest-benchmark adds node, Python and py-cpuinfo's CPU)."""
    facts = {
        "xpnet": xpnet.__version__,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "xpnet_threads": xpnet.get_num_threads(),
        "xpnet_threads_source": threads.num_threads_source(),
        "dtype": np.dtype(DTYPE).name,
        "cupy_tf32": cupy_tf32(),
        "xpnet_device_env": os.environ.get("XPNET_DEVICE"),
        "gpu_unavailable_reason": xb.gpu_unavailable_reason(),
        "gpus": xb.gpu_devices(),
        "gpu_name": gpu_name(),
        "bench_library": config.getoption("bench_library", None),
        "load_average": _LOAD_AT_START,
    }
    facts.update({k: v for k, v in xb.library_versions().items() if k != "numpy"})
    if facts["bench_library"] == "xpnet":  # PyTorch stays out of this process, not even imported
        facts["torch"] = {"available": False, "reason": "not run in this process (--bench-library xpnet)"}
    else:
        facts["torch"] = peers.facts(threads=cpu_threads())
    machine_info["xpnet"] = facts


# --- backends ------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One column of the comparison: xpnet on NumPy or CuPy, or the PyTorch peer on CPU or CUDA."""

    name: str  # numpy | cupy | torch-cpu | torch-cuda
    device: str  # cpu | gpu:N | cuda
    is_torch: bool
    on_gpu: bool

    def sync(self):
        """Wait until every queued operation of this backend has finished."""
        if self.is_torch:
            if self.on_gpu:
                peers.synchronize()
        elif self.on_gpu:
            xpnet.synchronize()

    def device_name(self) -> str:
        if not self.on_gpu:
            return cpu_model()
        return peers.cuda_device_name() if self.is_torch else gpu_name()

    def to_device(self, host_array):
        """A host (NumPy) array on this backend's device: a CuPy array or a torch tensor where needed."""
        if self.is_torch:
            return peers.tensor(host_array, self.device)
        return xpnet.to_device(host_array, self.device)


def make_backend(name: str) -> Backend:
    """The backend called ``name``; skips the test with the reason when it cannot run here."""
    if name == "numpy":
        return Backend("numpy", "cpu", False, False)
    if name == "cupy":
        if not xb.gpu_available():
            pytest.skip(f"cupy case skipped: no usable GPU ({xb.gpu_unavailable_reason()})")
        return Backend("cupy", xb.set_device("gpu"), False, True)
    reason = peers.unavailable_reason(cuda=name == "torch-cuda")
    if reason:
        pytest.skip(f"{name} case skipped: {reason}")
    peers.configure(threads=cpu_threads())
    return Backend(name, "cuda" if name == "torch-cuda" else "cpu", True, name == "torch-cuda")


@pytest.fixture(params=[
    "numpy",
    pytest.param("cupy", marks=pytest.mark.gpu),
    "torch-cpu",
    pytest.param("torch-cuda", marks=pytest.mark.gpu),
])
def backend(request):
    """The backend under test (skipped with the reason where it cannot run)."""
    yield make_backend(request.param)
    xpnet.set_device("cpu")


@pytest.fixture(params=BATCHES, ids=[f"batch{n}" for n in BATCHES])
def batch(request):
    """The batch size."""
    return request.param


@pytest.fixture
def rng():
    """Host generator for inputs: the same numbers on every backend."""
    xpnet.seed(0)
    return np.random.default_rng(0)


# --- measuring ------------------------------------------------------------------------


def _call(setup, target):
    return target(setup()) if setup else target()


def _rounds(config, setup, target):
    """Warm up, then choose the rounds from the time of one call: --benchmark-max-time in all, at least
    --benchmark-min-rounds, at most MAX_ROUNDS."""
    for _ in range(WARMUP_CALLS - 1):
        _call(setup, target)
    start = time.perf_counter()
    _call(setup, target)  # the last warm-up call, timed with its setup, only to size the run
    per_round = time.perf_counter() - start
    budget = float(config.getoption("benchmark_max_time"))
    min_rounds = int(config.getoption("benchmark_min_rounds"))
    return max(min_rounds, min(MAX_ROUNDS, math.ceil(budget / max(per_round, 1e-9))))


def _cupy_peak_bytes(cp, call) -> int:
    """The most bytes of CuPy's memory pool that ``call()`` had in use at once, beyond those in use before it.

    A memory hook follows every block handed out and given back, so this is
    exact for everything allocated through the pool (not for cuBLAS's own
    workspace); blocks are counted at their rounded size.
    """

    class PeakHook(cp.cuda.MemoryHook):
        name = "xpnet_benchmark_peak"

        def __init__(self):
            self.current = self.peak = 0

        def malloc_postprocess(self, **kwargs):
            self.current += kwargs["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kwargs):
            self.current -= kwargs["mem_size"]  # below zero when blocks from before the call are freed

    cp.cuda.Device().synchronize()
    hook = PeakHook()
    with hook:
        call()
        cp.cuda.Device().synchronize()
    return int(hook.peak)


def peak_memory(bk: Backend, setup, target) -> dict:
    """Peak memory of one extra, untimed call of ``target`` (after its ``setup``), beyond what was in use
    when it started.

    GPU (CuPy): a memory hook on CuPy's pool. GPU (torch): the caching
    allocator's peak counter. CPU (NumPy): tracemalloc, which sees NumPy's
    allocations; torch's CPU allocator is invisible to it, so torch-cpu
    records no host peak.
    """
    arg = (setup(),) if setup else ()
    if bk.name == "cupy":
        return {"peak_gpu_bytes": _cupy_peak_bytes(xb.xp_of_device("gpu"), lambda: target(*arg))}
    if bk.name == "torch-cuda":
        return {"peak_gpu_bytes": peers.cuda_peak_bytes(lambda: target(*arg))}
    if bk.name == "numpy":
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            target(*arg)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return {"peak_host_bytes": int(peak - before)}
    return {}


@pytest.fixture
def measure(backend, batch, request, benchmark):
    """``measure(target, setup=None, *, check, layer, family, pass_, flops, im2col_bytes)`` times one case.

    ``target`` is the timed call and must end with ``backend.sync()``. ``setup``
    (untimed, run before every round, also ending with ``backend.sync()``)
    returns the one argument of ``target``, e.g. what the forward pass kept
    for a timed backward pass. In a smoke run, ``check(result)`` then tests
    what the one call returned against its reference. After the timed
    rounds, one extra untimed call measures peak memory.
    """

    bk = backend

    def run(target, setup=None, *, check, layer, family, pass_, flops=0, im2col_bytes=0, **extra):
        benchmark.group = f"{layer} | {pass_} | batch {batch}"
        benchmark.extra_info.update({
            "layer": layer,
            "family": family,
            "pass": pass_,
            "batch": batch,
            "backend": bk.name,
            "device": bk.device,
            "device_name": bk.device_name(),
            "dtype": np.dtype(DTYPE).name,
            "flops": int(flops),
            "im2col_bytes": int(im2col_bytes),
            "threads": peers.threads() if bk.name == "torch-cpu" else (cpu_threads() if bk.name == "numpy" else None),
            "tf32": cupy_tf32() if bk.name == "cupy" else False,
            **extra,
        })

        def setup_args():
            return ((setup(),), {}) if setup else ((), {})

        if benchmark.disabled:
            result = benchmark.pedantic(target, setup=setup_args if setup else None)
            check(result)
        else:
            rounds = _rounds(request.config, setup, target)
            result = benchmark.pedantic(target, setup=setup_args if setup else None, rounds=rounds, warmup_rounds=0)
        benchmark.extra_info.update(peak_memory(bk, setup, target))
        return result

    return run
