"""The book's networks: gradients, devices, dtypes, and the book's defects fixed."""

import pickle
import re

import numpy as np
import pytest

import xpnet
from xpnet import to_numpy
from xpnet.gradient import check_network_gradient
from xpnet.layers import Dropout
from xpnet.nets import DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet
from xpnet.safe_pickle import UnsafePickleError


def data(rng, shape, classes=10):
    return rng.standard_normal(shape), rng.integers(0, classes, shape[0])


def away_from_kinks(net, rng):
    """Nonzero biases, so that no ReLU input sits exactly at 0 (where a dead input row or padding puts it)."""
    for name, p in net.params.items():
        if name.startswith("b"):
            p += xpnet.to_device(0.1 * rng.standard_normal(p.shape), net.device)
    return net


def small_convnet(**kwargs):
    return SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
                         hidden_size=6, output_size=4, **kwargs)


@pytest.mark.parametrize("make", [
    lambda: MultiLayerNet(5, [4, 3], 3, weight_decay_lambda=0.1, dtype=np.float64),
    lambda: MultiLayerNet(5, [4], 3, activation="sigmoid", weight_init_std="xavier", dtype=np.float64),
    lambda: MultiLayerNetExtend(5, [4, 3], 3, use_batchnorm=True, use_dropout=True, dtype=np.float64),
], ids=["mlp-relu-decay", "mlp-sigmoid", "extend-bn-dropout"])
def test_fully_connected_gradients_match_numerical(device, rng, make):
    xpnet.set_device(device)
    x, t = data(rng, (6, 5), 3)
    check_network_gradient(away_from_kinks(make(), rng), x, t, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pool", [True, False], ids=["pooled", "without-pooling"])
def test_simple_convnet_gradients_match_numerical(device, rng, pool):
    xpnet.set_device(device)
    x, t = data(rng, (3, 1, 8, 8), 4)
    net = small_convnet(weight_init_std="he", dtype=np.float64, pool=pool)
    check_network_gradient(away_from_kinks(net, rng), x, t, rtol=1e-4, atol=1e-6)


def test_deep_convnet_gradient_along_random_directions(device, rng):
    xpnet.set_device(device)
    x, t = data(rng, (2, 1, 28, 28))
    check_network_gradient(away_from_kinks(DeepConvNet(dtype=np.float64), rng), x, t, directions=3, rtol=1e-5, atol=1e-8)


def test_numerical_gradient_of_a_float32_network_agrees_with_backpropagation_to_float32_rounding(device, rng):
    """The book's check (batch normalization on a batch of two) in xpnet's float32: the central differences
    are taken in float64, so they agree with backpropagation where float32 differences miss by 1e-3."""
    xpnet.set_device(device)
    net = away_from_kinks(MultiLayerNetExtend(20, [6, 6], 10, use_batchnorm=True), rng)
    x, t = data(rng, (2, 20))
    statistics = {k: to_numpy(v).copy() for k, v in net.state().items() if "." in k}
    analytic, numerical = net.gradient(x, t), net.numerical_gradient(x, t)
    for name, grad in numerical.items():
        assert grad.dtype == np.float32 and xpnet.backend.device_of(grad) == device
        np.testing.assert_allclose(to_numpy(grad), to_numpy(analytic[name]), rtol=1e-3, atol=1e-5, err_msg=name)
    for key, value in statistics.items():  # the check's losses leave the running statistics alone
        np.testing.assert_array_equal(to_numpy(net.state()[key]), value, err_msg=key)


def test_deep_convnet_has_no_dropout_after_its_last_affine_layer():
    layers = DeepConvNet().layers
    assert list(layers)[-3:] == ["Relu7", "Dropout1", "Affine2"]  # the book adds Dropout2 after Affine2
    assert sum(isinstance(layer, Dropout) for layer in layers.values()) == 1


def test_evaluation_runs_dropout_in_test_mode(device, rng):
    xpnet.set_device(device)
    net = DeepConvNet()
    x, t = data(rng, (4, 1, 28, 28))
    assert float(net.loss(x, t)) == float(net.loss(x, t))  # deterministic: no dropout masks
    scores = [to_numpy(net.predict(x)) for _ in range(2)]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert net.accuracy(x, t) == np.mean(scores[0].argmax(axis=1) == t)


@pytest.mark.parametrize("make, shape", [
    (lambda: MultiLayerNetExtend(784, [50, 50], 10, use_batchnorm=True, use_dropout=True), (8, 784)),
    (lambda: SimpleConvNet(), (8, 1, 28, 28)),
    (lambda: DeepConvNet(), (8, 1, 28, 28)),
], ids=["extend", "simple_convnet", "deep_convnet"])
def test_networks_are_float32_on_their_device(device, rng, make, shape):
    xpnet.set_device(device)
    net = make()
    x, t = data(rng, shape)
    x = x.astype(np.float32)
    assert net.device == device
    assert net.predict(x).shape == (8, 10) and net.predict(x).dtype == np.float32
    assert all(g.dtype == np.float32 and g.shape == net.params[k].shape for k, g in net.gradient(x, t).items())
    right = to_numpy(net.predict(x)).argmax(axis=1) == t
    assert net.accuracy(x, t, batch_size=3) == right.sum() / 8  # batches of 3, 3 and 2


def test_same_seed_gives_the_same_weights_on_every_device(device):
    xpnet.seed(5)
    on_cpu = {k: to_numpy(v) for k, v in SimpleConvNet().params.items()}
    xpnet.set_device(device)
    xpnet.seed(5)
    elsewhere = SimpleConvNet().params
    for k in on_cpu:
        np.testing.assert_array_equal(to_numpy(elsewhere[k]), on_cpu[k])


def test_to_moves_parameters_and_statistics_and_keeps_layers_bound(device, rng):
    net = MultiLayerNetExtend(6, [5], 3, use_batchnorm=True)
    x, t = data(rng, (4, 6), 3)
    net.gradient(x, t)  # creates the running statistics
    expected = to_numpy(net.predict(x))
    net.to(device)
    assert net.device == device
    assert net.layers["Affine1"].W is net.params["W1"]
    assert xpnet.backend.device_of(net.layers["BatchNorm1"].running_mean) == device
    np.testing.assert_allclose(to_numpy(net.predict(x)), expected, rtol=1e-5)


def test_accuracy_takes_one_hot_labels(device, rng):
    xpnet.set_device(device)
    net = MultiLayerNet(4, [5], 3)
    x, t = data(rng, (10, 4), 3)
    assert net.accuracy(x, np.eye(3)[t]) == net.accuracy(x, t)


def test_accuracy_takes_a_column_of_index_labels(device, rng):
    xpnet.set_device(device)
    net = MultiLayerNet(4, [5], 3)
    x = rng.standard_normal((25, 4))
    t = to_numpy(net.predict(x)).argmax(axis=1)  # labels the network gets all right
    assert net.accuracy(x, t.reshape(-1, 1), batch_size=10) == net.accuracy(x, t, batch_size=10) == 1.0


@pytest.mark.parametrize("labels, message", [
    (np.zeros(12, np.int64), r"accuracy: labels must be indices \(10,\) or one-hot \(10, 3\), got shape \(12,\); "
                             r"12 labels for 10 examples"),
    (np.zeros((8, 1), np.int64), r"got shape \(8, 1\); 8 labels for 10 examples"),
    (np.full(10, 3), r"accuracy: labels must lie in 0..2, got 3..3"),
    (np.full(10, 1.0), r"accuracy: index labels must be integers, got dtype float64"),
])
def test_accuracy_refuses_labels_that_do_not_fit_instead_of_returning_a_number(device, rng, labels, message):
    xpnet.set_device(device)
    with pytest.raises(ValueError, match=message):
        MultiLayerNet(4, [5], 3).accuracy(rng.standard_normal((10, 4)), labels, batch_size=4)


def test_weight_decay_adds_to_the_loss(device, rng):
    xpnet.set_device(device)
    xpnet.seed(1)
    plain = MultiLayerNet(4, [5], 3)
    xpnet.seed(1)
    decayed = MultiLayerNet(4, [5], 3, weight_decay_lambda=0.5)
    x, t = data(rng, (4, 4), 3)
    penalty = 0.25 * sum(float((to_numpy(plain.params[k]) ** 2).sum()) for k in ("W1", "W2"))
    assert float(decayed.loss(x, t)) == pytest.approx(float(plain.loss(x, t)) + penalty, rel=1e-5)


def test_simple_convnet_pooled_size_floors_odd_maps():
    net = SimpleConvNet(input_dim=(1, 9, 9), conv_param={"filter_num": 2, "filter_size": 2, "pad": 0, "stride": 1})
    assert net.params["W2"].shape == (2 * 4 * 4, 100)  # 8x8 conv maps pool to 4x4


def test_simple_convnet_without_pooling_feeds_every_conv_output_to_the_affine_layer():
    pooled, plain = small_convnet(), small_convnet(pool=False)
    assert "Pool1" in pooled.layers and "Pool1" not in plain.layers
    assert plain.params["W2"].shape == (3 * 8 * 8, 6) and pooled.params["W2"].shape == (3 * 4 * 4, 6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="activation must be one of"):
        MultiLayerNet(4, [5], 3, activation="tanh")
    with pytest.raises(ValueError, match="weight_init_std must be"):
        MultiLayerNet(4, [5], 3, weight_init_std="lecun")


def test_load_state_checks_batchnorm_statistics_before_copying_anything(device, rng):
    xpnet.set_device(device)
    net = MultiLayerNetExtend(5, [4, 3], 3, use_batchnorm=True)
    net.loss(rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6))  # running statistics exist
    before = {k: to_numpy(v).copy() for k, v in net.state().items()}
    state = {k: to_numpy(v) + 1 for k, v in net.state().items()}
    state["BatchNorm1.running_mean"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(ValueError, match=r"BatchNorm1.running_mean has shape \(7,\) but the network's is \(4,\)"):
        net.load_state(state)
    state["BatchNorm1.running_mean"] = np.zeros(4, dtype=np.float32)
    del state["BatchNorm2.running_var"]
    with pytest.raises(ValueError, match=r"missing entries \['BatchNorm2.running_var'\]"):
        net.load_state(state)
    for k, v in net.state().items():
        np.testing.assert_array_equal(to_numpy(v), before[k], err_msg=k)


# --- bad input: one clear line ---------------------------------------------------------------------


def tiny_nets():
    return {"MultiLayerNet": (MultiLayerNet(5, [4], 3), (5,)),
            "SimpleConvNet": (small_convnet(), (1, 8, 8))}


@pytest.mark.parametrize("name", ["MultiLayerNet", "SimpleConvNet"])
@pytest.mark.parametrize("call", ["predict", "loss", "gradient", "accuracy"])
def test_an_empty_batch_is_refused_in_one_line(device, name, call):
    xpnet.set_device(device)
    net, shape = tiny_nets()[name]
    x, t = np.zeros((0, *shape), np.float32), np.zeros(0, np.int64)
    args = (x,) if call == "predict" else (x, t)
    expected = re.escape(f"{name}.{call}: the batch is empty (x has shape {(0, *shape)})")
    with pytest.raises(ValueError, match=f"^{expected}$"):
        getattr(net, call)(*args)


def test_lists_are_converted_to_arrays(device, rng):
    xpnet.set_device(device)
    net = MultiLayerNet(5, [4], 3)
    x, t = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6)
    assert float(net.loss(x.tolist(), t.tolist())) == float(net.loss(x, t))
    from_lists, from_arrays = net.gradient(x.tolist(), t.tolist()), net.gradient(x, t)
    for key, grad in from_arrays.items():
        np.testing.assert_array_equal(to_numpy(from_lists[key]), to_numpy(grad), err_msg=key)
    assert net.accuracy(x.tolist(), t.tolist(), batch_size=4) == net.accuracy(x, t, batch_size=4)
    assert to_numpy(net.predict(x.tolist())).shape == (6, 3)


