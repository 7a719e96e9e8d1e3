"""The book's layers: worked examples, references, dtypes, the book's defects fixed, and errors."""

import re

import numpy as np
import pytest

import xpnet
from xpnet import DeviceError, to_device, to_numpy
from xpnet.layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss

from reference import conv2d, distinct_values, pool2d


def f32(rng, shape, device):
    return to_device(rng.standard_normal(shape).astype(np.float32), device)


# --- worked examples and references ---------------------------------------------


def test_the_worked_convolution_example(device):
    x = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], np.float32).reshape(1, 1, 4, 4)
    W = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], np.float32).reshape(1, 1, 3, 3)
    conv = Convolution(to_device(W, device), to_device(np.zeros(1, np.float32), device))
    out = conv.forward(to_device(x, device))
    np.testing.assert_array_equal(to_numpy(out)[0, 0], [[15, 16], [6, 15]])


CONV_CASES = [
    # (N, C, H, W), (FN, FH, FW), stride, pad
    ((1, 1, 5, 5), (1, 3, 3), 1, 0),
    ((2, 3, 7, 6), (4, 3, 2), 1, 1),
    ((3, 2, 9, 8), (5, 2, 3), 2, 2),
    ((2, 4, 10, 7), (3, 4, 1), 3, 0),
    ((4, 1, 8, 8), (2, 5, 5), 3, 2),
]


@pytest.mark.parametrize("shape, filt, stride, pad", CONV_CASES)
def test_convolution_forward_matches_the_plain_loop(device, rng, shape, filt, stride, pad):
    W = rng.standard_normal((filt[0], shape[1], filt[1], filt[2])).astype(np.float32)
    b = rng.standard_normal(filt[0]).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    out = Convolution(to_device(W, device), to_device(b, device), stride, pad).forward(to_device(x, device))
    np.testing.assert_allclose(to_numpy(out), conv2d(x, W, b, stride, pad), rtol=1e-4, atol=1e-5)


