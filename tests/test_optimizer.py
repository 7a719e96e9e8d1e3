"""The book's optimizers: equations against a float64 reference, in place, dtypes, state, the chapter 6 function, errors."""

import math

import numpy as np
import pytest

from xpnet import DeviceError, to_device, to_numpy
from xpnet.backend import device_of
from xpnet.layers import Affine
from xpnet.optimizer import OPTIMIZERS, SGD, Adam, AdamW, Momentum, get_optimizer

# --- an independent reference: the update rules, in float64, one step at a time ------------


def reference_steps(name, hyper, p, grads):
    """The parameter after each gradient in ``grads``, written from the equations in the docstrings."""
    h = {"lr": 0.01, "momentum": 0.9, "decay_rate": 0.99, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01, **hyper}
    lr, eps = h["lr"], 1e-7
    p = np.array(p, dtype=np.float64)
    v, s, m = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            p = p - lr * g
        elif name == "momentum":
            v = h["momentum"] * v - lr * g
            p = p + v
        elif name == "nesterov":  # the book's order: v first, then the look-ahead step
            mu = h["momentum"]
            v = mu * v - lr * g
            p = p + mu**2 * v - (1 + mu) * lr * g
        elif name == "adagrad":
            s = s + g**2
            p = p - lr * g / (np.sqrt(s) + eps)
        elif name == "rmsprop":
            s = h["decay_rate"] * s + (1 - h["decay_rate"]) * g**2
            p = p - lr * g / (np.sqrt(s) + eps)
        elif name in ("adam", "adamw"):
            b1, b2 = h["beta1"], h["beta2"]
            if name == "adamw":
                p = p - lr * h["weight_decay"] * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            p = p - lr_t * m / (np.sqrt(v) + eps)
        out.append(p)
    return out


CASES = {
    "sgd": {"lr": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.8},
    "nesterov": {"lr": 0.1, "momentum": 0.8},
    "adagrad": {"lr": 0.5},
    "rmsprop": {"lr": 0.05, "decay_rate": 0.9},
    "adam": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99},
    "adamw": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.5},
}


def problem(rng, steps=3):
    """Two parameters and a fixed sequence of gradients for them, on the host, float64."""
    p0 = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(steps)]
    return p0, grads


# --- the equations --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_first_three_steps_follow_the_equations(device, rng, name):
    p0, grads = problem(rng)
    params = to_device(p0, device)
    optimizer = get_optimizer(name, **CASES[name])
    expected = {k: reference_steps(name, CASES[name], p0[k], [g[k] for g in grads]) for k in p0}
    for step, g in enumerate(grads):
        optimizer.update(params, to_device(g, device))
        for k in params:
            np.testing.assert_allclose(to_numpy(params[k]), expected[k][step], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}, step {step + 1}, {k}")
    assert optimizer.iter == 3


def test_the_book_defaults():
    defaults = {name: {k: getattr(cls(), k) for k in cls.hyperparameters} for name, cls in OPTIMIZERS.items()}
    assert defaults == {
        "sgd": {"lr": 0.01},
        "momentum": {"lr": 0.01, "momentum": 0.9},
        "nesterov": {"lr": 0.01, "momentum": 0.9},
        "adagrad": {"lr": 0.01},
        "rmsprop": {"lr": 0.01, "decay_rate": 0.99},
        "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999},
        "adamw": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01},
    }


def test_names_are_case_insensitive():
    assert type(get_optimizer("AdaGrad")).__name__ == "AdaGrad"
    assert type(get_optimizer("RMSPROP", lr=0.1)).__name__ == "RMSprop"
    assert isinstance(get_optimizer("adamw"), AdamW) and isinstance(get_optimizer("Adam"), Adam)


# --- in place, dtypes, devices ---------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_updates_happen_in_place_where_layers_see_them(device, rng, name):
    W = to_device(rng.standard_normal((3, 2)).astype(np.float32), device)
    b = to_device(np.zeros(2, np.float32), device)
    layer = Affine(W, b)
    params = {"W": W, "b": b}
    before = to_numpy(W).copy()
    get_optimizer(name, **CASES[name]).update(params, {"W": to_device(np.ones((3, 2), np.float32), device)})
    assert params["W"] is W and layer.W is W and params["b"] is b
    assert not np.allclose(to_numpy(layer.W), before)
    np.testing.assert_array_equal(to_numpy(b), 0)  # no gradient given: left alone


