"""The CUDA sources of the index kernels, compiled as C for the host, against the NumPy path.

The kernels in :mod:`xpnet.kernels` run only where CuPy has a GPU
(``test_kernels.py`` compares them with the generic code there). Their
im2col and col2im bodies are plain C index arithmetic, so this module
wraps each body in the loop CuPy's ``ElementwiseKernel`` runs it in (one
iteration per output element ``i``), compiles it with the host's C
compiler, and checks that the columns and the folded image agree with
:func:`xpnet.util.im2col_array` and :func:`xpnet.util.col2im_array` on
the CPU: the column layout is the same on both devices. Host arrays only:
this tests the kernel sources, not a device.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from xpnet import kernels
from xpnet.util import col2im_array, conv_output_size, im2col_array

SIZES = "int H, int W, int C, int OH, int OW, int FH, int FW, int S, int P"


def host_source(name, raw, out, body):
    """C for ``name(raw, sizes..., out, count)``: the kernel ``body`` for i = 0 .. count - 1."""
    return f"""
typedef int idx_t;
typedef float T;
void {name}(const T *{raw}, {SIZES}, T *{out}_out, long long count) {{
    for (long long i = 0; i < count; ++i) {{
        T {out};
        {{ {body} }}
        {out}_out[i] = {out};
    }}
}}
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build the kernel sources for the host")
    folder = tmp_path_factory.mktemp("kernels")
    source = folder / "kernels.c"
    source.write_text(host_source("im2col", "img", "col", kernels._IM2COL)
                      + host_source("col2im", "col", "img", kernels._COL2IM))
    library = folder / "kernels.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    lib = ctypes.CDLL(str(library))
    for fn in (lib.im2col, lib.col2im):
        fn.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 9 + [ctypes.c_void_p, ctypes.c_longlong]
        fn.restype = None
    return lib


def call(fn, source, sizes, out):
    source = np.ascontiguousarray(source, dtype=np.float32)
    fn(source.ctypes.data, *sizes, out.ctypes.data, out.size)
    return out


CASES = [((2, 5, 5, 3), 3, 3, 1, 1), ((3, 9, 8, 2), 3, 2, 2, 2), ((1, 28, 28, 1), 5, 5, 1, 0),
         ((2, 7, 7, 16), 3, 3, 1, 2), ((2, 10, 7, 4), 1, 3, 3, 0)]


@pytest.mark.parametrize("shape, fh, fw, stride, pad", CASES)
def test_the_im2col_kernel_source_gives_the_columns_of_im2col_array(compiled, rng, shape, fh, fw, stride, pad):
    n, h, w, c = shape
    oh, ow = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    img = rng.standard_normal(shape).astype(np.float32)
    col = np.full((n * oh * ow, fh * fw * c), np.nan, dtype=np.float32)
    call(compiled.im2col, img, (h, w, c, oh, ow, fh, fw, stride, pad), col)
    np.testing.assert_array_equal(col, im2col_array(img, fh, fw, stride, pad))


@pytest.mark.parametrize("shape, fh, fw, stride, pad", CASES)
def test_the_col2im_kernel_source_folds_columns_as_col2im_array_does(compiled, rng, shape, fh, fw, stride, pad):
    n, h, w, c = shape
    oh, ow = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    col = rng.standard_normal((n * oh * ow, fh * fw * c)).astype(np.float32)
    img = np.full(shape, np.nan, dtype=np.float32)
    call(compiled.col2im, col, (h, w, c, oh, ow, fh, fw, stride, pad), img)
    np.testing.assert_allclose(img, col2im_array(col, shape, fh, fw, stride, pad), rtol=1e-6, atol=1e-6)
