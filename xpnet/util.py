"""im2col, col2im and the output-size rule shared by Convolution and Pooling, and the book's two helpers
for its chapter 6 scripts: ``smooth_curve`` and ``shuffle_dataset``.

xpnet has one im2col, :func:`im2col_array`, and its adjoint,
:func:`col2im_array`, which Convolution calls on both devices (the device
branch is inside: xpnet's CUDA kernels on a GPU, strided NumPy copies on
the CPU). Their images are channels-last, (N, H, W, C), and their columns
have one row per output pixel, ordered (n, oy, ox), and one column per
window element, ordered (fy, fx, c): a window is FH*FW runs of C
contiguous values, which one copy gathers several times faster than the
book's order.

:func:`im2col` and :func:`col2im` are the book's functions, with the book's
(N, C, H, W) images and (c, fy, fx) column order, for code written against
the book (its ``col_W = W.reshape(FN, -1).T`` relies on that order). They
call the same entry points and reorder.

Two other ways to the same products serve Convolution's CPU fast paths:
:func:`window_rows` (im2col along x only, for one product per filter row)
and :func:`im2col_by_offsets` (the columns of images of few channels, built
one window offset at a time).
"""

from __future__ import annotations

from . import hostmem, kernels, threads
from .backend import get_array_module, host_rng, to_numpy

__all__ = ["conv_output_size", "im2col", "col2im", "im2col_array", "col2im_array", "smooth_curve", "shuffle_dataset"]


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """Output length of a convolution or pooling along one axis.

    ``floor((input_size + 2*pad - filter_size) / stride) + 1``, the
    convention of the major frameworks: when the division is not exact, the
    last ``(input_size + 2*pad - filter_size) % stride`` rows (or columns) of
    the padded input are not covered by any window and do not contribute.

    >>> conv_output_size(28, 5, stride=3, pad=2)
    10
    """
    input_size = _check_int("input_size", input_size, 1)
    filter_size = _check_int("filter_size", filter_size, 1)
    stride = _check_int("stride", stride, 1)
    pad = _check_int("pad", pad, 0)
    out = (input_size + 2 * pad - filter_size) // stride + 1
    if out < 1:
        raise ValueError(
            f"output size (input_size + 2*pad - filter_size) // stride + 1 = "
            f"({input_size} + 2*{pad} - {filter_size}) // {stride} + 1 = {out} is below 1: "
            f"the {filter_size}-wide window is larger than the padded input ({input_size + 2 * pad})"
        )
    return out


def _check_4d(name, x):
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def _pads(pad):
    """``pad`` as (rows, columns): an int pads both alike."""
    if isinstance(pad, tuple):
        return _check_int("pad", pad[0], 0), _check_int("pad", pad[1], 0)
    pad = _check_int("pad", pad, 0)
    return pad, pad


def _check_columns(what, col, image_shape, n, h, w, c, filter_h, filter_w, stride, pad):
    """(OH, OW), after checking that ``col`` has the (N*OH*OW, FH*FW*C) shape of the columns of the image."""
    pad_h, pad_w = _pads(pad)
    out_h = conv_output_size(h, filter_h, stride, pad_h)
    out_w = conv_output_size(w, filter_w, stride, pad_w)
    expected = (n * out_h * out_w, filter_h * filter_w * c)
    if tuple(col.shape) != expected:
        raise ValueError(
            f"{what}: col has shape {tuple(col.shape)}, but an image {tuple(image_shape)} with a "
            f"{filter_h}x{filter_w} window, stride {stride}, pad {pad} needs {expected}"
        )
    return out_h, out_w