POOL_CASES = [
    ((1, 1, 4, 4), (2, 2), 2, 0),
    ((2, 3, 7, 6), (3, 2), 1, 1),
    ((3, 2, 9, 8), (3, 3), 2, 2),
    ((2, 4, 10, 7), (2, 3), 3, 1),
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape, window, stride, pad", POOL_CASES)
def test_pooling_forward_matches_the_plain_loop(device, rng, shape, window, stride, pad, mode):
    x = distinct_values(rng, shape).astype(np.float32)
    out = Pooling(*window, stride=stride, pad=pad, mode=mode).forward(to_device(x, device))
    np.testing.assert_allclose(to_numpy(out), pool2d(x, *window, stride, pad, mode), rtol=1e-6, atol=1e-7)


def test_pooling_has_the_books_default_stride_of_two(device, rng):
    x = distinct_values(rng, (2, 3, 6, 6)).astype(np.float32)
    out = Pooling(2, 2).forward(to_device(x, device))
    np.testing.assert_array_equal(to_numpy(out), pool2d(x, 2, 2, 2, 0, "max"))


def test_max_pooling_backward_routes_each_gradient_to_its_maximum(device):
    x = np.array([[1, 5, 2, 0], [3, 4, 8, 1], [0, 2, 1, 1], [7, 0, 0, 9]], np.float32).reshape(1, 1, 4, 4)
    pool = Pooling(2, 2, stride=2)
    pool.forward(to_device(x, device))
    dx = to_numpy(pool.backward(to_device(np.array([10, 20, 30, 40], np.float32).reshape(1, 1, 2, 2), device)))
    expected = np.zeros((4, 4), np.float32)
    expected[0, 1], expected[1, 2], expected[3, 0], expected[3, 3] = 10, 20, 30, 40
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_softmax_with_loss_against_closed_form(device):
    x = np.array([[0.3, 2.9, 4.0], [1.0, 1.0, 1.0]], np.float32)
    t = np.array([2, 0])
    layer = SoftmaxWithLoss()
    loss = float(layer.forward(to_device(x, device), to_device(t, device)))
    y = np.exp(x.astype(np.float64)) / np.exp(x.astype(np.float64)).sum(1, keepdims=True)
    assert loss == pytest.approx(-(np.log(y[0, 2]) + np.log(y[1, 0])) / 2, rel=1e-6)
    dx = to_numpy(layer.backward())
    np.testing.assert_allclose(dx, (y - np.eye(3)[t]) / 2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("row_dtype", [np.float32, np.int64, np.bool_])
def test_softmax_with_loss_takes_one_hot_labels_too(device, rng, row_dtype):
    x = f32(rng, (5, 4), device)
    t = np.array([0, 3, 1, 1, 2])
    by_index, by_one_hot = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss = float(by_index.forward(x, to_device(t, device)))
    assert float(by_one_hot.forward(x, to_device(np.eye(4, dtype=row_dtype)[t], device))) == pytest.approx(loss)
    np.testing.assert_allclose(to_numpy(by_one_hot.backward()), to_numpy(by_index.backward()), rtol=1e-5, atol=1e-7)


def test_softmax_with_loss_is_finite_for_huge_scores(device):
    x = to_device(np.array([[1000.0, 0.0], [-1000.0, 1000.0]], np.float32), device)
    assert np.isfinite(float(SoftmaxWithLoss().forward(x, to_device(np.array([1, 0]), device))))


def test_affine_flattens_image_batches_and_restores_the_shape(device, rng):
    x = f32(rng, (2, 3, 4, 4), device)
    layer = Affine(f32(rng, (48, 5), device), f32(rng, (5,), device))
    out = layer.forward(x)
    np.testing.assert_allclose(to_numpy(out), to_numpy(x).reshape(2, 48) @ to_numpy(layer.W) + to_numpy(layer.b), rtol=1e-5)
    assert layer.backward(xpnet.get_array_module(x).ones_like(out)).shape == (2, 3, 4, 4)


def test_sigmoid_never_overflows(xp):
    out = to_numpy(Sigmoid().forward(xp.array([-1000.0, 0.0, 1000.0], dtype=xp.float32)))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


# --- the book's defects, fixed --------------------------------------------------------


def test_relu_backward_leaves_the_callers_gradient_alone(xp):
    relu = Relu()
    relu.forward(xp.array([-1.0, 2.0, -3.0], dtype=xp.float32))
    dout = xp.array([5.0, 6.0, 7.0], dtype=xp.float32)
    dx = relu.backward(dout)
    np.testing.assert_array_equal(to_numpy(dx), [0, 6, 0])
    np.testing.assert_array_equal(to_numpy(dout), [5, 6, 7])


def test_relu_forward_leaves_the_input_alone(xp):
    x = xp.array([-1.0, 2.0], dtype=xp.float32)
    Relu().forward(x)
    np.testing.assert_array_equal(to_numpy(x), [-1, 2])


def test_dropout_is_inverted_identity_at_test_time(xp):
    x = xp.ones((200, 500), dtype=xp.float32)
    drop = Dropout(0.3)
    np.testing.assert_array_equal(to_numpy(drop.forward(x, train_flg=False)), to_numpy(x))
    out = to_numpy(drop.forward(x, train_flg=True))
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.7, abs=0.01)
    assert out.mean() == pytest.approx(1.0, abs=0.02)  # the expectation matches test time


def test_dropout_masks_are_reproducible_with_a_seed(xp):
    x = xp.ones((10, 10), dtype=xp.float32)
    xpnet.seed(3)
    first = to_numpy(Dropout().forward(x))
    xpnet.seed(3)
    np.testing.assert_array_equal(to_numpy(Dropout().forward(x)), first)


def test_batchnorm_on_images_normalizes_per_channel(device, rng):
    x = rng.standard_normal((8, 3, 5, 5)).astype(np.float32) * np.array([1, 5, 10], np.float32).reshape(1, 3, 1, 1)
    bn = BatchNormalization(to_device(np.ones(3, np.float32), device), to_device(np.zeros(3, np.float32), device))
    out = to_numpy(bn.forward(to_device(x, device)))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    assert bn.running_mean.shape == (3,)


def test_batchnorm_uses_running_statistics_at_test_time(device, rng):
    bn = BatchNormalization(to_device(np.ones(4, np.float32), device), to_device(np.zeros(4, np.float32), device),
                            momentum=0.0)
    x = rng.standard_normal((50, 4)).astype(np.float32) * 3 + 2
    bn.forward(to_device(x, device), train_flg=True)
    np.testing.assert_allclose(to_numpy(bn.running_mean), x.mean(0), rtol=1e-5)
    out = to_numpy(bn.forward(to_device(x[:5], device), train_flg=False))
    np.testing.assert_allclose(out, (x[:5] - x.mean(0)) / np.sqrt(x.var(0) + bn.eps), rtol=1e-4, atol=1e-5)


def test_batchnorm_brings_float64_running_statistics_to_gammas_float32(device, rng):
    mean, var = rng.standard_normal(4), rng.random(4) + 0.5  # float64
    bn = BatchNormalization(to_device(np.ones(4, np.float32), device), to_device(np.zeros(4, np.float32), device),
                            running_mean=to_device(mean, device), running_var=to_device(var, device))
    assert bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32
    x = rng.standard_normal((5, 4)).astype(np.float32)
    out = bn.forward(to_device(x, device), train_flg=False)
    assert out.dtype == np.float32
    np.testing.assert_allclose(to_numpy(out), (x - mean) / np.sqrt(var + bn.eps), rtol=1e-5, atol=1e-6)
    assert bn.forward(to_device(x, device), train_flg=True).dtype == np.float32
    assert bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32


@pytest.mark.parametrize("given, default", [("running_mean", "running_var"), ("running_var", "running_mean")])
def test_batchnorm_takes_one_running_statistic_alone_and_defaults_the_other(device, rng, given, default):
    value = rng.random(3) + 0.5
    bn = BatchNormalization(to_device(np.ones(3, np.float32), device), to_device(np.zeros(3, np.float32), device),
                            **{given: to_device(value, device)})
    np.testing.assert_allclose(to_numpy(getattr(bn, given)), value, rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(getattr(bn, default)), np.zeros(3) if default == "running_mean" else np.ones(3))
    assert getattr(bn, default).dtype == np.float32
    x = rng.standard_normal((4, 3)).astype(np.float32)
    mean, var = (value, np.ones(3)) if given == "running_mean" else (np.zeros(3), value)
    out = to_numpy(bn.forward(to_device(x, device), train_flg=False))
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + bn.eps), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("filters, channels, stride, pad", [
    (4, 3, 1, 1),  # dx as a gather
    (4, 3, 1, 2),  # a gather whose output gradient needs no padding (pad = filter - 1)
    (8, 2, 1, 0),  # dx as a scatter (the layer widens the channels)
    (3, 3, 2, 1),  # stride 2: a scatter
])
@pytest.mark.parametrize("examples_per_chunk", [1, 3])  # one at a time; three, the last chunk partial
def test_convolution_in_chunks_of_the_batch_matches_one_chunk(device, rng, monkeypatch, filters, channels, stride,
                                                               pad, examples_per_chunk):
    W, b = f32(rng, (filters, channels, 3, 3), device), f32(rng, (filters,), device)
    x = f32(rng, (7, channels, 6, 5), device)
    from xpnet import kernels

    results = []
    for chunked in (False, True):
        conv = Convolution(W, b, stride=stride, pad=pad)
        step = examples_per_chunk if chunked else len(x)
        monkeypatch.setattr(conv, "_chunks", lambda n, _: [slice(i, min(i + step, n)) for i in range(0, n, step)])
        with kernels.disabled():  # the GPU kernels take the whole batch at once; the generic path chunks
            out = conv.forward(x)
            dx = conv.backward(out * 0.5 + 1)
        results.append([to_numpy(a) for a in (out, dx, conv.dW, conv.db)])
    for whole, in_chunks in zip(*results):
        np.testing.assert_allclose(in_chunks, whole, rtol=1e-5, atol=1e-5)