@pytest.mark.parametrize("name", CASES)
def test_float32_stays_float32(device, rng, name):
    p0, grads = problem(rng)
    params = to_device({k: v.astype(np.float32) for k, v in p0.items()}, device)
    hyper = {k: np.float64(v) for k, v in CASES[name].items()}  # NumPy scalars must not upcast either
    optimizer = get_optimizer(name, **hyper)
    for g in grads:
        optimizer.update(params, to_device({k: v.astype(np.float32) for k, v in g.items()}, device))
    assert all(p.dtype == np.float32 for p in params.values())
    arrays = {k: v for k, v in optimizer.state_dict().items() if "/" in k}
    assert arrays or name == "sgd"
    assert all(v.dtype == np.float32 for v in arrays.values())
    expected = reference_steps(name, CASES[name], p0["W"], [g["W"] for g in grads])[-1]
    np.testing.assert_allclose(to_numpy(params["W"]), expected, rtol=1e-4, atol=1e-5)


def test_state_lives_on_the_parameters_device(device, rng):
    params = to_device({"W": rng.standard_normal((2, 2)).astype(np.float32)}, device)
    optimizer = Adam()
    assert optimizer.m == {} and optimizer.v == {}  # created lazily
    optimizer.update(params, {"W": params["W"] * 1.0})
    assert device_of(optimizer.m["W"]) == device and optimizer.m["W"].dtype == np.float32


# --- state_dict --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip_gives_the_same_next_step(device, rng, name):
    p0, grads = problem(rng, steps=4)
    straight = to_device(p0, device)
    first = get_optimizer(name, **CASES[name])
    for g in grads[:3]:
        first.update(straight, to_device(g, device))
    resumed = to_device({k: to_numpy(v) for k, v in straight.items()}, device)  # a copy, as if reloaded

    state = first.state_dict()
    snapshot = {k: v.copy() for k, v in state.items() if "/" in k}
    assert state["iter"] == 3 and type(state["iter"]) is int and type(state["lr"]) is float
    assert all(isinstance(v, np.ndarray) for k, v in state.items() if "/" in k)
    second = get_optimizer(name, lr=123.0)  # everything comes from the state
    second.load_state_dict(state)
    assert second.lr == CASES[name]["lr"] and second.iter == 3

    first.update(straight, to_device(grads[3], device))
    second.update(resumed, to_device(grads[3], device))
    for k in straight:
        np.testing.assert_array_equal(to_numpy(resumed[k]), to_numpy(straight[k]))
    assert all(device_of(a) == device for slot in second.slots for a in getattr(second, slot).values())
    # state_dict is a snapshot: later updates leave it alone
    for k, v in snapshot.items():
        np.testing.assert_array_equal(state[k], v)


def test_load_state_dict_onto_a_device_now(device, rng):
    params = to_device({"W": rng.standard_normal(3)}, device)
    first = Momentum()
    first.update(params, {"W": params["W"] * 1.0})
    second = Momentum()
    second.load_state_dict(first.state_dict(), device=device)
    assert device_of(second.v["W"]) == device
    np.testing.assert_array_equal(to_numpy(second.v["W"]), to_numpy(first.v["W"]))


def test_a_state_of_another_optimizer_is_refused():
    params = {"W": np.ones(2)}
    adam = Adam()
    adam.update(params, {"W": np.ones(2)})
    with pytest.raises(ValueError, match=r"SGD.load_state_dict: unexpected keys \['beta1', 'beta2', 'm/W', 'v/W'\]; it keeps \['iter', 'lr'\]$"):
        SGD().load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: missing keys \['beta1', 'beta2'\]"):
        Adam().load_state_dict(SGD().state_dict())


# --- the book's chapter 6 function ----------------------------------------------------------------

CONVERGING = {
    "sgd": {"lr": 0.95},
    "momentum": {"lr": 0.1},
    "nesterov": {"lr": 0.1},
    "adagrad": {"lr": 1.5},
    "rmsprop": {"lr": 0.1},
    "adam": {"lr": 0.3},
    "adamw": {"lr": 0.3},
}


@pytest.mark.parametrize("name", CONVERGING)
def test_each_optimizer_minimizes_the_books_function(device, name):
    """f(x, y) = x²/20 + y², from (-7, 2), as in the book's figures 6-3 to 6-8."""
    params = to_device({"x": np.array([-7.0]), "y": np.array([2.0])}, device)
    optimizer = get_optimizer(name, **CONVERGING[name])
    for _ in range(200):
        optimizer.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
    x, y = float(to_numpy(params["x"])[0]), float(to_numpy(params["y"])[0])
    assert abs(x) < 1e-2 and abs(y) < 1e-2, (name, x, y)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_python_float_parameters_are_replaced_by_their_update_as_in_the_books_chapter_6_sketch(name):
    """The book's optimizer_compare_naive.py keeps x and y as floats and gives float gradients."""
    params = {"x": -7.0, "y": 2.0}
    optimizer = get_optimizer(name, lr=0.1)
    gradients = []
    for _ in range(3):
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        gradients.append(grads)
        optimizer.update(params, grads)
        assert type(params["x"]) is float and type(params["y"]) is float
    for key, start in (("x", -7.0), ("y", 2.0)):
        reference = reference_steps(name, {"lr": 0.1}, [start], [np.array([g[key]]) for g in gradients])
        assert params[key] == pytest.approx(float(reference[-1][0]), rel=1e-12)