def im2col_array(img, filter_h, filter_w, stride=1, pad=0, out=None, rows=None):
    """Unfold every filter window of a channels-last batch into one row: xpnet's im2col, on either device.

    Parameters
    ----------
    img : array (N, H, W, C), NumPy or CuPy, any memory order
    filter_h, filter_w : window height and width
    stride : step between windows
    pad : zero padding on every side, or (rows, columns)
    out : optional array of N*OH*OW*FH*FW*C elements of img's dtype and
        device to write the columns into
    rows : optional slice of the output rows to unfold (default, or ``slice(None)``: all OH)

    Returns
    -------
    col : array (N*OH*OW, FH*FW*C), columns in (fy, fx, c) order, with OH,
        OW from :func:`conv_output_size` (OH: the rows asked for).

    On a GPU, one kernel reads the unpadded image (:func:`xpnet.kernels.im2col`);
    elsewhere, and with the kernels off, the windows of the padded image
    are a strided view copied once.
    """
    if img.ndim != 4:
        raise ValueError(f"im2col_array: img must be 4-D (N, H, W, C), got shape {tuple(img.shape)}")
    xp = get_array_module(img)
    n, h, w, c = img.shape
    pad_h, pad_w = _pads(pad)
    out_h = conv_output_size(h, filter_h, stride, pad_h)
    out_w = conv_output_size(w, filter_w, stride, pad_w)
    whole = rows is None or rows == slice(None)
    if kernels.active(xp) and pad_h == pad_w and whole:
        return kernels.im2col(xp.ascontiguousarray(img), filter_h, filter_w, stride, pad_h, out_h, out_w, out=out)
    if pad_h or pad_w:
        img = pad_channels_last(img, pad_h, pad_w)
    windows = windows_channels_last(img, filter_h, filter_w, stride, out_h, out_w)
    if not whole:
        windows = windows[:, rows]
    col = xp.empty(windows.shape, dtype=img.dtype) if out is None else out.reshape(windows.shape)
    col[...] = windows
    return col.reshape(-1, filter_h * filter_w * c)


def im2col_by_offsets(img, filter_h, filter_w, stride=1, pad=0, rows=None):
    """:func:`im2col_array`'s columns (N*OH*OW, FH*FW*C), (fy, fx, c) order, built one window offset and
    channel at a time: an F-ordered view of a (FH*FW*C, N*OH*OW) array whose row (fy, fx, c) is the strided
    view ``padded[:, fy::stride, fx::stride, c]`` copied once.

    For images of few channels (the first layer of a network), where
    im2col's runs of FW*C values are too short to copy fast: here each copy
    runs along a whole output row. A matrix product takes the view as it
    is (BLAS reads it transposed). ``rows``: a slice of the output rows.
    """
    xp = get_array_module(img)
    n, h, w, c = img.shape
    pad_h, pad_w = _pads(pad)
    out_h = conv_output_size(h, filter_h, stride, pad_h)
    out_w = conv_output_size(w, filter_w, stride, pad_w)
    padded = pad_channels_last(img, pad_h, pad_w) if pad_h or pad_w else img
    first, stop, _ = (rows or slice(None)).indices(out_h)
    count = max(stop - first, 0)
    columns = xp.empty((filter_h, filter_w, c, n, count, out_w), dtype=img.dtype)
    for fy in range(filter_h):
        top = fy + first * stride
        for fx in range(filter_w):
            xp.copyto(columns[fy, fx], padded[:, top:top + stride * (count - 1) + 1:stride,
                                              fx:fx + stride * (out_w - 1) + 1:stride, :].transpose(3, 0, 1, 2))
    return columns.reshape(filter_h * filter_w * c, n * count * out_w).T


def window_rows(img, filter_w, pad=0, first=0, count=None):
    """im2col along x only: for rows ``first .. first + count - 1`` of the padded channels-last ``img``
    (N, H, W, C) and every output column ox, the FW*C values (fx, c) of a window's row there.

    Returns a C-contiguous (N, count, OW, FW*C) array, ``count`` defaulting to
    the padded height, OW = W + 2*pad_w - FW + 1 (stride 1). The window of
    output (oy, ox) is rows oy .. oy + FH - 1 of it at column ox, so a
    convolution of stride 1 is FH products of (FW*C)-wide columns
    (``Convolution``'s fast path ``products_by_filter_row``): FW copies of
    the input instead of im2col's FH*FW.
    """
    xp = get_array_module(img)
    pad_h, pad_w = _pads(pad)
    padded = pad_channels_last(img, pad_h, pad_w) if pad_h or pad_w else img
    n, hp, wp, c = padded.shape
    count = hp - first if count is None else count
    out_w = conv_output_size(wp, filter_w)
    windows = windows_channels_last(padded[:, first:first + count], 1, filter_w, 1, count, out_w)  # one-row windows
    return xp.ascontiguousarray(windows).reshape(n, count, out_w, filter_w * c)


