"""Properties of the layers over random shapes, strides, pads and dtypes (Hypothesis), on every backend.

Each property states a rule and checks it on drawn cases: the forward pass
against the plain-loop references of ``reference.py`` and the output-size
formula, the backward pass through identities that need no second
implementation (a linear map and its adjoint: <dx, r> = <dout, f(r)>; a
positively homogeneous one: <dx, x> = <dout, f(x)>), and every bad
combination of shapes as a ValueError that names the shapes.

The draws are deterministic (``derandomize``), so a run is repeatable; a
failure prints the smallest case Hypothesis found.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xpnet import to_device, to_numpy
from xpnet.layers import Affine, BatchNormalization, Convolution, Pooling, Relu, Sigmoid

from reference import conv2d, distinct_values, pool2d

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
FLOATS = st.sampled_from([np.float32, np.float64])
TOLERANCE = {np.float32: {"rtol": 1e-4, "atol": 1e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}


def out_size(size, window, stride, pad):
    return (size + 2 * pad - window) // stride + 1


def inner(a, b):
    return float(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64)))


@st.composite
def conv_cases(draw, fits=True):
    """(N, C, H, W), (FN, FH, FW), stride, pad, parameter dtype, input dtype, seed."""
    n, c, fn = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    if fits:
        h, w = draw(st.integers(max(1, fh - 2 * pad), 9)), draw(st.integers(max(1, fw - 2 * pad), 9))
    else:  # a window larger than the padded input along one axis, or both
        assume(fh - 2 * pad > 1 or fw - 2 * pad > 1)
        short_h = fh - 2 * pad > 1 and draw(st.booleans()) or fw - 2 * pad <= 1
        h = draw(st.integers(1, fh - 2 * pad - 1)) if short_h else draw(st.integers(max(1, fh - 2 * pad), 9))
        w = draw(st.integers(max(1, fw - 2 * pad), 9)) if short_h else draw(st.integers(1, fw - 2 * pad - 1))
    dtype = draw(FLOATS)
    x_dtype = draw(st.sampled_from([np.float32, np.float64, np.uint8]))
    return (n, c, h, w), (fn, fh, fw), stride, pad, dtype, x_dtype, draw(st.integers(0, 2**32 - 1))


def conv_layer(device, shape, filt, dtype, stride, pad, rng):
    W = rng.standard_normal((filt[0], shape[1], filt[1], filt[2])).astype(dtype)
    b = rng.standard_normal(filt[0]).astype(dtype)
    return Convolution(to_device(W, device), to_device(b, device), stride, pad), W, b


def draw_input(rng, shape, x_dtype):
    if x_dtype == np.uint8:
        return rng.integers(0, 4, shape).astype(np.uint8)  # small pixel values keep float32 sums exact enough
    return rng.standard_normal(shape).astype(x_dtype)


@PROPERTY
@given(case=conv_cases())
def test_convolution_matches_the_plain_loop_and_its_adjoint(device, case):
    shape, filt, stride, pad, dtype, x_dtype, seed = case
    rng = np.random.default_rng(seed)
    conv, W, b = conv_layer(device, shape, filt, dtype, stride, pad, rng)
    x = draw_input(rng, shape, x_dtype)
    out = conv.forward(to_device(x, device))
    expected_shape = (shape[0], filt[0], out_size(shape[2], filt[1], stride, pad), out_size(shape[3], filt[2], stride, pad))
    assert out.shape == expected_shape and out.dtype == dtype
    np.testing.assert_allclose(to_numpy(out), conv2d(x, W, b, stride, pad), **TOLERANCE[dtype])

    dout = rng.standard_normal(expected_shape).astype(dtype)
    dx = conv.backward(to_device(dout, device))
    assert dx.shape == shape and dx.dtype == dtype
    assert conv.dW.shape == W.shape and conv.db.shape == b.shape and conv.dW.dtype == conv.db.dtype == dtype
    r, R = rng.standard_normal(shape), rng.standard_normal(W.shape)
    zero = np.zeros(filt[0])
    scale = float(np.abs(dout).sum()) * (1 + float(np.abs(x).max())) * filt[1] * filt[2] * shape[1]
    atol = 1e-4 * scale if dtype == np.float32 else 1e-9 * scale
    assert inner(to_numpy(dx), r) == pytest.approx(inner(dout, conv2d(r, W, zero, stride, pad)), abs=atol)
    assert inner(to_numpy(conv.dW), R) == pytest.approx(inner(dout, conv2d(x, R, zero, stride, pad)), abs=atol)
    np.testing.assert_allclose(to_numpy(conv.db), dout.sum(axis=(0, 2, 3)), **TOLERANCE[dtype])


@PROPERTY
@given(case=conv_cases(fits=False))
def test_a_convolution_window_larger_than_the_padded_input_is_a_value_error(device, case):
    shape, filt, stride, pad, dtype, x_dtype, seed = case
    rng = np.random.default_rng(seed)
    conv, _, _ = conv_layer(device, shape, filt, dtype, stride, pad, rng)
    with pytest.raises(ValueError, match=r"^Convolution: (height|width): "):
        conv.forward(to_device(draw_input(rng, shape, x_dtype), device))


@PROPERTY
@given(case=conv_cases(), channels=st.integers(1, 4), axis=st.integers(0, 3), delta=st.sampled_from([-1, 1, 2]))
def test_convolution_refuses_other_channels_and_gradients_of_another_shape(device, case, channels, axis, delta):
    shape, filt, stride, pad, dtype, x_dtype, seed = case
    rng = np.random.default_rng(seed)
    conv, W, _ = conv_layer(device, shape, filt, dtype, stride, pad, rng)
    if channels != shape[1]:
        other = (shape[0], channels) + shape[2:]
        with pytest.raises(ValueError, match=rf"^Convolution: input has {channels} channels, but W of shape "
                                             rf"{re.escape(str(W.shape))} expects {shape[1]}$"):
            conv.forward(to_device(draw_input(rng, other, x_dtype), device))
    out = conv.forward(to_device(draw_input(rng, shape, x_dtype), device))
    wrong = list(out.shape)
    wrong[axis] += delta
    assume(wrong[axis] >= 1)
    with pytest.raises(ValueError, match=rf"^Convolution\.backward: dout has shape {re.escape(str(tuple(wrong)))}, "
                                         rf"but the forward output had {re.escape(str(tuple(out.shape)))}$"):
        conv.backward(to_device(np.ones(wrong, dtype), device))


@st.composite
def pool_cases(draw):
    """(N, C, H, W), (PH, PW), stride, pad < the window, mode, dtype, seed; the window fits the padded input."""
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, min(ph, pw) - 1))
    h, w = draw(st.integers(max(1, ph - 2 * pad), 9)), draw(st.integers(max(1, pw - 2 * pad), 9))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    return shape, (ph, pw), stride, pad, draw(st.sampled_from(["max", "avg"])), draw(FLOATS), draw(st.integers(0, 2**32 - 1))


@PROPERTY
@given(case=pool_cases())
def test_pooling_matches_the_plain_loop_and_its_gradient_is_exact(device, case):
    shape, window, stride, pad, mode, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape).astype(dtype)  # no ties inside a window: one maximum on every backend
    pool = Pooling(*window, stride=stride, pad=pad, mode=mode)
    out = pool.forward(to_device(x, device))
    expected_shape = shape[:2] + (out_size(shape[2], window[0], stride, pad), out_size(shape[3], window[1], stride, pad))
    assert out.shape == expected_shape and out.dtype == dtype
    np.testing.assert_allclose(to_numpy(out), pool2d(x, *window, stride, pad, mode), **TOLERANCE[dtype])

    dout = rng.standard_normal(expected_shape).astype(dtype)
    dx = to_numpy(pool.backward(to_device(dout, device)))
    assert dx.shape == shape and dx.dtype == dtype
    # both modes are positively homogeneous (average pooling is even linear): <dx, x> = <dout, pool(x)>
    tol = 1e-4 * float(np.abs(dout).sum()) if dtype == np.float32 else 1e-10 * float(np.abs(dout).sum())
    assert inner(dx, x) == pytest.approx(inner(dout, to_numpy(out)), abs=tol)
    if mode == "avg":
        r = rng.standard_normal(shape)
        assert inner(dx, r) == pytest.approx(inner(dout, pool2d(r, *window, stride, pad, "avg")), abs=tol * 10)
    else:  # each output's gradient lands, whole, on one input
        assert dx.sum() == pytest.approx(dout.sum(), abs=tol)


@PROPERTY
@given(window=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.integers(1, 3), pad=st.integers(0, 4),
       size=st.tuples(st.integers(1, 6), st.integers(1, 6)))
def test_bad_pooling_combinations_are_value_errors(device, window, stride, pad, size):
    if pad >= min(window):
        with pytest.raises(ValueError, match=rf"^Pooling: pad \({pad}\) must be smaller than the window "
                                             rf"\({window[0]}x{window[1]}\)$"):
            Pooling(*window, stride=stride, pad=pad)
        return
    pool = Pooling(*window, stride=stride, pad=pad)
    x = to_device(np.zeros((1, 2) + size, np.float32), device)
    if size[0] + 2 * pad < window[0] or size[1] + 2 * pad < window[1]:
        with pytest.raises(ValueError, match=r"^Pooling: (height|width): "):
            pool.forward(x)
    else:
        out = pool.forward(x)
        assert out.shape == (1, 2, out_size(size[0], window[0], stride, pad), out_size(size[1], window[1], stride, pad))


@PROPERTY
@given(n=st.integers(1, 4), trailing=st.lists(st.integers(1, 4), min_size=1, max_size=3), m=st.integers(1, 5),
       dtype=FLOATS, x_dtype=st.sampled_from([np.float32, np.float64, np.uint8]), seed=st.integers(0, 2**32 - 1))
def test_affine_matches_the_matrix_product_and_keeps_the_input_shape(device, n, trailing, m, dtype, x_dtype, seed):
    rng = np.random.default_rng(seed)
    d = math.prod(trailing)
    W, b = rng.standard_normal((d, m)).astype(dtype), rng.standard_normal(m).astype(dtype)
    x = draw_input(rng, (n, *trailing), x_dtype)
    layer = Affine(to_device(W, device), to_device(b, device))
    out = layer.forward(to_device(x, device))
    assert out.shape == (n, m) and out.dtype == dtype
    np.testing.assert_allclose(to_numpy(out), x.reshape(n, -1).astype(np.float64) @ W + b, **TOLERANCE[dtype])
    dout = rng.standard_normal((n, m)).astype(dtype)
    dx = to_numpy(layer.backward(to_device(dout, device)))
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx.reshape(n, -1), dout.astype(np.float64) @ W.T, **TOLERANCE[dtype])
    np.testing.assert_allclose(to_numpy(layer.dW), x.reshape(n, -1).T.astype(np.float64) @ dout, **TOLERANCE[dtype])
    other = d + rng.integers(1, 4)
    with pytest.raises(ValueError, match=rf"^Affine: input of shape \({n}, {other}\) has {other} features per "
                                         rf"example, but W has {d} rows$"):
        layer.forward(to_device(np.zeros((n, other), dtype), device))


KINDS = [np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex64]


@PROPERTY
@given(W_dtype=st.sampled_from(KINDS), b_dtype=st.sampled_from(KINDS))
def test_layer_parameters_are_floating_point_of_one_dtype_or_a_value_error(device, W_dtype, b_dtype):
    for make, shape, bias in ((Affine, (4, 3), (3,)), (Convolution, (3, 2, 2, 2), (3,)),
                              (BatchNormalization, (3,), (3,))):
        W, b = to_device(np.ones(shape, W_dtype), device), to_device(np.zeros(bias, b_dtype), device)
        name = make.__name__
        if np.dtype(W_dtype).kind != "f" or np.dtype(b_dtype).kind != "f":
            bad = W_dtype if np.dtype(W_dtype).kind != "f" else b_dtype
            with pytest.raises(ValueError, match=rf"^{name}: \w+ must be floating point \(float32 or float64\), got "
                                                 rf"{np.dtype(bad)}$"):
                make(W, b)
        elif W_dtype != b_dtype:
            with pytest.raises(ValueError, match=rf"^{name}: \w+ is {np.dtype(W_dtype)} but \w+ is "
                                                 rf"{np.dtype(b_dtype)}; the parameters of one layer share one"):
                make(W, b)
        else:
            assert make(W, b) is not None


@PROPERTY
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), dtype=FLOATS,
       seed=st.integers(0, 2**32 - 1), layer=st.sampled_from([Relu, Sigmoid]))
def test_activations_elementwise_and_their_gradients_only_of_the_same_shape(device, shape, dtype, seed, layer):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    act = layer()
    out = to_numpy(act.forward(to_device(x, device)))
    expected = np.maximum(x, 0) if layer is Relu else 1 / (1 + np.exp(-x.astype(np.float64)))
    assert out.shape == shape and out.dtype == dtype
    np.testing.assert_allclose(out, expected, **TOLERANCE[dtype])
    dout = rng.standard_normal(shape).astype(dtype)
    slope = (x > 0) if layer is Relu else expected * (1 - expected)
    np.testing.assert_allclose(to_numpy(act.backward(to_device(dout, device))), dout * slope, **TOLERANCE[dtype])
    for wrong in ((1,) + shape[1:], shape[1:] or (2,), shape + (1,)):
        if wrong != shape:
            with pytest.raises(ValueError, match=rf"^{layer.__name__}\.backward: dout has shape "
                                                 rf"{re.escape(str(wrong))}, but the forward output had"):
                act.backward(to_device(np.ones(wrong, dtype), device))