def test_max_pooling_keeps_nan_and_routes_the_gradient_to_the_first_nan(device):
    x = np.array([[1, 5, np.nan, 0], [3, np.nan, 8, np.nan], [0, 2, 1, 1], [7, 0, 0, 9]], np.float32).reshape(1, 1, 4, 4)
    pool = Pooling(2, 2, stride=2)
    out = to_numpy(pool.forward(to_device(x, device)))
    np.testing.assert_array_equal(out[0, 0], [[np.nan, np.nan], [7, 9]])  # as xp.maximum: divergence shows
    dx = to_numpy(pool.backward(to_device(np.array([10, 20, 30, 40], np.float32).reshape(1, 1, 2, 2), device)))
    expected = np.zeros((4, 4), np.float32)
    expected[1, 1], expected[0, 2], expected[3, 0], expected[3, 3] = 10, 20, 30, 40
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_max_pooling_padding_never_wins_over_negative_values(device):
    x = to_device(-np.ones((1, 1, 2, 2), np.float32), device)
    out = to_numpy(Pooling(2, 2, stride=2, pad=1).forward(x))
    np.testing.assert_array_equal(out, -np.ones((1, 1, 2, 2)))


# --- dtypes and memory layout ---------------------------------------------------------


def _layers_and_inputs(rng, device):
    p = lambda *shape: f32(rng, shape, device)  # noqa: E731
    return [
        (Relu(), p(4, 6), {}),
        (Sigmoid(), p(4, 6), {}),
        (Affine(p(6, 3), p(3)), p(4, 6), {}),
        (Dropout(0.5), p(4, 6), {"train_flg": True}),
        (BatchNormalization(p(6), p(6)), p(4, 6), {"train_flg": True}),
        (BatchNormalization(p(3), p(3)), p(4, 3, 5, 5), {"train_flg": True}),
        (Convolution(p(2, 3, 3, 3), p(2), stride=2, pad=1), p(4, 3, 5, 5), {}),
        (Pooling(2, 2, stride=2, pad=1), p(4, 3, 5, 5), {}),
        (Pooling(3, 3, stride=1, mode="avg"), p(4, 3, 5, 5), {}),
    ]