def col2im_array(col, img_shape, filter_h, filter_w, stride=1, pad=0, out=None):
    """The adjoint of :func:`im2col_array`: add every column entry back into its pixel.

    ``col`` (N*OH*OW, FH*FW*C) in (fy, fx, c) order; ``img_shape`` (N, H, W, C)
    of the image it was unfolded from. Returns that image (into ``out``
    where given), each pixel the sum of its entries, so that
    ``<im2col_array(x), c> == <x, col2im_array(c)>``. On a GPU, one kernel
    gathers each pixel's entries (:func:`xpnet.kernels.col2im`, no atomics);
    elsewhere, one strided add per filter offset, each touching distinct
    pixels.
    """
    xp = get_array_module(col)
    if len(img_shape) != 4:
        raise ValueError(f"col2im_array: img_shape must be (N, H, W, C), got {tuple(img_shape)}")
    n, h, w, c = (int(s) for s in img_shape)
    pad_h, pad_w = _pads(pad)
    out_h, out_w = _check_columns("col2im_array", col, (n, h, w, c), n, h, w, c, filter_h, filter_w, stride, pad)
    if kernels.active(xp) and pad_h == pad_w:
        return kernels.col2im(col, (n, h, w, c), filter_h, filter_w, stride, pad_h, out_h, out_w, out=out)
    padded = xp.zeros((n, h + 2 * pad_h, w + 2 * pad_w, c), dtype=col.dtype)
    add_windows_channels_last(padded, col.reshape(n, out_h, out_w, filter_h, filter_w, c), stride)
    img = padded[:, pad_h:pad_h + h, pad_w:pad_w + w]
    if out is None:
        return img
    out[...] = img
    return out


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The book's im2col: every filter window of a batch of images as one row, columns in (c, fy, fx) order.

    Parameters
    ----------
    input_data : array (N, C, H, W), NumPy or CuPy
    filter_h, filter_w : window height and width
    stride, pad : step between windows and zero padding on every side

    Returns
    -------
    col : array (N*OH*OW, C*FH*FW) on the device and of the dtype of the
        input, where OH, OW come from :func:`conv_output_size`, so that
        ``col @ W.reshape(FN, -1).T`` convolves with filters W (FN, C, FH, FW)
        as in the book. It costs FH*FW times the memory of the input (more
        with stride < window).

    Unlike the book, the windows are copied by :func:`im2col_array` (no
    Python loop over filter offsets), then reordered into the book's
    columns.
    """
    _check_4d("im2col input", input_data)
    c = input_data.shape[1]
    col = im2col_array(channels_last(input_data), filter_h, filter_w, stride, pad)
    rows = col.shape[0]
    return col.reshape(rows, filter_h * filter_w, c).transpose(0, 2, 1).reshape(rows, c * filter_h * filter_w)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The book's col2im, the adjoint of :func:`im2col`: add every column entry back into its pixel.

    Parameters
    ----------
    col : array (N*OH*OW, C*FH*FW), columns in the book's (c, fy, fx) order
    input_shape : (N, C, H, W) of the images that ``col`` was unfolded from

    Returns
    -------
    array (N, C, H, W) of ``col``'s dtype and device. Pixels covered by
    several windows receive the sum of their entries, so that
    ``<im2col(x), c> == <x, col2im(c)>``.
    """
    if len(input_shape) != 4:
        raise ValueError(f"col2im input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    n, c, h, w = (int(s) for s in input_shape)
    _check_columns("col2im", col, tuple(input_shape), n, h, w, c, filter_h, filter_w, stride, pad)
    ours = col.reshape(-1, c, filter_h * filter_w).transpose(0, 2, 1).reshape(col.shape[0], -1)
    img = col2im_array(get_array_module(col).ascontiguousarray(ours), (n, h, w, c), filter_h, filter_w, stride, pad)
    return img.transpose(0, 3, 1, 2)


# --- the book's helpers for its chapter 6 scripts ------------------------------------


def smooth_curve(x):
    """A loss curve smoothed for plotting, as the book's figures of chapter 6 show it.

    ``x``: a sequence of at least 6 numbers (Python floats, NumPy or CuPy
    scalars or 0-d arrays, or a 1-D array). Returns a float64 NumPy array of
    the same length: each value is the average of its 11 neighbours weighted
    by a Kaiser window (beta 2), with the ends mirrored as the book mirrors
    them (the first value is not repeated at the start; the last one is at
    the end).
    """
    values = to_numpy(x if hasattr(x, "shape") else [to_numpy(v) for v in x]).astype("float64")
    if values.ndim != 1 or len(values) < 6:
        raise ValueError(f"smooth_curve: needs a 1-D sequence of at least 6 values, got shape {values.shape}")
    xp = get_array_module(values)  # NumPy: the curve is for a plot
    window = xp.kaiser(11, 2)
    padded = xp.concatenate([values[5:0:-1], values, values[-1:-6:-1]])
    return xp.convolve(padded, window / window.sum(), mode="valid")


def shuffle_dataset(x, t):
    """``x`` and ``t`` reordered by one random permutation of their first axis: new arrays on their device.

    The permutation comes from xpnet's host generator (``xpnet.seed``), so a
    seed gives the same order on every device; the book draws it from
    ``np.random``.
    """
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"shuffle_dataset: {x.shape[0]} examples but {t.shape[0]} labels")
    order = host_rng().permutation(x.shape[0])
    return x[get_array_module(x).asarray(order)], t[get_array_module(t).asarray(order)]


