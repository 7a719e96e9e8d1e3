"""The book's `common` and `dataset` packages on xpnet: every name, the book's signatures, NumPy for the scripts."""

import importlib
import inspect
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import backend
from xpnet.datasets import DatasetError
from xpnet.datasets import mnist as xpnet_mnist
from xpnet.tools.book import SHIM, host

# What `from <module> import *` hands a script in the book's repository: every public name of each module.
BOOK_NAMES = {
    "common.functions": "cross_entropy_error identity_function np relu relu_grad sigmoid sigmoid_grad softmax "
                        "softmax_loss step_function sum_squared_error",
    "common.util": "col2im conv_output_size im2col np shuffle_dataset smooth_curve",
    "common.layers": "Affine BatchNormalization Convolution Dropout Pooling Relu Sigmoid SoftmaxWithLoss col2im "
                     "cross_entropy_error identity_function im2col np relu relu_grad sigmoid sigmoid_grad softmax "
                     "softmax_loss step_function sum_squared_error",
    "common.gradient": "np numerical_gradient numerical_gradient_2d",
    "common.optimizer": "AdaGrad Adam Momentum Nesterov RMSprop SGD np",
    "common.multi_layer_net": "Affine BatchNormalization Convolution Dropout MultiLayerNet OrderedDict Pooling Relu "
                              "Sigmoid SoftmaxWithLoss col2im cross_entropy_error identity_function im2col np "
                              "numerical_gradient os relu relu_grad sigmoid sigmoid_grad softmax softmax_loss "
                              "step_function sum_squared_error sys",
    "common.multi_layer_net_extend": "Affine BatchNormalization Convolution Dropout MultiLayerNetExtend OrderedDict "
                                     "Pooling Relu Sigmoid SoftmaxWithLoss col2im cross_entropy_error "
                                     "identity_function im2col np numerical_gradient os relu relu_grad sigmoid "
                                     "sigmoid_grad softmax softmax_loss step_function sum_squared_error sys",
    "common.trainer": "AdaGrad Adam Momentum Nesterov RMSprop SGD Trainer np os sys",
    "dataset.mnist": "dataset_dir download_mnist gzip img_dim img_size init_mnist key_file load_mnist np os pickle "
                     "save_file test_num train_num url_base urllib",
}

# The book's signatures, as inspect prints them.
BOOK_SIGNATURES = {
    "common.functions.identity_function": "(x)",
    "common.functions.step_function": "(x)",
    "common.functions.sigmoid": "(x)",
    "common.functions.sigmoid_grad": "(x)",
    "common.functions.relu": "(x)",
    "common.functions.relu_grad": "(x)",
    "common.functions.softmax": "(x)",
    "common.functions.sum_squared_error": "(y, t)",
    "common.functions.cross_entropy_error": "(y, t)",
    "common.functions.softmax_loss": "(X, t)",
    "common.util.smooth_curve": "(x)",
    "common.util.shuffle_dataset": "(x, t)",
    "common.util.conv_output_size": "(input_size, filter_size, stride=1, pad=0)",
    "common.util.im2col": "(input_data, filter_h, filter_w, stride=1, pad=0)",
    "common.util.col2im": "(col, input_shape, filter_h, filter_w, stride=1, pad=0)",
    "common.layers.Relu": "()",
    "common.layers.Sigmoid": "()",
    "common.layers.Affine": "(W, b)",
    "common.layers.SoftmaxWithLoss": "()",
    "common.layers.Dropout": "(dropout_ratio=0.5)",
    "common.layers.BatchNormalization": "(gamma, beta, momentum=0.9, running_mean=None, running_var=None)",
    "common.layers.Convolution": "(W, b, stride=1, pad=0)",
    "common.layers.Pooling": "(pool_h, pool_w, stride=2, pad=0)",
    "common.gradient.numerical_gradient_2d": "(f, X)",
    "common.gradient.numerical_gradient": "(f, x)",
    "common.optimizer.SGD": "(lr=0.01)",
    "common.optimizer.Momentum": "(lr=0.01, momentum=0.9)",
    "common.optimizer.Nesterov": "(lr=0.01, momentum=0.9)",
    "common.optimizer.AdaGrad": "(lr=0.01)",
    "common.optimizer.RMSprop": "(lr=0.01, decay_rate=0.99)",
    "common.optimizer.Adam": "(lr=0.001, beta1=0.9, beta2=0.999)",
    "common.multi_layer_net.MultiLayerNet": "(input_size, hidden_size_list, output_size, activation='relu', "
                                            "weight_init_std='relu', weight_decay_lambda=0)",
    "common.multi_layer_net_extend.MultiLayerNetExtend": "(input_size, hidden_size_list, output_size, "
                                                         "activation='relu', weight_init_std='relu', "
                                                         "weight_decay_lambda=0, use_dropout=False, "
                                                         "dropout_ration=0.5, use_batchnorm=False)",
    "common.trainer.Trainer": "(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100, "
                              "optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None, "
                              "verbose=True)",
    "dataset.mnist.download_mnist": "()",
    "dataset.mnist.init_mnist": "()",
    "dataset.mnist.load_mnist": "(normalize=True, flatten=True, one_hot_label=False)",
}