def test_float32_in_gives_float32_out_forward_and_backward(device, rng):
    for layer, x, kwargs in _layers_and_inputs(rng, device):
        out = layer.forward(x, **kwargs)
        assert out.dtype == np.float32, type(layer).__name__
        dx = layer.backward(xpnet.get_array_module(out).ones_like(out))
        assert dx.dtype == np.float32 and dx.shape == x.shape, type(layer).__name__
        for grad in ("dW", "db", "dgamma", "dbeta"):
            if getattr(layer, grad, None) is not None:
                assert getattr(layer, grad).dtype == np.float32, f"{type(layer).__name__}.{grad}"


def test_softmax_with_loss_keeps_float32(device, rng):
    layer = SoftmaxWithLoss()
    assert layer.forward(f32(rng, (3, 4), device), to_device(np.array([0, 1, 2]), device)).dtype == np.float32
    assert layer.backward().dtype == np.float32


def test_float64_input_to_float32_parameters_is_computed_in_float32(device, rng):
    layer = Affine(f32(rng, (6, 3), device), f32(rng, (3,), device))
    x64 = to_device(rng.standard_normal((2, 6)), device)
    assert layer.forward(x64).dtype == np.float32


def test_non_contiguous_inputs_give_the_same_results(device, rng):
    for layer, x, kwargs in _layers_and_inputs(rng, device):
        xp = xpnet.get_array_module(x)
        strided = xp.asfortranarray(x) if x.ndim == 2 else x.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
        assert not strided.flags.c_contiguous
        xpnet.seed(1)
        expected = to_numpy(layer.forward(x, **kwargs))
        xpnet.seed(1)
        np.testing.assert_allclose(to_numpy(layer.forward(strided, **kwargs)), expected, rtol=1e-5, atol=1e-6, err_msg=type(layer).__name__)


def test_uint8_images_become_float32(device):
    x = to_device(np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4), device)
    assert Pooling(2, 2, stride=2).forward(x).dtype == np.float32


# --- errors ------------------------------------------------------------------------------