def test_inputs_that_are_not_numbers_are_refused(device):
    xpnet.set_device(device)
    net = MultiLayerNet(2, [4], 3)
    with pytest.raises(ValueError, match=r"^MultiLayerNet.loss: x must hold numbers, got dtype <U1$"):
        net.loss([["a", "b"]], [0])


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-5, ValueError), (2.5, TypeError)])
def test_accuracy_refuses_a_batch_size_that_is_not_a_positive_integer(rng, batch_size, error):
    net = MultiLayerNet(5, [4], 3)
    x, t = data(rng, (6, 5), 3)
    with pytest.raises(error, match=rf"^MultiLayerNet.accuracy: batch_size must be a positive integer, "
                                    rf"got {batch_size}$"):
        net.accuracy(x, t, batch_size=batch_size)


@pytest.mark.parametrize("make, error, message", [
    (lambda: MultiLayerNet(0, [4], 3), ValueError, r"MultiLayerNet: input_size must be a positive integer, got 0"),
    (lambda: MultiLayerNet(5, [4, 0], 3), ValueError,
     r"MultiLayerNet: hidden_size_list\[1\] must be a positive integer, got 0"),
    (lambda: MultiLayerNet(5, [4], 0), ValueError, r"MultiLayerNet: output_size must be a positive integer, got 0"),
    (lambda: MultiLayerNet(5.5, [4], 3), TypeError, r"MultiLayerNet: input_size must be a positive integer, got 5.5"),
    (lambda: MultiLayerNetExtend(5, [-2], 3, use_batchnorm=True), ValueError,
     r"MultiLayerNetExtend: hidden_size_list\[0\] must be a positive integer, got -2"),
    (lambda: SimpleConvNet(input_dim=(1, 0, 28)), ValueError,
     r"SimpleConvNet: input_dim\[1\] must be a positive integer, got 0"),
    (lambda: SimpleConvNet(input_dim=(1, 28)), ValueError,
     r"SimpleConvNet: input_dim must be \(C, H, W\), got \(1, 28\)"),
    (lambda: SimpleConvNet(conv_param={"filter_num": 0}), ValueError,
     r"SimpleConvNet: conv_param\['filter_num'\] must be a positive integer, got 0"),
    (lambda: SimpleConvNet(conv_param={"filter_size": 0}), ValueError,
     r"SimpleConvNet: conv_param\['filter_size'\] must be a positive integer, got 0"),
    (lambda: SimpleConvNet(conv_param={"pad": -1}), ValueError,
     r"SimpleConvNet: conv_param\['pad'\] must be an integer >= 0, got -1"),
    (lambda: SimpleConvNet(hidden_size=0), ValueError, r"SimpleConvNet: hidden_size must be a positive integer, got 0"),
    (lambda: SimpleConvNet(output_size=0), ValueError, r"SimpleConvNet: output_size must be a positive integer, got 0"),
    (lambda: DeepConvNet(hidden_size=0), ValueError, r"DeepConvNet: hidden_size must be a positive integer, got 0"),
    (lambda: DeepConvNet(conv_param_3={"filter_num": 0}), ValueError,
     r"DeepConvNet: conv_param_3\['filter_num'\] must be a positive integer, got 0"),
    (lambda: DeepConvNet(conv_param_1={"stride": 0}), ValueError,
     r"DeepConvNet: conv_param_1\['stride'\] must be a positive integer, got 0"),
    (lambda: DeepConvNet(input_dim=(0, 28, 28)), ValueError,
     r"DeepConvNet: input_dim\[0\] must be a positive integer, got 0"),
], ids=lambda value: "" if callable(value) or isinstance(value, type) else value.split(":")[0] + value.split(":")[1][:20])
def test_sizes_that_are_not_positive_integers_are_named(make, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        make()


@pytest.mark.parametrize("key", ["W1", "BatchNorm1.running_var"])
def test_load_state_refuses_values_that_are_not_floating_point_and_copies_nothing(device, rng, key):
    xpnet.set_device(device)
    net = MultiLayerNetExtend(5, [4], 3, use_batchnorm=True)
    net.loss(rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6))  # running statistics exist
    before = {k: to_numpy(v).copy() for k, v in net.state().items()}
    state = {k: to_numpy(v) + 1 for k, v in net.state().items()}
    state[key] = state[key].astype(np.int64)
    with pytest.raises(ValueError, match=rf"{re.escape(key)}'? is int64, expected float32 like the network's"):
        net.load_state(state)
    for k, v in net.state().items():
        np.testing.assert_array_equal(to_numpy(v), before[k], err_msg=k)


