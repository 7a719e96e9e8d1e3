"""The CuPy fast paths against the generic xp code on the same inputs (GPU only)."""

import numpy as np
import pytest

import xpnet
from xpnet import kernels, to_device, to_numpy
from xpnet.layers import Convolution, Pooling, Relu

from reference import distinct_values

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    if not xpnet.gpu_available():
        pytest.skip(f"the fast paths are GPU kernels ({xpnet.gpu_unavailable_reason()})")
    return xpnet.backend.xp_of_device("gpu")


def both_paths(make_layer, x, dout_shape_from_out=True, seed=0):
    """forward and backward of a fresh layer with the kernels on, then off: returns two dicts of host arrays."""
    results = []
    for fast in (True, False):
        layer = make_layer()
        rng = np.random.default_rng(seed)
        if fast:
            out = layer.forward(x)
        else:
            with kernels.disabled():
                out = layer.forward(x)
        dout = to_device(rng.standard_normal(out.shape).astype(np.float32), "gpu")
        if fast:
            dx = layer.backward(dout)
        else:
            with kernels.disabled():
                dx = layer.backward(dout)
        grads = {k: to_numpy(getattr(layer, k)) for k in ("dW", "db") if getattr(layer, k, None) is not None}
        results.append({"out": to_numpy(out), "dx": to_numpy(dx), **grads})
    return results


@pytest.mark.parametrize("shape, filt, stride, pad", [
    ((2, 3, 7, 6), (4, 3, 2), 1, 1), ((3, 2, 9, 8), (5, 2, 3), 2, 2), ((4, 1, 28, 28), (30, 5, 5), 1, 0),
    ((8, 16, 14, 14), (32, 3, 3), 1, 2), ((2, 4, 10, 7), (3, 4, 1), 3, 0),
])
def test_convolution_kernels_match_the_generic_path(cp, rng, shape, filt, stride, pad):
    W = to_device(rng.standard_normal((filt[0], shape[1], filt[1], filt[2])).astype(np.float32), "gpu")
    b = to_device(rng.standard_normal(filt[0]).astype(np.float32), "gpu")
    x = to_device(rng.standard_normal(shape).astype(np.float32), "gpu")
    fast, generic = both_paths(lambda: Convolution(W, b, stride, pad), x)
    for key in generic:
        np.testing.assert_allclose(fast[key], generic[key], rtol=1e-4, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape, window, stride, pad", [
    ((2, 3, 28, 28), (2, 2), 2, 0), ((2, 3, 7, 6), (3, 2), 1, 1), ((3, 2, 9, 8), (3, 3), 2, 2),
])
def test_pooling_kernels_match_the_generic_path(cp, rng, shape, window, stride, pad, mode):
    x = to_device(distinct_values(rng, shape).astype(np.float32), "gpu")
    fast, generic = both_paths(lambda: Pooling(*window, stride=stride, pad=pad, mode=mode), x)
    for key in generic:
        np.testing.assert_allclose(fast[key], generic[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_relu_kernel_matches_the_generic_path_and_keeps_the_layout(cp, rng):
    base = to_device(rng.standard_normal((4, 6, 6, 5)).astype(np.float32), "gpu")
    x = base.transpose(0, 3, 1, 2)  # channels-last memory, as a Convolution returns it
    fast, generic = both_paths(Relu, x)
    for key in generic:
        np.testing.assert_array_equal(fast[key], generic[key], err_msg=key)
    assert Relu().forward(x).transpose(0, 2, 3, 1).flags.c_contiguous


def test_col2im_kernel_is_deterministic(cp, rng):
    col = to_device(rng.standard_normal((2 * 5 * 5, 3 * 3 * 4)).astype(np.float32), "gpu")
    first = to_numpy(kernels.col2im(col, (2, 5, 5, 4), 3, 3, 1, 1, 5, 5))
    for _ in range(3):
        np.testing.assert_array_equal(to_numpy(kernels.col2im(col, (2, 5, 5, 4), 3, 3, 1, 1, 5, 5)), first)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_fused_optimizer_updates_match_the_generic_path(cp, rng, name):
    from xpnet.optimizer import get_optimizer

    start = rng.standard_normal((5, 7)).astype(np.float32)
    grads = [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(3)]
    finals = []
    for fast in (True, False):
        params = {"W": to_device(start, "gpu")}
        opt = get_optimizer(name, lr=0.01)
        for g in grads:
            if fast:
                opt.update(params, {"W": to_device(g, "gpu")})
            else:
                with kernels.disabled():
                    opt.update(params, {"W": to_device(g, "gpu")})
        finals.append(to_numpy(params["W"]))
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("generic_labels", ["indices", "one-hot rows"])
def test_softmax_with_loss_kernels_match_the_generic_path(cp, rng, generic_labels):
    """The fused kernel takes index labels; one-hot rows always take the generic path and must agree with it."""
    from xpnet.layers import SoftmaxWithLoss

    x = to_device((rng.standard_normal((37, 10)) * 5).astype(np.float32), "gpu")
    labels = rng.integers(0, 10, 37)
    generic_t = np.eye(10, dtype=np.float32)[labels] if generic_labels == "one-hot rows" else labels
    results = []
    for fast in (True, False):
        layer = SoftmaxWithLoss()
        if fast:
            t = to_device(labels, "gpu")
            loss, dx = layer.forward(x, t), layer.backward(0.5)
        else:
            t = to_device(generic_t, "gpu")
            with kernels.disabled():
                loss, dx = layer.forward(x, t), layer.backward(0.5)
        results.append((float(loss), to_numpy(dx)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)


def test_nan_passes_through_relu_and_max_pooling_as_in_the_generic_path(cp):
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4) - 10
    x[0, 0, 1, 1] = x[1, 0, 3, 2] = np.nan  # the second not first in its window
    x = to_device(x, "gpu")
    for make in (Relu, lambda: Pooling(2, 2, stride=2)):
        fast, generic = both_paths(make, x)
        np.testing.assert_array_equal(np.isnan(fast["out"]), np.isnan(generic["out"]))
        assert np.isnan(fast["out"]).sum() == 2
        np.testing.assert_allclose(fast["out"], generic["out"])
        np.testing.assert_allclose(fast["dx"], generic["dx"])  # the gradient goes to the same (NaN) position
