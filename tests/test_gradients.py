"""Every layer's backward against central differences, in float64, on every backend."""

import numpy as np
import pytest

import xpnet
from xpnet import to_device, to_numpy
from xpnet.gradient import (GradientCheckError, check_layer_gradient, check_network_gradient, numerical_gradient,
                            numerical_gradient_2d)
from xpnet.layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss
from xpnet.nets import MultiLayerNet

from reference import distinct_values


def f64(rng, shape, device):
    return to_device(rng.standard_normal(shape), device)


def test_numerical_gradient_of_the_books_function_2(xp):
    # f(x0, x1) = x0^2 + x1^2 has gradient (6, 8) at (3, 4): the book's example in chapter 4.
    x = xp.array([3.0, 4.0])
    grad = numerical_gradient(lambda v: (v ** 2).sum(), x)
    np.testing.assert_allclose(to_numpy(grad), [6.0, 8.0], rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(x), [3.0, 4.0])  # restored


def test_numerical_gradient_2d_gives_the_gradient_at_each_point(xp):
    """The book's chapter 4 figure: the gradient of x0^2 + x1^2 at many points is (2 x0, 2 x1)."""
    points = xp.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.5]])
    grad = numerical_gradient_2d(lambda v: (v ** 2).sum(), points)
    np.testing.assert_allclose(to_numpy(grad), 2 * to_numpy(points), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(to_numpy(numerical_gradient_2d(lambda v: (v ** 2).sum(), points[0])), [6.0, 8.0])


def test_affine(device, rng):
    check_layer_gradient(Affine(f64(rng, (5, 3), device), f64(rng, (3,), device)), f64(rng, (4, 5), device))


def test_affine_on_image_batches(device, rng):
    check_layer_gradient(Affine(f64(rng, (12, 3), device), f64(rng, (3,), device)), f64(rng, (2, 3, 2, 2), device))


def test_relu(device, rng):
    x = to_device(distinct_values(rng, (4, 5)) + 0.01, device)  # keep every input away from the kink at 0
    check_layer_gradient(Relu(), x)


def test_sigmoid(device, rng):
    check_layer_gradient(Sigmoid(), f64(rng, (4, 5), device))


@pytest.mark.parametrize("labels", ["indices", "one-hot", "soft"])
def test_softmax_with_loss(device, rng, labels):
    t = np.array([1, 0, 3, 2])
    t = {"indices": t, "one-hot": np.eye(4)[t], "soft": rng.dirichlet(np.ones(4), size=4)}[labels]
    check_layer_gradient(SoftmaxWithLoss(), f64(rng, (4, 4), device), to_device(t, device))


def test_dropout_with_a_fixed_mask(device, rng):
    class Reseeded(Dropout):
        def forward(self, x, train_flg=True):
            xpnet.seed(7)
            return super().forward(x, train_flg)

    check_layer_gradient(Reseeded(0.4), f64(rng, (6, 5), device), train_flg=True)


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 3, 2)])
def test_batchnorm_in_training_mode(device, rng, shape):
    c = shape[1]
    bn = BatchNormalization(f64(rng, (c,), device) + 1.0, f64(rng, (c,), device))
    check_layer_gradient(bn, f64(rng, shape, device), train_flg=True, rtol=1e-4, atol=1e-6)


def test_batchnorm_in_test_mode(device, rng):
    bn = BatchNormalization(f64(rng, (4,), device), f64(rng, (4,), device),
                            running_mean=f64(rng, (4,), device), running_var=to_device(rng.random(4) + 0.5, device))
    check_layer_gradient(bn, f64(rng, (6, 4), device), train_flg=False)


@pytest.mark.parametrize(
    "shape, filt, stride, pad",
    [((2, 3, 5, 5), (2, 3, 3), 1, 0), ((2, 2, 6, 5), (3, 2, 3), 2, 1), ((1, 2, 7, 7), (2, 3, 3), 3, 2),
     # stride 1 with padding, on both CPU routes to dx: the gather (FN <= 2C) and the scatter (FN > 2C)
     ((2, 2, 5, 4), (3, 3, 3), 1, 1), ((1, 1, 5, 5), (3, 3, 3), 1, 1),
     # window rows of FW*C >= 32 values: the products by filter row (forward, dW, and dx where FW*FN >= 32)
     ((2, 12, 5, 4), (12, 3, 3), 1, 1), ((1, 11, 4, 4), (4, 3, 3), 1, 2), ((2, 8, 5, 5), (16, 2, 4), 1, 0)],
)
def test_convolution_with_stride_and_pad(device, rng, shape, filt, stride, pad):
    W = f64(rng, (filt[0], shape[1], filt[1], filt[2]), device)
    check_layer_gradient(Convolution(W, f64(rng, (filt[0],), device), stride, pad), f64(rng, shape, device))


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("window, stride, pad", [((2, 2), 2, 0), ((3, 2), 1, 1), ((3, 3), 2, 2)])
def test_pooling_with_stride_and_pad(device, rng, window, stride, pad, mode):
    x = to_device(distinct_values(rng, (2, 2, 6, 5)), device)  # no ties: the max is unique and h cannot flip it
    check_layer_gradient(Pooling(*window, stride=stride, pad=pad, mode=mode), x)


def test_a_wrong_backward_is_caught(device, rng):
    class BrokenRelu(Relu):
        def backward(self, dout):
            return dout * 1.0

    with pytest.raises(GradientCheckError, match="BrokenRelu gradient of x"):
        check_layer_gradient(BrokenRelu(), to_device(distinct_values(rng, (3, 3)), device))


def test_a_nan_gradient_is_caught_and_named(device, rng):
    class NanRelu(Relu):
        def backward(self, dout):
            dx = super().backward(dout)
            dx[1, 2] = float("nan")
            return dx

    with pytest.raises(GradientCheckError, match=r"NanRelu gradient of x at flat index 5: analytic nan"):
        check_layer_gradient(NanRelu(), to_device(distinct_values(rng, (3, 3)), device))


def test_a_float32_layer_check_is_refused_naming_what_is_float32(device, rng):
    layer = Affine(f64(rng, (5, 3), device).astype(np.float32), f64(rng, (3,), device).astype(np.float32))
    with pytest.raises(ValueError, match=r"check_layer_gradient: Affine.W, Affine.b are float32, but the check needs float64.*astype"):
        check_layer_gradient(layer, f64(rng, (4, 5), device))
    with pytest.raises(ValueError, match=r"check_layer_gradient: x is float32, but the check needs float64"):
        check_layer_gradient(Sigmoid(), f64(rng, (4, 5), device).astype(np.float32))


def test_a_float32_network_check_is_refused_naming_its_parameters(device, rng):
    xpnet.set_device(device)
    net = MultiLayerNet(5, [4], 3)  # float32, the default
    with pytest.raises(ValueError, match=r"MultiLayerNet parameters W1, b1, W2, b2 are float32, .*dtype=np.float64"):
        check_network_gradient(net, rng.standard_normal((2, 5)), np.array([0, 2]))