# --- channels-last windows ----------------------------------------------------------
#
# Convolution and Pooling keep their activations in (N, H, W, C) memory order
# behind an (N, C, H, W) view, which the next layer reads without a copy.


def channels_last(x):
    """A view of ``x`` (N, C, H, W) as (N, H, W, C); free when x came from a channels-last layer."""
    return x.transpose(0, 2, 3, 1)


def pad_channels_last(x_nhwc, pad_h, pad_w=None, fill=0.0, out=None):
    """(N, H, W, C) padded by ``pad_h`` rows and ``pad_w`` (default ``pad_h``) columns on both
    sides with ``fill``, as a C-contiguous array: ``out`` (N, H + 2*pad_h, W + 2*pad_w, C) where
    given, else a new one."""
    xp = get_array_module(x_nhwc)
    pad_w = pad_h if pad_w is None else pad_w
    if not pad_h and not pad_w and out is None:
        return xp.ascontiguousarray(x_nhwc)
    n, h, w, c = x_nhwc.shape
    if out is None:
        out = xp.empty((n, h + 2 * pad_h, w + 2 * pad_w, c), dtype=x_nhwc.dtype)
    out[:, :pad_h], out[:, h + pad_h:] = fill, fill
    out[:, :, :pad_w], out[:, :, w + pad_w:] = fill, fill
    out[:, pad_h:h + pad_h, pad_w:w + pad_w] = x_nhwc
    return out


def windows_channels_last(img, filter_h, filter_w, stride, out_h, out_w):
    """A view (N, OH, OW, FH, FW, C) of every window of a padded channels-last ``img`` (N, Hp, Wp, C).

    NumPy's view is writable: with non-overlapping windows (stride >= the
    window) assigning to it writes each pixel at most once.
    """
    xp = get_array_module(img)
    sn, sh, sw, sc = img.strides
    n, c = img.shape[0], img.shape[3]
    return xp.lib.stride_tricks.as_strided(
        img,
        shape=(n, out_h, out_w, filter_h, filter_w, c),
        strides=(sn, sh * stride, sw * stride, sh, sw, sc),
    )


def window_offsets(img, filter_h, filter_w, stride, out_h, out_w):
    """For each filter offset (fy, fx), in row-major order, the (N, OH, OW, C) view of the pixels of
    channels-last ``img`` (N, Hp, Wp, C) that sit at that offset in their window. Writable views."""
    for y in range(filter_h):
        for x in range(filter_w):
            yield img[:, y:y + stride * out_h:stride, x:x + stride * out_w:stride, :]


