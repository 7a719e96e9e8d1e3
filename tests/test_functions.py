"""The book's functions (functions.py) against plain float64 formulas and closed forms, on every backend, and the layers built on them."""

import math

import numpy as np
import pytest

from xpnet import to_device, to_numpy
from xpnet.functions import (
    cross_entropy_error,
    identity_function,
    log_softmax,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_loss,
    step_function,
    sum_squared_error,
)
from xpnet.layers import Relu, Sigmoid, SoftmaxWithLoss


def on(device, values, dtype=np.float32):
    return to_device(np.asarray(values, dtype=dtype), device)


def test_sigmoid_is_one_over_one_plus_exp_minus_x_and_never_overflows(device):
    values = [-1000.0, -20.0, -1.0, 0.0, 0.5, 3.0, 1000.0]
    out = sigmoid(on(device, values))
    assert out.dtype == np.float32
    expected = [1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in values]
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6, atol=1e-7)  # float32: within 1e-7 of 0 and 1
    assert np.isfinite(to_numpy(out)).all()


def test_relu_keeps_positives_and_zeroes_the_rest(device):
    out = relu(on(device, [[-2.0, -0.0, 0.5], [3.0, -1e-30, 0.0]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(out), [[0.0, 0.0, 0.5], [3.0, 0.0, 0.0]])


def test_softmax_rows_are_probabilities_even_for_huge_scores(device):
    x = [[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]]
    y = to_numpy(softmax(on(device, x)))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, [e / e.sum(), [0.5, 0.5, 0.0]], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)


def test_log_softmax_is_the_log_of_softmax_where_softmax_underflows_too(device):
    x = on(device, [[1.0, 2.0, 3.0], [0.0, 0.0, -200.0]], dtype=np.float64)
    out = to_numpy(log_softmax(x))
    row = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(out[0], row - math.log(np.exp(row).sum()), rtol=1e-12)
    np.testing.assert_allclose(out[1], [-math.log(2), -math.log(2), -200 - math.log(2)], rtol=1e-12)
    assert to_numpy(softmax(x))[1, 2] == pytest.approx(math.exp(-200 - math.log(2)), rel=1e-12)


def test_cross_entropy_of_index_and_one_hot_labels_is_minus_the_mean_log_of_the_right_class(device):
    y = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    by_index = cross_entropy_error(on(device, y), to_device(np.array([0, 2]), device))
    one_hot = cross_entropy_error(on(device, y), on(device, [[1, 0, 0], [0, 0, 1]]))
    assert by_index.shape == () and float(by_index) == pytest.approx(expected, rel=1e-6)
    assert float(one_hot) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_of_soft_labels_is_the_full_sum_and_agrees_with_softmax_with_loss(device):
    x = on(device, [[math.log(2.0), 0.0, math.log(3.0)], [2.0, -1.0, 0.5]], dtype=np.float64)  # y0 = 2/6, 1/6, 3/6
    t = on(device, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)
    y = softmax(x)
    full = -(0.5 * math.log(2 / 6) + 0.5 * math.log(1 / 6) + math.log(float(to_numpy(y)[1, 2]))) / 2
    assert float(cross_entropy_error(y, t)) == pytest.approx(full, rel=1e-12)
    assert float(cross_entropy_error(y, t)) == pytest.approx(float(SoftmaxWithLoss().forward(x, t)), rel=1e-12)
    argmax = cross_entropy_error(y, to_device(np.array([0, 2]), device))  # what the book's version computes
    assert float(argmax) != pytest.approx(full)


def test_cross_entropy_takes_a_single_example_and_clips_zero_probabilities(device):
    y = on(device, [0.0, 1.0])
    assert float(cross_entropy_error(y, to_device(np.array(1), device))) == pytest.approx(0.0, abs=1e-7)
    assert float(cross_entropy_error(y, on(device, [1.0, 0.0]))) == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_the_layers_compute_with_these_functions(device):
    x = on(device, [[-3.0, 0.0, 2.5]])
    np.testing.assert_array_equal(to_numpy(Sigmoid().forward(x)), to_numpy(sigmoid(x)))
    np.testing.assert_array_equal(to_numpy(Relu().forward(x)), to_numpy(relu(x)))


def test_identity_function_returns_its_input(xp):
    x = xp.arange(3.0)
    assert identity_function(x) is x


def test_step_function_is_one_above_zero_as_integers(device):
    out = step_function(to_device(np.array([-1.0, 0.0, 2.0]), device))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(to_numpy(out), [0, 0, 1])


def test_sigmoid_grad_is_the_derivative_of_sigmoid(device):
    x = to_device(np.linspace(-5, 5, 11), device)
    h = 1e-6
    numerical = (to_numpy(sigmoid(x + h)) - to_numpy(sigmoid(x - h))) / (2 * h)
    np.testing.assert_allclose(to_numpy(sigmoid_grad(x)), numerical, rtol=1e-6)


def test_relu_grad_is_one_from_zero_up_in_the_inputs_dtype(device):
    out = relu_grad(to_device(np.array([-1.0, 0.0, 3.0], np.float32), device))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(out), [0.0, 1.0, 1.0])


def test_sum_squared_error_of_the_books_example(device):
    """Chapter 4: the probabilities peaking at the label 2 give 0.0975, peaking at 7 give 0.5975."""
    t = to_device(np.eye(10)[2], device)
    y_right = to_device(np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]), device)
    y_wrong = to_device(np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]), device)
    assert float(sum_squared_error(y_right, t)) == pytest.approx(0.0975)
    assert float(sum_squared_error(y_wrong, t)) == pytest.approx(0.5975)


def test_softmax_loss_is_the_cross_entropy_of_the_softmax(device, rng):
    x, t = to_device(rng.standard_normal((4, 3)), device), to_device(np.array([0, 2, 1, 2]), device)
    assert float(softmax_loss(x, t)) == pytest.approx(float(cross_entropy_error(softmax(x), t)))
    log_y = to_numpy(x) - np.log(np.exp(to_numpy(x)).sum(axis=1, keepdims=True))
    assert float(softmax_loss(x, t)) == pytest.approx(-log_y[np.arange(4), [0, 2, 1, 2]].mean(), rel=1e-6)
