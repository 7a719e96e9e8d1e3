"""Host memory: keep freed blocks for reuse, so that a new array does not fault in fresh pages every step.

glibc's ``malloc`` serves a large block (above 128 KiB at first, a
threshold it raises as blocks are freed, up to 32 MiB) with fresh pages
from the system and hands them back when the block is freed, or trims
them from the top of the heap. Every new array of that size then costs
one page fault per 4 KiB when it is first written: about 3,000 faults
in a SimpleConvNet training step at batch 100, a fifth of the step's time
on one core (the activations, masks and gradients of a step are all new
arrays). With the mmap threshold at its maximum (32 MiB) and the trim
threshold at 1 GiB, freed blocks stay in the heap and the next step's
arrays reuse their pages. The price: the process keeps, as free heap, the
memory its largest step needed (what it needs anyway one step later).

This is a fast path, switchable (``XPNET_CPU_FAST_PATHS_OFF=keep_freed_memory``
leaves ``malloc`` as it is; see :mod:`xpnet.fastpaths`). It acts once per
process, on xpnet's first CPU work, and only where the C library is glibc
(elsewhere it does nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from . import fastpaths

__all__ = ["keep_freed_memory", "state"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30

_lock = threading.Lock()
_state: str | None = None  # None until tried; then what happened, in words


def keep_freed_memory() -> bool:
    """Tune glibc's malloc to keep freed blocks below 32 MiB for reuse (once per process); True if in effect."""
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _tune()
    return _state.startswith("on")


def state() -> str:
    """What :func:`keep_freed_memory` did, in words ('not tried yet' before xpnet's first CPU work)."""
    return _state or "not tried yet"


def _tune() -> str:
    if not fastpaths.enabled("keep_freed_memory"):
        return f"off ({fastpaths.ENV} names it)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_libc_version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return "off (the C library is not glibc)"
    gnu_libc_version.restype = ctypes.c_char_p
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "off (glibc refused the thresholds)"
    return (f"on (glibc {gnu_libc_version().decode()}: blocks up to {MMAP_THRESHOLD // 2**20} MiB "
            f"come from the heap and freed memory is kept up to {TRIM_THRESHOLD // 2**30} GiB)")