# --- the book's pickled weights ------------------------------------------------------------------


def book_pickle(path, net, rng):
    """Weights for ``net`` as the book's own class pickles them: a dict of float64 arrays, protocol 4."""
    params = {k: 0.3 * rng.standard_normal(p.shape) for k, p in net.params.items()}
    path.write_bytes(pickle.dumps(params, protocol=4))
    return params


def test_a_book_pickle_of_simple_convnet_loads_safely_and_unchanged(device, rng, tmp_path):
    xpnet.set_device(device)
    net, reference = small_convnet(), small_convnet()
    params = book_pickle(tmp_path / "params.pkl", net, rng)
    net.load_params(tmp_path / "params.pkl")
    reference.load_state(params)
    assert net.params["W1"].dtype == np.float32 and net.device == device
    x = rng.standard_normal((3, 1, 8, 8))
    np.testing.assert_array_equal(to_numpy(net.predict(x)), to_numpy(reference.predict(x)))


def test_a_book_pickle_of_deep_convnet_gives_the_books_test_time_scores(device, rng, tmp_path):
    """The book's Dropout scales by 0.5 at test time after Relu7 and after Affine2: scores 0.5 (0.5 h W8 + b8)."""
    xpnet.set_device(device)
    net, raw = DeepConvNet(), DeepConvNet()
    params = book_pickle(tmp_path / "deep_convnet_params.pkl", net, rng)
    net.load_params(tmp_path / "deep_convnet_params.pkl")
    raw.load_state(params)
    x = rng.random((2, 1, 28, 28))
    h = xpnet.to_device(x, device)
    for name, layer in raw.layers.items():
        if name == "Dropout1":
            break
        h = layer.forward(h)
    W8, b8 = params["W8"].astype(np.float32), params["b8"].astype(np.float32)
    books_scores = 0.5 * ((0.5 * to_numpy(h)) @ W8 + b8)
    np.testing.assert_allclose(to_numpy(net.predict(x)), books_scores, rtol=1e-5, atol=1e-6)


def test_a_hostile_pickle_is_refused_by_load_params(tmp_path):
    path = tmp_path / "params.pkl"  # what pickle.dumps writes for an object whose __reduce__ is (os.system, ("true",))
    path.write_bytes(b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.")
    with pytest.raises(UnsafePickleError, match="params.pkl: refused the global posix.system"):
        small_convnet().load_params(path)
