"""Switches for the CPU fast paths: each is a named helper beside the generic code it replaces.

=====================================  ===========================================  ==================================
name                                   the fast path                                the generic code it replaces
=====================================  ===========================================  ==================================
``input_gradient_by_gather``           ``Convolution._input_gradient_by_gather``:   the book's col2im: dcol = dout W,
                                       dx as im2col of the padded dout times the    then one strided add per filter
                                       flipped filters (stride 1, FN <= 2C)         offset
``products_by_filter_row``             ``Convolution._products_by_filter_row``      im2col (FH*FW copies of the
                                       and ``_weight_gradient_by_filter_row``:      input) and one product
                                       window rows (FW copies of the input, no
                                       FH), then one product per filter row
                                       (stride 1, FW*C >= 32)
``columns_by_offset``                  ``util.im2col_by_offsets``: the columns of   im2col's strided copy, in runs
                                       inputs of at most 3 channels, one copy per   of FW*C values
                                       window offset and channel (runs along an
                                       output row), read transposed by BLAS
``inference_by_slices``                ``Network._scores_by_slices``: in            one parallel call per layer over
                                       evaluation mode each thread takes a slice    slices of the batch
                                       of the batch through every layer
``training_by_slices``                 ``Network._gradient_by_slices``: each        one parallel call per layer and
                                       thread takes a slice forward and back        pass over slices of the batch
                                       through every layer; gradients added
                                       (no batch normalization)
``keep_freed_memory``                  ``hostmem.keep_freed_memory``: freed         glibc's defaults: big blocks
                                       blocks stay in the heap for the next step    go back to the system on free
``first_layer_without_input_gradient`` ``Network.gradient``: the first              dx of every layer, the first
                                       Convolution skips dx (its input is data)     one's thrown away
=====================================  ===========================================  ==================================

Each has a case in ``benchmarks/cpu_fast_paths.py`` that times it on and
off, each in processes of its own. ``XPNET_CPU_FAST_PATHS_OFF=name,name``
turns fast paths off for a process; ``with fastpaths.disabled("name"):``
does it inside one (for tests: the switch is the process's, not a
thread's, since xpnet's own threads run the work). The GPU's fast paths
are the kernels of :mod:`xpnet.kernels`, switched by ``kernels.disabled()``.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["NAMES", "enabled", "disabled"]

NAMES = ("input_gradient_by_gather", "products_by_filter_row", "columns_by_offset", "inference_by_slices",
         "training_by_slices", "keep_freed_memory", "first_layer_without_input_gradient")
ENV = "XPNET_CPU_FAST_PATHS_OFF"


def _from_environment():
    off = {name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()}
    unknown = sorted(off - set(NAMES))
    if unknown:
        raise ValueError(f"{ENV}: unknown fast paths {unknown}; the names are {', '.join(NAMES)}")
    return off


_off = _from_environment()


def enabled(name) -> bool:
    """Whether the CPU fast path ``name`` is on (all are, unless turned off)."""
    return name not in _off


@contextlib.contextmanager
def disabled(*names):
    """Run the generic code instead of the named fast paths inside the block (all of them when none is named)."""
    global _off
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown fast paths {unknown}; the names are {', '.join(NAMES)}")
    previous = _off
    _off = previous | set(names or NAMES)
    try:
        yield
    finally:
        _off = previous
