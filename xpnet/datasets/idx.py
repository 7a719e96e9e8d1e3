"""The IDX format of MNIST and Fashion-MNIST: read and write, gzipped or not.

An IDX file is two zero bytes, a type code, the number of dimensions, one
big-endian 32-bit size per dimension, then the values, big-endian, in C
order.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib

import numpy as np

from .errors import DatasetError

__all__ = ["read_idx", "write_idx", "idx_content", "content_sha256"]

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
_CODES = {np.dtype(t): code for code, t in _TYPES.items()}


def idx_content(source):
    """``(name, bytes)``: the IDX bytes of a path or binary file object, decompressed when it is gzipped.

    Gzip is detected by its magic bytes, whatever the file is called; a
    damaged or truncated gzip stream raises :class:`DatasetError`.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        with open(name, "rb") as f:
            raw = f.read()
    else:
        name = getattr(source, "name", "<stream>")
        raw = source.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile (a bad CRC), a cut stream, bad deflate data
            raise DatasetError(f"{name}: the gzip stream is damaged or truncated ({exc})") from None
    return name, raw


def _header(dtype, shape):
    code = _CODES.get(np.dtype(dtype).newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX stores uint8, int8, int16, int32, float32 or float64, not {np.dtype(dtype)}")
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, code, len(shape), *shape)


def content_sha256(array) -> str:
    """SHA-256 of the IDX bytes that ``array`` is written as (uncompressed): the checksum of the decoded file."""
    array = np.asarray(array)
    digest = hashlib.sha256(_header(array.dtype, array.shape))
    digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).data)
    return digest.hexdigest()


def read_idx(source):
    """Read an IDX file (a path or a binary file object; gzip is detected) into a NumPy array.

    Returns an array in native byte order of the stored type (uint8 for
    MNIST images (N, 28, 28) and labels (N,)). A bad header, a damaged
    gzip stream or a size that disagrees with the header raises
    :class:`DatasetError` naming the file and the numbers.
    """
    name, raw = idx_content(source)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DatasetError(f"{name}: not an IDX file (the header is {raw[:4]!r}, expected 0x00 0x00, a type code, "
                           f"and the number of dimensions)")
    dtype, ndim = np.dtype(_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: truncated header ({len(raw)} bytes, {header} needed for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(shape) * dtype.itemsize  # Python integers: sizes from a damaged header never wrap around
    if len(raw) - header != expected:
        raise DatasetError(f"{name}: {len(raw) - header} bytes of data, but the header's shape {shape} of "
                           f"{dtype.name} needs {expected}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype.newbyteorder(">"), offset=header).reshape(shape).astype(dtype)


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzipped if ``path`` ends with .gz); the inverse of :func:`read_idx`."""
    array = np.asarray(array)
    body = _header(array.dtype, array.shape) + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(body)
