"""CPU threads: how many xpnet uses, and the pool that runs its work over slices of a batch.

NumPy releases the GIL in copies, ufuncs and matrix products (``matmul``
only where the result has more than 500 values; ``dot`` always), so Python
threads that each take a slice of the batch (im2col and the product of a
chunk of examples, a block of an elementwise layer) run on as many cores.
The count:

==============================  ===================================================
``xpnet.set_num_threads(n)``    n threads from now on in this process
``XPNET_NUM_THREADS=n``         n threads (read at the first parallel call)
otherwise                       the cores this process may use: its CPU affinity,
                                capped by a cgroup CPU quota (rounded up)
==============================  ===================================================

:func:`parallel_map` is the one way xpnet's CPU work runs in parallel:

* **Deterministic.** The caller cuts the work into a fixed list of items
  (slices of the batch) that depends on the data's shape and the thread
  count only; results come back in item order, so a sum over slices adds in
  the same order every time. Which thread ran which item does not matter.
* **BLAS at one thread.** While a parallel call runs, NumPy's BLAS is held
  at one thread (threadpoolctl): the parallelism is over the batch, and
  BLAS threads on products this small do not pay, spin-wait after each
  call, and take the cores of a busy machine.
* **No deadlock.** The caller works through the items too, so the call
  finishes even when every pool thread is busy (another caller, a nested
  pool of the user's). A parallel call made inside an item runs serially.
  The pool is created on first use in each process, and a forked child
  (the search's worker processes) starts without one: the parent's threads
  do not exist there.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["get_num_threads", "set_num_threads", "num_threads_source", "available_cores", "cgroup_cpu_limit",
           "parallel_map", "split", "blas_info", "one_blas_thread"]

ENV = "XPNET_NUM_THREADS"

_lock = threading.Lock()
_setting: tuple[int, str] | None = None  # (count, where it came from)
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (pid, helper threads) the pool was made for
_local = threading.local()  # .inside: this thread is running an item of a parallel call


# --- how many threads ----------------------------------------------------------------------------------


def cgroup_cpu_limit(proc="/proc/self") -> float | None:
    """The CPUs a cgroup CPU quota allows this process (e.g. 1.5), or None when there is no quota.

    cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``),
    the tightest quota on the path from the process's cgroup up to the root
    of the mounted hierarchy. Linux only; None elsewhere or when unreadable.
    """
    try:
        with open(os.path.join(proc, "mountinfo")) as f:
            mountinfo = f.read().splitlines()
        with open(os.path.join(proc, "cgroup")) as f:
            memberships = f.read().splitlines()
    except OSError:
        return None
    mounts = {}  # "v2" or "v1" -> (root of the hierarchy seen there, mount point)
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        if kind[0] == "cgroup2":
            mounts.setdefault("v2", (fields[3], fields[4]))
        elif kind[0] == "cgroup" and "cpu" in kind[2].split(","):
            mounts.setdefault("v1", (fields[3], fields[4]))
    limits = []
    for line in memberships:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and "v2" in mounts:
            limits += _quotas(mounts["v2"], path, _read_cpu_max)
        elif "cpu" in controllers.split(",") and "v1" in mounts:
            limits += _quotas(mounts["v1"], path, _read_cfs_quota)
    return min(limits) if limits else None


def _quotas(mount, path, read):
    """The quotas found in every directory from the cgroup ``path`` up to the mount point."""
    root, mountpoint = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    parts = [p for p in path.split("/") if p]
    found = []
    for depth in range(len(parts), -1, -1):
        quota = read(os.path.join(mountpoint, *parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _read_cpu_max(directory):
    try:
        with open(os.path.join(directory, "cpu.max")) as f:
            quota, period = (f.read().split() + ["100000"])[:2]
    except OSError:
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _read_cfs_quota(directory):
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(directory, "cpu.cfs_period_us")) as f:
            period = int(f.read())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores() -> tuple[int, str]:
    """The cores this process may really use, and why: its CPU affinity, capped by a cgroup CPU quota.

    A quota of 1.5 CPUs gives 2 threads: two threads can use it fully,
    one could use only two thirds of it.
    """
    if hasattr(os, "sched_getaffinity"):
        cores, why = len(os.sched_getaffinity(0)), "CPU affinity"
    else:
        cores, why = os.cpu_count() or 1, "CPU count"
    quota = cgroup_cpu_limit()
    if quota is not None and math.ceil(quota) < cores:
        return max(1, math.ceil(quota)), f"cgroup CPU quota of {quota:g} CPUs ({why}: {cores} cores)"
    return cores, f"{why}: {cores} cores"


def _positive_int(value, what):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, got {value}")
    return int(value)


def _from_environment() -> tuple[int, str]:
    text = os.environ.get(ENV, "").strip()
    if not text:
        return available_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{ENV} must be a positive integer (a thread count), got {text!r}; "
                         f"unset it to use every core this process may use")
    return count, f"{ENV}={count}"


def get_num_threads() -> int:
    """The number of threads xpnet's CPU work uses (see the module's table for where it comes from)."""
    return _current()[0]


def num_threads_source() -> str:
    """Where the thread count came from, in words: ``'XPNET_NUM_THREADS=4'``, ``'CPU affinity: 2 cores'``, ..."""
    return _current()[1]


def _current():
    global _setting
    setting = _setting
    if setting is None:
        setting = _from_environment()
        with _lock:
            if _setting is None:
                _setting = setting
            setting = _setting
    return setting


def set_num_threads(n) -> int:
    """Use ``n`` threads for xpnet's CPU work from now on; ``None`` goes back to the default. Returns the count."""
    global _setting
    setting = None if n is None else (_positive_int(n, "set_num_threads: n"), f"xpnet.set_num_threads({int(n)})")
    with _lock:
        _setting = setting
    return get_num_threads()