def test_convolution_rejects_a_channel_mismatch(device, rng):
    conv = Convolution(f32(rng, (2, 3, 3, 3), device), f32(rng, (2,), device))
    with pytest.raises(ValueError, match=r"Convolution: input has 4 channels, but W of shape \(2, 3, 3, 3\) expects 3"):
        conv.forward(f32(rng, (1, 4, 5, 5), device))


def test_convolution_rejects_a_wrong_rank(device, rng):
    conv = Convolution(f32(rng, (2, 3, 3, 3), device), f32(rng, (2,), device))
    with pytest.raises(ValueError, match=r"Convolution: input must be 4-D .* got shape \(3, 5, 5\)"):
        conv.forward(f32(rng, (3, 5, 5), device))


def test_convolution_rejects_a_window_larger_than_the_padded_input(device, rng):
    conv = Convolution(f32(rng, (2, 1, 5, 5), device), f32(rng, (2,), device), pad=0)
    with pytest.raises(ValueError, match=r"Convolution: height: .*\(3 \+ 2\*0 - 5\)"):
        conv.forward(f32(rng, (1, 1, 3, 3), device))


@pytest.mark.parametrize("kwargs, message", [({"stride": 0}, "stride must be >= 1, got 0"), ({"pad": -1}, "pad must be >= 0, got -1")])
def test_convolution_rejects_bad_stride_and_pad(device, rng, kwargs, message):
    with pytest.raises(ValueError, match=f"Convolution: {message}"):
        Convolution(f32(rng, (2, 1, 3, 3), device), f32(rng, (2,), device), **kwargs)


@pytest.mark.parametrize("bias", [0, 0.5, np.float64(0.5), np.array(0.5)], ids=["int", "float", "numpy-scalar", "0-d"])
def test_a_scalar_bias_is_broadcast_to_every_filter_as_the_books_apply_filter_passes_it(device, rng, bias):
    W, x = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((2, 2, 5, 5))
    conv = Convolution(to_device(W, device), bias)
    assert conv.b.shape == (3,) and conv.b.dtype == np.float64 and xpnet.backend.device_of(conv.b) == device
    expected = conv2d(x, W, np.full(3, float(bias)), 1, 0)
    np.testing.assert_allclose(to_numpy(conv.forward(to_device(x, device))), expected, rtol=1e-10)


def test_a_scalar_bias_of_an_affine_layer_is_broadcast_too(device, rng):
    W, x = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    affine = Affine(to_device(W, device), 1)
    assert affine.b.shape == (3,) and affine.b.dtype == np.float32
    np.testing.assert_allclose(to_numpy(affine.forward(to_device(x, device))), x @ W + 1, rtol=1e-6)


def test_convolution_rejects_a_bias_of_the_wrong_shape(device, rng):
    with pytest.raises(ValueError, match=r"Convolution: b must have shape \(2,\), got \(3,\)"):
        Convolution(f32(rng, (2, 1, 3, 3), device), f32(rng, (3,), device))


@pytest.mark.parametrize(
    "args, message",
    [((2, 2, 0), "stride must be >= 1, got 0"), ((2, 2, 1, -1), "pad must be >= 0, got -1"),
     ((2, 2, 1, 2), r"pad \(2\) must be smaller than the window \(2x2\)")],
)
def test_pooling_rejects_bad_parameters(args, message):
    with pytest.raises(ValueError, match=f"Pooling: {message}"):
        Pooling(*args)


def test_pooling_rejects_a_window_larger_than_the_input(device, rng):
    with pytest.raises(ValueError, match="Pooling: width"):
        Pooling(2, 6, stride=2).forward(f32(rng, (1, 1, 6, 5), device))


def test_affine_rejects_a_feature_mismatch(device, rng):
    with pytest.raises(ValueError, match=r"Affine: input of shape \(2, 7\) has 7 features per example, but W has 6 rows"):
        Affine(f32(rng, (6, 3), device), f32(rng, (3,), device)).forward(f32(rng, (2, 7), device))


def test_batchnorm_rejects_a_channel_mismatch(device, rng):
    bn = BatchNormalization(f32(rng, (3,), device), f32(rng, (3,), device))
    with pytest.raises(ValueError, match=r"BatchNormalization: input of shape \(2, 4, 5, 5\) has 4 channels, but gamma has 3"):
        bn.forward(f32(rng, (2, 4, 5, 5), device))