@pytest.mark.parametrize("kind", [np.float32, np.float64])
def test_numpy_scalar_parameters_keep_their_type(kind):
    params = {"w": kind(1.5)}
    SGD(lr=0.5).update(params, {"w": 1.0})
    assert type(params["w"]) is kind and params["w"] == kind(1.0)


def test_zero_d_array_parameters_are_updated_in_place_and_take_python_float_gradients(device):
    w = to_device(np.array(3.0, dtype=np.float32), device)
    params = {"w": w}
    Momentum(lr=0.5).update(params, {"w": 2.0})
    assert params["w"] is w and w.dtype == np.float32
    assert float(to_numpy(w)) == pytest.approx(2.0)


def test_a_scalar_parameter_with_an_array_gradient_is_an_error():
    with pytest.raises(ValueError, match=r"SGD: 'x' is a scalar, but its gradient has shape \(2,\)"):
        SGD().update({"x": 1.0}, {"x": np.ones(2)})


def test_adamw_decays_the_weights_without_a_gradient(device):
    params = to_device({"W": np.full((2, 2), 2.0, np.float32)}, device)
    optimizer = AdamW(lr=0.1, weight_decay=0.5)
    for _ in range(3):
        optimizer.update(params, {"W": to_device(np.zeros((2, 2), np.float32), device)})
    np.testing.assert_allclose(to_numpy(params["W"]), 2.0 * (1 - 0.1 * 0.5) ** 3, rtol=1e-6)
    assert params["W"].dtype == np.float32


# --- errors --------------------------------------------------------------------------------------


def test_a_gradient_for_an_unknown_parameter_is_an_error(device):
    params = to_device({"W1": np.ones(2)}, device)
    with pytest.raises(ValueError, match=r"Adam: gradients for unknown parameters \['W2'\]; the parameters are \['W1'\]"):
        Adam().update(params, to_device({"W2": np.ones(2)}, device))


@pytest.mark.parametrize("name", CASES)
def test_a_gradient_of_another_dtype_is_an_error_on_every_device(device, name):
    params = to_device({"W1": np.ones(3, dtype=np.float32)}, device)
    optimizer = get_optimizer(name)
    with pytest.raises(ValueError, match=r"gradient 'W1' is float64 but the parameter is float32"):
        optimizer.update(params, to_device({"W1": np.ones(3)}, device))
    np.testing.assert_array_equal(to_numpy(params["W1"]), 1)


def test_a_gradient_of_another_shape_is_an_error(device):
    params = to_device({"W1": np.ones((2, 3))}, device)
    optimizer = Momentum()
    with pytest.raises(ValueError, match=r"gradient 'W1' has shape \(3, 2\) but the parameter has shape \(2, 3\)"):
        optimizer.update(params, to_device({"W1": np.ones((3, 2))}, device))
    assert optimizer.iter == 0
    np.testing.assert_array_equal(to_numpy(params["W1"]), 1)


def test_a_loaded_state_of_another_shape_is_an_error_before_any_change(device):
    params = to_device({"W1": np.ones(2), "W2": np.ones((2, 2))}, device)
    optimizer = Adam()
    optimizer.load_state_dict({"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "iter": 4, "m/W2": np.zeros(3), "v/W2": np.zeros(3)})
    with pytest.raises(ValueError, match=r"Adam: state m/W2 has shape \(3,\) but the parameter has shape \(2, 2\)"):
        optimizer.update(params, to_device({"W1": np.ones(2), "W2": np.ones((2, 2))}, device))
    assert optimizer.iter == 4
    np.testing.assert_array_equal(to_numpy(params["W1"]), 1)


def test_a_gradient_on_another_device_is_an_error(device):
    if device == "cpu":
        pytest.skip("needs a GPU: the gradient stays on the host while the parameter is on the GPU")
    params = to_device({"W": np.ones(2)}, device)
    with pytest.raises(DeviceError, match=f"SGD: gradient 'W' is on cpu but the parameter is on {device}"):
        SGD().update(params, {"W": np.ones(2)})


def test_unknown_names_and_bad_hyperparameters_are_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adamax'; valid names are sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw"):
        get_optimizer("adamax")
    with pytest.raises(TypeError, match="SGD: .*momentum.*its parameters are lr"):
        get_optimizer("sgd", momentum=0.9)
    with pytest.raises(ValueError, match=r"Momentum: momentum must be in \[0, 1\), got 1.5"):
        Momentum(momentum=1.5)
    with pytest.raises(ValueError, match="SGD: lr must be >= 0"):
        SGD(lr=-1)
