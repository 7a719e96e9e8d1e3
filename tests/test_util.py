"""im2col, col2im and the output-size rule."""

import numpy as np
import pytest

import xpnet
from xpnet import to_device, to_numpy
from xpnet.util import col2im, col2im_array, conv_output_size, im2col, im2col_array, shuffle_dataset, smooth_curve


@pytest.mark.parametrize(
    "size, filt, stride, pad, expected",
    [
        ((4, 4), 3, 1, 1, (4, 4)),
        ((7, 7), 3, 2, 0, (3, 3)),
        ((28, 31), 5, 3, 2, (10, 11)),
    ],
)
def test_output_size_worked_examples(size, filt, stride, pad, expected):
    assert tuple(conv_output_size(s, filt, stride, pad) for s in size) == expected


def test_output_size_floors_an_inexact_division():
    # (8 + 0 - 3) / 2 + 1 = 3.5: the last row of the input is covered by no window.
    assert conv_output_size(8, 3, stride=2) == 3


def test_output_size_below_one_shows_the_formula():
    with pytest.raises(ValueError, match=r"\(3 \+ 2\*0 - 5\) // 1 \+ 1 = -1"):
        conv_output_size(3, 5)


@pytest.mark.parametrize("kwargs, message", [({"stride": 0}, "stride must be >= 1"), ({"pad": -1}, "pad must be >= 0")])
def test_output_size_rejects_bad_stride_and_pad(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv_output_size(7, 3, **kwargs)


@pytest.mark.parametrize("n, expected", [(1, (9, 75)), (10, (90, 75))])
def test_im2col_shapes_from_the_book(xp, device, rng, n, expected):
    x = to_device(rng.random((n, 3, 7, 7), dtype=np.float32), device)
    col = im2col(x, 5, 5, stride=1, pad=0)
    assert col.shape == expected
    assert col.dtype == np.float32
    assert type(col) is xp.ndarray


def test_im2col_rows_are_windows_in_c_fy_fx_order(xp):
    x = xp.arange(2 * 2 * 3 * 3, dtype=xp.float32).reshape(2, 2, 3, 3)
    col = to_numpy(im2col(x, 2, 2))
    host = to_numpy(x)
    # Row 0: image 0, window at (0, 0); row 7: image 1, window at (1, 1).
    np.testing.assert_array_equal(col[0], host[0, :, 0:2, 0:2].reshape(-1))
    np.testing.assert_array_equal(col[7], host[1, :, 1:3, 1:3].reshape(-1))


@pytest.mark.parametrize(
    "shape, fh, fw, stride, pad",
    [((1, 1, 4, 4), 3, 3, 1, 0), ((2, 3, 7, 6), 3, 2, 2, 1), ((3, 2, 9, 8), 4, 3, 3, 2), ((2, 1, 5, 5), 1, 1, 1, 0)],
)
def test_im2col_and_col2im_are_adjoint(device, rng, shape, fh, fw, stride, pad):
    x = to_device(rng.standard_normal(shape), device)
    col_shape = im2col(x, fh, fw, stride, pad).shape
    c = to_device(rng.standard_normal(col_shape), device)
    lhs = float((im2col(x, fh, fw, stride, pad) * c).sum())
    rhs = float((x * col2im(c, shape, fh, fw, stride, pad)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_col2im_keeps_float32(xp):
    col = xp.ones((4, 9), dtype=xp.float32)
    assert col2im(col, (1, 1, 4, 4), 3, 3).dtype == np.float32


def test_im2col_accepts_non_contiguous_input(xp, device, rng):
    base = to_device(rng.random((2, 7, 7, 3), dtype=np.float32), device)
    x = base.transpose(0, 3, 1, 2)
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(to_numpy(im2col(x, 3, 3)), to_numpy(im2col(xp.ascontiguousarray(x), 3, 3)))


def test_im2col_rejects_wrong_rank(xp):
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\), got shape \(3, 7, 7\)"):
        im2col(xp.zeros((3, 7, 7), dtype=xp.float32), 3, 3)


def test_col2im_rejects_a_col_of_the_wrong_shape(xp):
    with pytest.raises(ValueError, match=r"col has shape \(4, 8\).*needs \(4, 9\)"):
        col2im(xp.zeros((4, 8), dtype=xp.float32), (1, 1, 4, 4), 3, 3)


def test_window_larger_than_padded_input_is_an_error(xp):
    with pytest.raises(ValueError, match="larger than the padded input"):
        im2col(xp.zeros((1, 1, 3, 3), dtype=xp.float32), 5, 5, pad=0)


def windows_by_loops(img, fh, fw, stride, pad_h, pad_w):
    """The columns of a channels-last image from the definition: row (n, oy, ox), column (fy, fx, c)."""
    n, h, w, c = img.shape
    padded = np.pad(img, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    oh, ow = conv_output_size(h, fh, stride, pad_h), conv_output_size(w, fw, stride, pad_w)
    col = np.empty((n, oh, ow, fh, fw, c), dtype=img.dtype)
    for oy in range(oh):
        for ox in range(ow):
            col[:, oy, ox] = padded[:, oy * stride:oy * stride + fh, ox * stride:ox * stride + fw, :]
    return col.reshape(n * oh * ow, fh * fw * c)


IM2COL_CASES = [((2, 5, 5, 3), 3, 3, 1, 1), ((3, 9, 8, 2), 3, 2, 2, 2), ((2, 7, 6, 4), 4, 3, 3, (1, 2)),
                ((1, 28, 28, 1), 5, 5, 1, 0), ((2, 6, 6, 16), 3, 3, 1, (2, 0))]


@pytest.mark.parametrize("shape, fh, fw, stride, pad", IM2COL_CASES)
def test_im2col_array_rows_are_windows_with_columns_in_fy_fx_c_order(device, rng, shape, fh, fw, stride, pad):
    host = rng.standard_normal(shape).astype(np.float32)
    pad_h, pad_w = pad if isinstance(pad, tuple) else (pad, pad)
    col = im2col_array(to_device(host, device), fh, fw, stride, pad)
    assert col.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(col), windows_by_loops(host, fh, fw, stride, pad_h, pad_w))


@pytest.mark.parametrize("shape, fh, fw, stride, pad", IM2COL_CASES)
def test_im2col_array_and_col2im_array_are_adjoint(device, rng, shape, fh, fw, stride, pad):
    x = to_device(rng.standard_normal(shape), device)
    col = im2col_array(x, fh, fw, stride, pad)
    c = to_device(rng.standard_normal(col.shape), device)
    back = col2im_array(c, shape, fh, fw, stride, pad)
    assert back.shape == shape
    assert float((col * c).sum()) == pytest.approx(float((x * back).sum()), rel=1e-12)


def test_im2col_array_and_col2im_array_write_into_a_given_array(xp, device, rng):
    x = to_device(rng.standard_normal((2, 5, 5, 3)).astype(np.float32), device)
    out = xp.full(2 * 5 * 5 * 9 * 3, 7.0, dtype=xp.float32)
    col = im2col_array(x, 3, 3, 1, 1, out=out)
    assert xpnet.backend.get_array_module(col).shares_memory(col, out)
    np.testing.assert_array_equal(to_numpy(col), to_numpy(im2col_array(x, 3, 3, 1, 1)))
    img = xp.full((2, 5, 5, 3), 7.0, dtype=xp.float32)
    assert col2im_array(col, img.shape, 3, 3, 1, 1, out=img) is img
    np.testing.assert_array_equal(to_numpy(img), to_numpy(col2im_array(col, (2, 5, 5, 3), 3, 3, 1, 1)))


def test_im2col_array_reads_channels_last_views_of_any_memory_order(xp, device, rng):
    base = to_device(rng.standard_normal((2, 3, 6, 5)).astype(np.float32), device)  # (N, C, H, W) memory
    view = base.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(to_numpy(im2col_array(view, 3, 3, 1, 1)),
                                  windows_by_loops(to_numpy(view), 3, 3, 1, 1, 1))


@pytest.mark.parametrize("fw, pad, first, count", [(3, 1, 0, None), (3, (2, 1), 1, 4), (5, 0, 2, 2)])
def test_window_rows_are_the_rows_of_every_window(device, rng, fw, pad, first, count):
    from xpnet.util import window_rows

    host = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    pad_h, pad_w = pad if isinstance(pad, tuple) else (pad, pad)
    padded = np.pad(host, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    rows = to_numpy(window_rows(to_device(host, device), fw, pad, first, count))
    count = padded.shape[1] - first if count is None else count
    out_w = padded.shape[2] - fw + 1
    assert rows.shape == (2, count, out_w, fw * 3)
    for y in range(count):
        for ox in range(out_w):
            np.testing.assert_array_equal(rows[:, y, ox], padded[:, first + y, ox:ox + fw].reshape(2, -1))


@pytest.mark.parametrize("shape, fh, fw, stride, pad", IM2COL_CASES)
@pytest.mark.parametrize("rows", [None, slice(1, 3)])
def test_im2col_by_offsets_gives_the_columns_of_im2col_array(device, rng, shape, fh, fw, stride, pad, rows):
    from xpnet.util import im2col_by_offsets

    x = to_device(rng.standard_normal(shape).astype(np.float32), device)
    np.testing.assert_array_equal(to_numpy(im2col_by_offsets(x, fh, fw, stride, pad, rows=rows)),
                                  to_numpy(im2col_array(x, fh, fw, stride, pad, rows=rows)))


def test_col2im_array_rejects_a_col_of_the_wrong_shape(xp):
    with pytest.raises(ValueError, match=r"col has shape \(16, 8\).*needs \(16, 9\)"):
        col2im_array(xp.zeros((16, 8), dtype=xp.float32), (1, 4, 4, 1), 3, 3, 1, 1)


def test_the_books_im2col_is_im2col_array_with_the_books_column_order(device, rng):
    host = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    ours = windows_by_loops(host.transpose(0, 2, 3, 1), 3, 2, 2, 1, 1)  # (fy, fx, c)
    books = ours.reshape(-1, 3 * 2, 3).transpose(0, 2, 1).reshape(ours.shape[0], -1)  # (c, fy, fx)
    np.testing.assert_array_equal(to_numpy(im2col(to_device(host, device), 3, 2, 2, 1)), books)


@pytest.mark.parametrize("shape, fh, fw, stride", [((2, 6, 5, 3), 3, 2, 1), ((1, 7, 7, 2), 2, 2, 2), ((2, 9, 8, 4), 3, 3, 2)])
def test_channels_last_windows_and_their_adjoint(device, rng, shape, fh, fw, stride):
    from xpnet.util import add_windows_channels_last, conv_output_size, windows_channels_last

    img = to_device(rng.standard_normal(shape), device)
    oh, ow = conv_output_size(shape[1], fh, stride), conv_output_size(shape[2], fw, stride)
    windows = windows_channels_last(img, fh, fw, stride, oh, ow)
    host = to_numpy(img)
    np.testing.assert_array_equal(to_numpy(windows)[1 % shape[0], oh - 1, 0], host[1 % shape[0], (oh - 1) * stride:(oh - 1) * stride + fh, 0:fw])
    cols = to_device(rng.standard_normal(windows.shape), device)
    back = add_windows_channels_last(to_device(np.zeros(shape), device), cols, stride)
    assert float((windows * cols).sum()) == pytest.approx(float((img * back).sum()), rel=1e-12)


@pytest.mark.parametrize("pad_h, pad_w, fill", [(1, 1, 0.0), (2, 0, -np.inf), (0, 3, 0.0)])
def test_pad_channels_last_into_a_given_buffer_matches_a_new_one(xp, device, rng, pad_h, pad_w, fill):
    from xpnet.util import pad_channels_last

    x = to_device(rng.standard_normal((2, 4, 5, 3)).astype(np.float32), device)
    out = xp.full((2, 4 + 2 * pad_h, 5 + 2 * pad_w, 3), 7.0, dtype=np.float32)  # stale values must all go
    padded = pad_channels_last(x, pad_h, pad_w, fill=fill, out=out)
    assert padded is out
    expected = np.pad(to_numpy(x), ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)), constant_values=fill)
    np.testing.assert_array_equal(to_numpy(padded), expected)
    np.testing.assert_array_equal(to_numpy(pad_channels_last(x, pad_h, pad_w, fill=fill)), expected)


# --- the book's helpers for chapter 6 ---------------------------------------------------------


def kaiser_average(values):
    """Each value replaced by its 11 neighbours weighted by a Kaiser window (beta 2); at the start the series
    is mirrored about its first value, at the end about a point after its last value (the book's ends)."""
    n, w = len(values), np.kaiser(11, 2)
    out = np.empty(n)
    for i in range(n):
        total = 0.0
        for j in range(11):
            k = i - 5 + j
            k = -k if k < 0 else 2 * n - 1 - k if k >= n else k
            total += w[j] * values[k]
        out[i] = total / w.sum()
    return out


def test_smooth_curve_is_a_kaiser_weighted_moving_average(rng):
    losses = list(rng.random(40))
    smoothed = smooth_curve(losses)
    assert smoothed.shape == (40,) and smoothed.dtype == np.float64
    np.testing.assert_allclose(smoothed, kaiser_average(losses), rtol=1e-12)
    np.testing.assert_allclose(smooth_curve(np.full(12, 2.5)), 2.5, rtol=1e-12)


def test_smooth_curve_takes_losses_as_device_scalars(device, rng):
    losses = rng.random(15)
    on_device = [to_device(np.array(v, dtype=np.float32), device) for v in losses]
    np.testing.assert_allclose(smooth_curve(on_device), kaiser_average(losses.astype(np.float32)), rtol=1e-6)


def test_smooth_curve_needs_six_values():
    with pytest.raises(ValueError, match=r"smooth_curve: needs a 1-D sequence of at least 6 values, got shape \(5,\)"):
        smooth_curve([1.0] * 5)


def test_shuffle_dataset_keeps_examples_and_labels_together(device, rng):
    x = to_device(np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2), device)
    t = to_device(np.arange(10), device)
    xpnet.seed(3)
    xs, ts = shuffle_dataset(x, t)
    assert xpnet.backend.device_of(xs) == device and xs.shape == x.shape
    np.testing.assert_array_equal(to_numpy(xs)[:, 0, 0, 0], 4 * to_numpy(ts))
    assert sorted(to_numpy(ts)) == list(range(10)) and list(to_numpy(ts)) != list(range(10))
    xpnet.seed(3)
    np.testing.assert_array_equal(to_numpy(shuffle_dataset(x, t)[1]), to_numpy(ts))  # xpnet.seed makes it repeatable


def test_shuffle_dataset_refuses_different_lengths():
    with pytest.raises(ValueError, match="shuffle_dataset: 3 examples but 2 labels"):
        shuffle_dataset(np.zeros((3, 2)), np.zeros(2))