def add_windows_channels_last(img, cols, stride):
    """``img`` (N, Hp, Wp, C) += each window's values from ``cols`` (N, OH, OW, FH, FW, C), in place.

    The adjoint of :func:`windows_channels_last`: one strided add per filter
    offset, each touching distinct pixels, so it is exact on every device.
    """
    n, out_h, out_w, filter_h, filter_w, c = cols.shape
    for k, pixels in enumerate(window_offsets(img, filter_h, filter_w, stride, out_h, out_w)):
        pixels += cols[:, :, :, k // filter_w, k % filter_w, :]
    return img


# --- slices of a batch, run on every core ------------------------------------------------------------


SERIAL_BYTES = 2**22  # memory-bound work of less than this in all runs on one thread (see batch_parts)
SERIAL_FLOPS = 2**24  # and products of less than this per thread
ROWS_MIN_BYTES = 2**19  # the least work of a run of rows of one image (see row_parts)
# A slice of elementwise work. Each slice costs a few NumPy calls, and each call a turn at the interpreter lock,
# which threads slicing a batch at once wait for; 4 MiB slices took 3 to 8% less time than 1 MiB ones in the
# book's convolutional networks at two threads, and as long at one (a 2-core VM, whose cores have 1 MiB of L2).
PART_BYTES = 2**22


class Parts(list):
    """Items of work (a list) and ``workers``, the number of threads they are worth: :func:`map_parts` runs
    them on no more (items of little work, one thread after another)."""

    def __init__(self, items, workers):
        super().__init__(items)
        self.workers = workers


def batch_parts(xp, n, bytes_per_example, part_bytes=None, device_part_bytes=None, flops_per_example=None):
    """Slices of a batch of ``n`` examples for work that needs ``bytes_per_example`` of temporaries each
    (and, for products, ``flops_per_example`` floating-point operations).

    On the CPU, each slice needs at most ``part_bytes`` (default
    ``PART_BYTES``), and the slices
    come in a multiple of the number of threads the work is worth: at most
    one per ``SERIAL_BYTES / 2`` of it (or per ``SERIAL_FLOPS`` of products),
    and no more than there are threads. Waking a thread and taking turns at
    the interpreter lock cost a hundred microseconds or so on a virtual
    machine: a ReLU over 1 MiB took 0.14 ms on one thread and 0.20 ms on
    two. The slicing depends on the shapes and the thread count only, never
    on timing, so a sum over slices adds in the same order every time. On a
    GPU the batch is one slice, or slices of at most ``device_part_bytes``
    where given (to bound the memory).
    """
    total = n * max(int(bytes_per_example), 1)
    if xp.__name__ != "numpy":
        return Parts(threads.split(n, -(-total // device_part_bytes) if device_part_bytes else 1), 1)
    if flops_per_example is None:
        worth = total // max(SERIAL_BYTES // 2, 1)
    else:
        worth = n * int(flops_per_example) // max(SERIAL_FLOPS, 1)
    if worth <= 1 and total <= (part_bytes or PART_BYTES):
        return Parts([slice(0, n)], 1)  # the common case of small batches, quickly
    workers = max(1, min(threads.get_num_threads(), worth))
    return Parts(threads.split(n, workers * -(-total // ((part_bytes or PART_BYTES) * workers))), workers)


def row_parts(xp, n, rows, bytes_per_row, part_bytes=None, device_part_bytes=None):
    """Items ``(batch slice, k, cuts)`` of work over ``n`` images of ``rows`` output rows each: the k-th of
    ``cuts`` near-equal runs of rows (see :func:`rows_of`) of the images in the slice.

    Over the batch as :func:`batch_parts` cuts it (``cuts`` = 1: whole
    images), except on the CPU where the batch has fewer images than there
    are threads, or one image needs more than ``part_bytes``: then each
    image's rows are cut too, so that every thread has work and every item
    fits. Like :func:`batch_parts`, it depends on the shapes and the thread
    count only.
    """
    per_image = rows * max(int(bytes_per_row), 1)
    parts = batch_parts(xp, n, per_image, part_bytes, device_part_bytes)
    limit = part_bytes or PART_BYTES
    count = threads.get_num_threads()
    if xp.__name__ != "numpy" or (n >= count and per_image <= limit):
        return whole_images(parts)
    worth = per_image // ROWS_MIN_BYTES  # a thread woken for less work costs more than it saves
    cuts = min(rows, max(min(-(-count // n), worth), -(-per_image // limit)))
    if cuts <= 1:
        return whole_images(parts)
    return Parts([(slice(i, i + 1), k, cuts) for i in range(n) for k in range(cuts)], min(count, max(worth, 1) * n))


def whole_images(parts):
    """:func:`row_parts`' items for ``parts``, slices of whole images (each the one run of its rows), with the
    threads they are worth where ``parts`` says (a :class:`Parts`)."""
    return Parts([(part, 0, 1) for part in parts], getattr(parts, "workers", None))


def rows_of(size, k, cuts):
    """The k-th of ``cuts`` near-equal runs of ``range(size)``: a slice (all of it when ``cuts`` is 1, empty
    when ``size`` has fewer than ``k + 1`` rows)."""
    if cuts == 1:
        return slice(None)
    runs = threads.split(size, cuts)
    return runs[k] if k < len(runs) else slice(size, size)


def map_parts(xp, fn, parts):
    """``[fn(part) for part in parts]``; on the CPU by xpnet's threads (:func:`xpnet.threads.parallel_map`), as
    many as ``parts.workers`` where ``parts`` is a :class:`Parts`.

    ``fn`` writes only its own slice of any output and returns what the
    caller combines, in order.
    """
    if xp.__name__ == "numpy":
        hostmem.keep_freed_memory()
        return threads.parallel_map(fn, parts, getattr(parts, "workers", None))
    return [fn(part) for part in parts]


def sum_in_order(values):
    """The sum of partial results in their order (a fixed order keeps a run at a fixed thread count exact)."""
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def elementwise(fn, out, *arrays):
    """``fn(out[part], *(a[part] for a in arrays))`` over slices of the first axis; returns ``out``.

    For elementwise layers: on the CPU the slices (of at most
    ``PART_BYTES`` of operands) run in parallel. ``out`` and ``arrays`` share their first axis (the batch).
    Where they also share their shape and are all C-contiguous, and ``fn``
    is purely elementwise (no operand broadcast along the cut), pass it to
    :func:`map_elements` instead, which cuts a batch of any size evenly.
    """
    xp = get_array_module(out)
    if out.ndim == 0 or xp.__name__ != "numpy":
        fn(out, *arrays)
        return out
    per_example = sum(a[:1].nbytes for a in (out, *arrays))
    parts = batch_parts(xp, out.shape[0], per_example)
    if len(parts) == 1:  # no thread to wake, and no BLAS to hold: a ufunc calls none
        fn(out, *arrays)
        return out

    def part(p):
        fn(out[p], *(a[p] for a in arrays))

    map_parts(xp, part, parts)
    return out


def map_elements(fn, out, *arrays):
    """``fn(out, *arrays)`` for a purely elementwise ``fn``, over runs of the flat elements; returns ``out``.

    Where ``out`` and ``arrays`` have one shape and are all C-contiguous,
    their flat views are cut into runs of at most ``PART_BYTES`` (a
    multiple of the thread count, in parallel on the CPU): a batch of one
    image uses every core too. Otherwise it is :func:`elementwise`. Any
    cut gives the same result, bit for bit: no element depends on another.
    """
    xp = get_array_module(out)
    flat = out.ndim > 0 and all(a.shape == out.shape and a.flags.c_contiguous for a in (out, *arrays))
    if not flat or xp.__name__ != "numpy":
        return elementwise(fn, out, *arrays)
    parts = batch_parts(xp, out.size, sum(a.itemsize for a in (out, *arrays)))
    if len(parts) == 1:  # no thread to wake, and no BLAS to hold: a ufunc calls none
        fn(out, *arrays)
        return out
    views = [a.reshape(-1) for a in (out, *arrays)]

    def part(p):
        fn(*(v[p] for v in views))

    map_parts(xp, part, parts)
    return out