# Where xpnet's signature only begins with the book's: further parameters, each with a default.
EXTENDED = {"common.layers.Pooling", "common.gradient.numerical_gradient_2d", "common.gradient.numerical_gradient"}


@pytest.fixture
def book(monkeypatch):
    """``book('common.layers')`` imports a module of the book's packages from xpnet's folder of them."""
    monkeypatch.syspath_prepend(str(SHIM))
    for name in [n for n in sys.modules if n.split(".")[0] in ("common", "dataset")]:
        monkeypatch.delitem(sys.modules, name)
    yield importlib.import_module
    for name in [n for n in sys.modules if n.split(".")[0] in ("common", "dataset")]:
        del sys.modules[name]


@pytest.mark.parametrize("module", BOOK_NAMES)
def test_every_public_name_of_the_books_module_is_there_and_handed_out_by_a_star_import(book, module):
    names = set(BOOK_NAMES[module].split())
    assert names <= set(dir(book(module)))
    star = {}
    exec(f"from {module} import *", star)
    assert names <= set(star), names - set(star)
    assert star["np"] is np  # the scripts' array math stays NumPy's


@pytest.mark.parametrize("qualified", BOOK_SIGNATURES)
def test_the_books_signatures(book, qualified):
    module, name = qualified.rsplit(".", 1)
    book_params = list(_parameters(BOOK_SIGNATURES[qualified]))
    ours = list(inspect.signature(getattr(book(module), name)).parameters.values())
    if qualified in EXTENDED:
        assert all(p.default is not p.empty for p in ours[len(book_params):]), ours
        ours = ours[:len(book_params)]
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in book_params]


def _parameters(text):
    exec(f"def f{text}: pass", {}, scope := {})
    return inspect.signature(scope["f"]).parameters.values()


# --- NumPy for the scripts, whatever the device ------------------------------------------------


def test_the_networks_compute_on_the_device_and_hand_numpy_back(book, device, rng):
    xpnet.set_device(device)
    MultiLayerNetExtend = book("common.multi_layer_net_extend").MultiLayerNetExtend
    network = MultiLayerNetExtend(input_size=6, hidden_size_list=[5, 4], output_size=3, use_dropout=True,
                                  use_batchnorm=True)
    x, t = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    assert all(backend.device_of(p) == device for p in network.params.values())
    assert type(network.predict(x)) is np.ndarray and network.predict(x).shape == (8, 3)
    assert isinstance(network.loss(x, t), np.floating)
    assert type(network.accuracy(x, t)) is float
    grads = network.gradient(x, t)
    assert grads.keys() == network.params.keys() and all(type(g) is np.ndarray for g in grads.values())
    assert (np.argmax(network.predict(x), axis=1) == t).shape == (8,)  # what the book's scripts do with them
    before = xpnet.to_numpy(network.params["W1"]).copy()
    book("common.optimizer").Adam().update(network.params, grads)  # host gradients, parameters on the device
    assert backend.device_of(network.params["W1"]) == device
    assert not np.array_equal(xpnet.to_numpy(network.params["W1"]), before)