@pytest.mark.parametrize("name", ["running_mean", "running_var"])
def test_batchnorm_rejects_running_statistics_of_the_wrong_shape(device, rng, name):
    with pytest.raises(ValueError, match=rf"BatchNormalization: {name} has shape \(3,\), gamma \(4,\)"):
        BatchNormalization(f32(rng, (4,), device), f32(rng, (4,), device), **{name: f32(rng, (3,), device)})


WRONG_RANKS = [
    # layer, shape of the input of the wrong rank, message
    (lambda p: Affine(p(6, 3), p(3)), (), r"Affine: input must have a batch axis, got a scalar"),
    (lambda p: BatchNormalization(p(3), p(3)), (4, 3, 5), r"BatchNormalization: input must be \(N, D\) or \(N, C, H, W\), got shape \(4, 3, 5\)"),
    (lambda p: Pooling(2, 2, stride=2), (3, 4, 4), r"Pooling: input must be 4-D \(N, C, H, W\), got shape \(3, 4, 4\)"),
    (lambda p: SoftmaxWithLoss(), (4,), r"SoftmaxWithLoss: input must be 2-D scores \(N, K\), got shape \(4,\)"),
]


@pytest.mark.parametrize("make, shape, message", WRONG_RANKS, ids=["Affine", "BatchNormalization", "Pooling", "SoftmaxWithLoss"])
def test_layers_reject_an_input_of_the_wrong_rank(device, rng, make, shape, message):
    layer = make(lambda *s: f32(rng, s, device))
    x = f32(rng, shape, device)
    args = (to_device(np.zeros(4, np.int64), device),) if isinstance(layer, SoftmaxWithLoss) else ()
    with pytest.raises(ValueError, match=message):
        layer.forward(x, *args)


def test_softmax_with_loss_rejects_labels_of_the_wrong_shape(device, rng):
    with pytest.raises(ValueError, match=r"labels must be indices \(3,\) or one-hot \(3, 4\), got shape \(2,\)"):
        SoftmaxWithLoss().forward(f32(rng, (3, 4), device), to_device(np.array([0, 1]), device))


def test_softmax_with_loss_takes_a_column_of_index_labels_as_the_books_chapter_7_gradient_check_gives(device, rng):
    x, t = f32(rng, (3, 4), device), np.array([2, 0, 3])
    column, flat = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss = column.forward(x, to_device(t.reshape(3, 1), device))
    assert float(loss) == pytest.approx(float(flat.forward(x, to_device(t, device))), rel=1e-6)
    np.testing.assert_allclose(to_numpy(column.backward()), to_numpy(flat.backward()), rtol=1e-6)


def test_softmax_with_loss_names_the_counts_when_labels_and_scores_differ_in_length(device, rng):
    with pytest.raises(ValueError, match=r"got shape \(5, 1\); 5 labels for 3 examples"):
        SoftmaxWithLoss().forward(f32(rng, (3, 4), device), to_device(np.zeros((5, 1), np.int64), device))


def test_softmax_with_loss_refuses_out_of_range_labels_on_the_cpu_and_gives_nan_on_the_gpu(device, rng):
    x, t = f32(rng, (2, 4), device), to_device(np.array([0, 4]), device)
    if device == "cpu":
        with pytest.raises(ValueError, match=r"labels must lie in 0..3, got 0..4"):
            SoftmaxWithLoss().forward(x, t)
        return
    from xpnet import kernels

    assert np.isnan(float(SoftmaxWithLoss().forward(x, t)))  # the fused kernel
    with kernels.disabled():
        assert np.isnan(float(SoftmaxWithLoss().forward(x, t)))  # the generic xp path


def test_softmax_with_loss_takes_soft_labels_as_the_full_cross_entropy(device, rng):
    x, t = rng.standard_normal((3, 4)), rng.dirichlet(np.ones(4), size=3)
    log_y = x - x.max(axis=1, keepdims=True)
    log_y -= np.log(np.exp(log_y).sum(axis=1, keepdims=True))
    loss = SoftmaxWithLoss().forward(to_device(x, device), to_device(t, device))
    np.testing.assert_allclose(float(loss), -(t * log_y).sum() / 3, rtol=1e-12)
    hard = SoftmaxWithLoss().forward(to_device(x, device), to_device(t.argmax(axis=1), device))
    assert float(loss) != pytest.approx(float(hard))  # the book's argmax would make them equal