# --- BLAS held at one thread inside parallel work ---------------------------------------------------


class _BlasLimit:
    """Holds the BLAS libraries NumPy loaded at one thread while any parallel call runs (a counted hold)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.holders = 0
        self.controller = None  # threadpoolctl's view of the BLAS libraries, found once per process
        self.saved = None
        self.unavailable = None

    def _blas(self):
        if self.controller is None and self.unavailable is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError as exc:
                self.unavailable = f"threadpoolctl cannot be imported ({exc}); BLAS keeps its own thread count"
                return None
            self.controller = ThreadpoolController().select(user_api="blas")
        return self.controller

    def __enter__(self):
        with self.lock:
            self.holders += 1
            if self.holders == 1:
                blas = self._blas()
                if blas is not None:  # the libraries not at one thread already, and their counts
                    self.saved = [(lib, lib.num_threads) for lib in blas.lib_controllers if lib.num_threads != 1]
                    for lib, _ in self.saved:
                        lib.set_num_threads(1)

    def __exit__(self, *exc):
        with self.lock:
            self.holders -= 1
            if self.holders == 0 and self.saved is not None:
                for lib, count in self.saved:
                    lib.set_num_threads(count)
                self.saved = None


_blas_limit = _BlasLimit()


def one_blas_thread():
    """A ``with`` block in which BLAS stays at one thread, as in a parallel call: around a run of them (a
    network's forward and backward), so that each call inside does not set and restore BLAS's count (a
    few microseconds each, which small batches notice). Blocks nest."""
    return _blas_limit


def blas_info() -> str:
    """The BLAS NumPy uses and its thread count outside xpnet's parallel calls, in words."""
    blas = _blas_limit._blas()
    if blas is None:
        return _blas_limit.unavailable
    libs = [f"{lib.internal_api} {lib.version or ''}".strip()
            + f" ({lib.num_threads} thread{'s' if lib.num_threads != 1 else ''} outside xpnet's work)"
            for lib in blas.lib_controllers]
    return ", ".join(libs) or "none found by threadpoolctl"


# --- the pool ---------------------------------------------------------------------------------------


def _mark_inside():
    _local.inside = True


def _get_pool(helpers):
    """The process's pool of ``helpers`` threads, made on first use in this process (and again after fork)."""
    global _pool, _pool_key
    key = (os.getpid(), helpers)
    with _lock:
        if _pool_key != key:
            old = _pool if _pool_key is not None and _pool_key[0] == key[0] else None
            _pool = ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="xpnet", initializer=_mark_inside)
            _pool_key = key
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _after_fork_in_child():
    """A forked child has only the forking thread: forget the parent's pool and locks."""
    global _pool, _pool_key, _lock, _blas_limit
    _pool, _pool_key = None, None
    _lock = threading.Lock()
    saved = _blas_limit
    _blas_limit = _BlasLimit()
    _blas_limit.controller, _blas_limit.unavailable = saved.controller, saved.unavailable
    _local.inside = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def split(n, parts) -> list[slice]:
    """``range(n)`` cut into at most ``parts`` contiguous slices of near-equal length, longer ones first."""
    parts = max(1, min(int(parts), n))
    size, extra = divmod(n, parts)
    slices, start = [], 0
    for k in range(parts):
        stop = start + size + (k < extra)
        slices.append(slice(start, stop))
        start = stop
    return slices


def parallel_map(fn, items, workers=None) -> list:
    """``[fn(item) for item in items]``, computed by up to :func:`get_num_threads` threads (and no more than
    ``workers``, the threads the work is worth, where given), in item order.

    ``fn`` must write only what its own item owns (its slice of an output)
    and return what is to be combined (partial sums), which the caller adds
    in item order. Errors raised by ``fn`` reach the caller once every
    started item has finished. BLAS runs single-threaded for the duration.

    The caller waits for the items, not for the helper threads: a helper
    that wakes up after the caller has taken every item (waking a sleeping
    thread costs tens of microseconds, on a virtual machine a hundred) finds
    nothing to do and goes back to sleep, and the call has not waited for it.
    """
    items = list(items)
    inside = getattr(_local, "inside", False)
    threads = 1 if inside else min(get_num_threads(), len(items), workers or len(items))
    if threads <= 1:
        if inside:
            return [fn(item) for item in items]
        with _blas_limit:
            return [fn(item) for item in items]
    results = [None] * len(items)
    progress = threading.Condition(threading.Lock())
    state = {"next": 0, "running": 0, "error": None}

    def drain():
        while True:
            with progress:
                k = state["next"]
                if k >= len(items) or state["error"] is not None:
                    return
                state["next"] = k + 1
                state["running"] += 1
            try:
                results[k] = fn(items[k])
            except BaseException as exc:  # handed to the caller, after every started item has finished
                with progress:
                    if state["error"] is None:
                        state["error"] = exc
            finally:
                with progress:
                    state["running"] -= 1
                    if not state["running"]:
                        progress.notify_all()

    with _blas_limit:
        pool = _get_pool(get_num_threads() - 1)
        for _ in range(threads - 1):
            pool.submit(drain)
        _local.inside = True
        try:
            drain()
        finally:
            _local.inside = False
            with progress:
                while state["running"]:
                    progress.wait()
    if state["error"] is not None:
        raise state["error"]
    return results