def test_the_numerical_gradient_of_a_network_is_numpy(book, device, rng):
    xpnet.set_device(device)
    network = book("common.multi_layer_net").MultiLayerNet(input_size=3, hidden_size_list=[2], output_size=2)
    grads = network.numerical_gradient(rng.standard_normal((2, 3)), np.array([0, 1]))
    assert all(type(g) is np.ndarray for g in grads.values())


class FakeGpuArray:
    """What a CuPy array is to xpnet.backend: a type of the cupy package that get() copies to the host."""

    __module__ = "cupy"

    def __init__(self, array):
        self.array, self.shape = array, array.shape

    def get(self):
        return self.array


class NetworkOnAFakeGpu:
    """Stands for an xpnet Network whose results are GPU arrays (no GPU needed)."""

    def _scores(self, x, train_flg):
        return FakeGpuArray(np.ones((len(x), 3), np.float32))

    def _loss(self, x, t, train_flg):
        return FakeGpuArray(np.array(1.5, np.float32))

    def gradient(self, x, t):
        return {"W": FakeGpuArray(np.ones((2, 3), np.float32))}

    def numerical_gradient(self, x, t):
        return {"W": FakeGpuArray(np.zeros((2, 3), np.float32))}


class HostNetworkOnAFakeGpu(host.HostResults, NetworkOnAFakeGpu):
    pass


def test_what_a_script_receives_from_a_network_on_a_gpu_is_numpy():
    network, x = HostNetworkOnAFakeGpu(), np.zeros((4, 2))
    assert type(network.predict(x)) is np.ndarray
    assert type(network.loss(x, None)) is np.float32
    for grads in (network.gradient(x, None), network.numerical_gradient(x, None)):
        assert type(grads["W"]) is np.ndarray
    assert type(network.device_gradient(x, None)["W"]) is FakeGpuArray  # what the Trainer uses


class RecordingOptimizer:
    def update(self, params, grads):
        self.received = grads


class HostRecordingOptimizer(host.HostGradients, RecordingOptimizer):
    pass


def test_the_optimizers_move_host_gradients_to_their_parameters_gpu(monkeypatch):
    monkeypatch.setattr(host, "device_of", lambda a: "gpu:0" if isinstance(a, FakeGpuArray) else "cpu")
    moved = []
    monkeypatch.setattr(host, "to_device", lambda a, device: moved.append(device) or FakeGpuArray(a))
    optimizer, grad = HostRecordingOptimizer(), np.ones(2)
    optimizer.update({"W": FakeGpuArray(np.zeros(2)), "x": 1.0}, {"W": grad, "x": 0.5})
    assert moved == ["gpu:0"] and optimizer.received["W"].array is grad and optimizer.received["x"] == 0.5


def test_the_trainer_trains_the_networks_with_their_device_gradients(book, device, rng):
    xpnet.set_device(device)
    network = book("common.multi_layer_net").MultiLayerNet(input_size=4, hidden_size_list=[8], output_size=2)
    host_calls = []
    network.gradient = lambda x, t: host_calls.append(1)  # the NumPy copies are for scripts, not for training
    x = rng.standard_normal((60, 4)).astype(np.float32)
    t = (x[:, 0] > 0).astype(np.int64)
    trainer = book("common.trainer").Trainer(network, x[:40], t[:40], x[40:], t[40:], epochs=3, mini_batch_size=10,
                                             optimizer="Adam", optimizer_param={"lr": 0.05}, verbose=False)
    trainer.train()
    assert host_calls == [] and len(trainer.train_loss_list) == 12 and trainer.final_test_acc >= 0.8


# --- dataset.mnist ---------------------------------------------------------------------------------


SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_shared_mnist = pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                                        reason=f"no MNIST test files in {SHARED_MNIST} (the project's ../shared/data/mnist)")


@pytest.fixture(scope="module")
def t10k_raw():
    """MNIST's 10,000 checksum-verified test images as the core loads them: uint8 (N, 1, 28, 28), uint8 labels."""
    from xpnet.datasets import load_mnist_test_split

    return load_mnist_test_split(str(SHARED_MNIST), train_size=8000, normalize=False, flatten=False)