def test_dropout_rejects_a_ratio_outside_zero_one():
    with pytest.raises(ValueError, match=r"dropout_ratio must be in \[0, 1\), got 1.0"):
        Dropout(1.0)


def test_an_input_on_another_device_says_how_to_move_it(rng):
    if not xpnet.gpu_available():
        pytest.skip(f"needs a usable GPU to put the input and the parameters on different devices ({xpnet.gpu_unavailable_reason()})")
    conv = Convolution(f32(rng, (2, 1, 3, 3), "gpu:0"), f32(rng, (2,), "gpu:0"))
    with pytest.raises(DeviceError, match=r"input is on cpu but the parameters are on gpu:0.*to_device"):
        conv.forward(rng.standard_normal((1, 1, 5, 5)).astype(np.float32))


def test_batchnorm_running_statistics_on_another_device_say_how_to_move_them(rng):
    if not xpnet.gpu_available():
        pytest.skip(f"needs a usable GPU to put the statistics and the parameters on different devices ({xpnet.gpu_unavailable_reason()})")
    with pytest.raises(DeviceError, match=r"BatchNormalization: running_var is on cpu but the parameters are on gpu:0.*to_device"):
        BatchNormalization(f32(rng, (3,), "gpu:0"), f32(rng, (3,), "gpu:0"), running_var=np.ones(3, np.float32))


def test_batchnorm_before_any_training_is_nearly_the_identity(device, rng):
    bn = BatchNormalization(to_device(np.ones(3, np.float32), device), to_device(np.zeros(3, np.float32), device))
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(to_numpy(bn.forward(to_device(x, device), train_flg=False)), x, rtol=1e-5)


# --- backward: the gradient must have the forward output's shape, and come after a forward -------------


def _after_forward(rng, device):
    """Each layer after a forward pass, with the shape of its output."""
    def p(*shape):
        return f32(rng, shape, device)

    cases = [
        (Relu(), p(4, 5), {}),
        (Sigmoid(), p(4, 5), {}),
        (Affine(p(12, 3), p(3)), p(4, 3, 2, 2), {}),
        (Dropout(0.5), p(4, 5), {}),
        (BatchNormalization(p(5), p(5)), p(4, 5), {}),
        (BatchNormalization(p(3), p(3)), p(2, 3, 4, 4), {}),
        (Convolution(p(4, 3, 3, 3), p(4)), p(2, 3, 7, 7), {}),
        (Pooling(2, 2, stride=2), p(2, 3, 6, 6), {}),
    ]
    for layer, x, kwargs in cases:
        yield layer, tuple(layer.forward(x, **kwargs).shape)


LAYER_NAMES = ["Relu", "Sigmoid", "Affine", "Dropout", "BatchNormalization", "BatchNormalization-4d", "Convolution",
               "Pooling"]


def wrong_shapes(shape):
    """Shapes a gradient must not have: one size off, an axis missing, and one that broadcasts against ``shape``."""
    off = shape[:-1] + (shape[-1] - 1,)
    return [off, shape[1:], (1,) + shape[1:]]


@pytest.mark.parametrize("index", range(len(LAYER_NAMES)), ids=LAYER_NAMES)
def test_backward_refuses_a_gradient_of_another_shape_naming_both(device, rng, index):
    layer, shape = list(_after_forward(rng, device))[index]
    name = type(layer).__name__
    for wrong in wrong_shapes(shape):
        dout = f32(rng, wrong, device)
        with pytest.raises(ValueError, match=rf"^{name}\.backward: dout has shape {re.escape(str(wrong))}, but the "
                                             rf"forward output had {re.escape(str(shape))}$"):
            layer.backward(dout)


