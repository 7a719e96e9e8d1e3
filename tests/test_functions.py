"""The book's functions of chapters 3 and 4, against closed forms, on every backend."""

import numpy as np
import pytest

from xpnet import to_device, to_numpy
from xpnet.functions import (
    cross_entropy_error,
    identity_function,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_loss,
    step_function,
    sum_squared_error,
)


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