@needs_shared_mnist
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot_label", [True, False])
def test_load_mnist_returns_the_books_layout(book, monkeypatch, t10k_raw, normalize, flatten, one_hot_label):
    monkeypatch.setenv("XPNET_BOOK_MNIST", f"t10k:{SHARED_MNIST}")
    (x, t), (x_test, t_test) = book("dataset.mnist").load_mnist(normalize=normalize, flatten=flatten,
                                                                one_hot_label=one_hot_label)
    (raw_x, raw_t), (raw_x_test, raw_t_test) = t10k_raw
    assert x.shape == ((8000, 784) if flatten else (8000, 1, 28, 28))
    assert x_test.shape == ((2000, 784) if flatten else (2000, 1, 28, 28))
    assert x.dtype == x_test.dtype == (np.float32 if normalize else np.uint8)
    pixels = raw_x.reshape(x.shape).astype(np.float32) / 255.0 if normalize else raw_x.reshape(x.shape)
    np.testing.assert_array_equal(x, pixels)  # the same pixels, row by row: flatten is a reshape, normalize /255
    if normalize:
        assert x.min() == 0.0 and x.max() == 1.0
    assert t.shape == ((8000, 10) if one_hot_label else (8000,)) and len(t_test) == 2000
    assert t.dtype == t_test.dtype == (np.float32 if one_hot_label else np.uint8)
    labels = np.argmax(t, axis=1) if one_hot_label else t
    np.testing.assert_array_equal(labels, raw_t)
    if one_hot_label:
        assert set(np.unique(t)) == {0.0, 1.0} and (t.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(np.argmax(t_test, axis=1) if one_hot_label else t_test, raw_t_test)


def test_load_mnist_offline_says_which_files_to_put_where(book, tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path))
    monkeypatch.delenv("XPNET_BOOK_MNIST", raising=False)

    def offline(url, dest):
        raise OSError("Name or service not known")

    monkeypatch.setattr(xpnet_mnist, "_fetch", offline)
    with pytest.raises(DatasetError, match=f"Put the files by hand in {tmp_path / 'mnist'}"):
        book("dataset.mnist").load_mnist()


def test_the_t10k_substitute_says_what_it_loads_and_where_it_looked(book, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XPNET_BOOK_MNIST", f"t10k:{tmp_path}")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is missing"):
        book("dataset.mnist").load_mnist()
    err = capsys.readouterr().err
    assert f"XPNET_BOOK_MNIST=t10k:{tmp_path}: in place of MNIST" in err
    assert "the first 8,000 for training and the other 2,000 for testing" in err


def test_an_unknown_substitute_is_an_error(book, monkeypatch):
    monkeypatch.setenv("XPNET_BOOK_MNIST", "fashion")
    with pytest.raises(ValueError, match="XPNET_BOOK_MNIST='fashion': the one substitute for MNIST is 't10k'"):
        book("dataset.mnist").load_mnist()


@needs_shared_mnist
def test_the_t10k_substitute_splits_the_real_test_images_8000_2000(book, monkeypatch):
    monkeypatch.setenv("XPNET_BOOK_MNIST", f"t10k:{SHARED_MNIST}")
    (x, t), (x_test, t_test) = book("dataset.mnist").load_mnist(flatten=False, one_hot_label=True)
    assert x.shape == (8000, 1, 28, 28) and x_test.shape == (2000, 1, 28, 28) and t.shape == (8000, 10)


def test_the_trainer_takes_an_optimizer_object_with_the_books_default_optimizer_param(book, rng):
    network = book("common.multi_layer_net").MultiLayerNet(input_size=4, hidden_size_list=[3], output_size=2)
    x, t = rng.standard_normal((10, 4)).astype(np.float32), rng.integers(0, 2, 10)
    optimizer = book("common.optimizer").Momentum(lr=0.05)
    trainer = book("common.trainer").Trainer(network, x, t, x, t, epochs=1, mini_batch_size=5, optimizer=optimizer,
                                             verbose=False)
    assert trainer.optimizer is optimizer