def test_convolution_backward_with_a_wrong_dout_no_longer_returns_a_wrong_dx(device, rng):
    conv = Convolution(f32(rng, (4, 3, 3, 3), device), f32(rng, (4,), device))
    conv.forward(f32(rng, (2, 3, 7, 7), device))  # output (2, 4, 5, 5)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4, 4, 4\), but the forward output had \(2, 4, 5, 5\)"):
        conv.backward(f32(rng, (2, 4, 4, 4), device))


def test_relu_backward_no_longer_broadcasts(device, rng):
    relu = Relu()
    relu.forward(f32(rng, (4, 5), device))
    with pytest.raises(ValueError, match=r"Relu\.backward: dout has shape \(5,\), but the forward output had \(4, 5\)"):
        relu.backward(f32(rng, (5,), device))


BEFORE_FORWARD = [
    lambda p: Relu(), lambda p: Sigmoid(), lambda p: Affine(p(6, 3), p(3)), lambda p: Dropout(0.5),
    lambda p: BatchNormalization(p(3), p(3)), lambda p: Convolution(p(2, 3, 3, 3), p(2)),
    lambda p: Pooling(2, 2, stride=2), lambda p: SoftmaxWithLoss(),
]


@pytest.mark.parametrize("make", BEFORE_FORWARD, ids=LAYER_NAMES[:5] + LAYER_NAMES[6:] + ["SoftmaxWithLoss"])
def test_backward_before_forward_says_so(device, rng, make):
    layer = make(lambda *s: f32(rng, s, device))
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=rf"^{name}\.backward: called before forward"):
        layer.backward(f32(rng, (2, 3), device))


# --- parameters: floating point, one dtype per layer -----------------------------------------------


PARAMETER_LAYERS = [
    ("Affine", lambda W, b: Affine(W, b), (6, 3), (3,), "W", "b"),
    ("Convolution", lambda W, b: Convolution(W, b), (2, 3, 3, 3), (2,), "W", "b"),
    ("BatchNormalization", lambda g, b: BatchNormalization(g, b), (3,), (3,), "gamma", "beta"),
]


@pytest.mark.parametrize("layer, make, shape, bias_shape, first, second", PARAMETER_LAYERS,
                         ids=[case[0] for case in PARAMETER_LAYERS])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex64])
def test_parameters_that_are_not_floating_point_are_refused(device, layer, make, shape, bias_shape, first, second,
                                                            dtype):
    ints = to_device(np.ones(shape, dtype), device)
    with pytest.raises(ValueError, match=rf"^{layer}: {first} must be floating point \(float32 or float64\), got "
                                         rf"{np.dtype(dtype)}$"):
        make(ints, to_device(np.zeros(bias_shape, np.float32), device))


def test_integer_weights_no_longer_make_affine_compute_in_integers(device):
    W, b = to_device(np.array([[1], [2]]), device), to_device(np.array([0]), device)
    with pytest.raises(ValueError, match=r"Affine: W must be floating point \(float32 or float64\), got int64"):
        Affine(W, b)


@pytest.mark.parametrize("layer, make, shape, bias_shape, first, second", PARAMETER_LAYERS,
                         ids=[case[0] for case in PARAMETER_LAYERS])
def test_parameters_of_mixed_dtypes_are_refused(device, rng, layer, make, shape, bias_shape, first, second):
    W = to_device(rng.standard_normal(shape).astype(np.float32), device)
    b = to_device(np.zeros(bias_shape, np.float64), device)
    with pytest.raises(ValueError, match=rf"^{layer}: {first} is float32 but {second} is float64; the parameters of "
                                         r"one layer share one floating dtype \(convert with \.astype\)$"):
        make(W, b)


def test_convolution_backward_without_the_input_gradient_gives_the_same_parameter_gradients(rng):
    W, b = f32(rng, (6, 2, 3, 3), "cpu"), f32(rng, (6,), "cpu")
    x, results = f32(rng, (5, 2, 8, 7), "cpu"), []
    for input_gradient in (True, False):
        conv = Convolution(W, b, pad=1)
        out = conv.forward(x)
        dx = conv.backward(out * 0.5, input_gradient=input_gradient)
        assert (dx is None) is (not input_gradient)
        results.append((conv.dW, conv.db))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
