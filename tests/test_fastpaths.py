"""The CPU fast paths: each one switched off gives the results of the generic code it replaces."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnet
import xpnet.nets
from xpnet import fastpaths
from xpnet.layers import Convolution

ROOT = Path(__file__).resolve().parents[1]


def conv_results(rng, filters, channels):
    W = rng.standard_normal((filters, channels, 3, 3)).astype(np.float32)
    conv = Convolution(W, rng.standard_normal(filters).astype(np.float32), pad=1)
    x = rng.standard_normal((6, channels, 9, 7)).astype(np.float32)
    out = conv.forward(x)
    dx = conv.backward(np.sin(np.arange(out.size, dtype=np.float32)).reshape(out.shape))
    return [np.array(a) for a in (out, dx, conv.dW, conv.db)]


@pytest.mark.parametrize("name, filters, channels", [
    ("input_gradient_by_gather", 4, 3),  # 4 <= 2 * 3 filters: dx by gather
    ("products_by_filter_row", 16, 12),  # window rows of 3 * 12 values; dx by gather, by filter row too
    ("products_by_filter_row", 30, 12),  # 30 > 2 * 12 filters: dx scattered back from the columns
    ("columns_by_offset", 16, 1), ("columns_by_offset", 4, 3),  # few channels: columns one offset at a time
])
def test_a_convolution_without_the_fast_path_gives_the_same_results(name, filters, channels):
    fast = conv_results(np.random.default_rng(0), filters, channels)
    with fastpaths.disabled(name):
        assert not fastpaths.enabled(name)
        generic = conv_results(np.random.default_rng(0), filters, channels)
    assert fastpaths.enabled(name)
    for got, want in zip(fast, generic):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_products_by_filter_row_run_where_window_rows_are_wide_and_the_stride_is_one(monkeypatch):
    from xpnet import layers

    calls = []
    window_rows = layers.window_rows
    monkeypatch.setattr(layers, "window_rows", lambda *a, **k: calls.append(a[0].shape[-1]) or window_rows(*a, **k))
    rng = np.random.default_rng(0)
    conv_results(rng, 16, 12)  # forward, dW, dx: input rows of 3*12, dout rows of 3*16 values
    assert sorted(set(calls)) == [12, 16]
    calls.clear()
    conv_results(rng, 16, 8)  # rows of 3*8 = 24 < 32 values: im2col; dout rows of 48 for dx
    assert set(calls) == {16}
    calls.clear()
    W = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    conv = Convolution(W, np.zeros(16, np.float32), stride=2, pad=1)
    conv.backward(np.ones(conv.forward(rng.standard_normal((2, 16, 9, 9)).astype(np.float32)).shape, np.float32))
    assert calls == []  # stride 2: im2col


@pytest.mark.parametrize("channels, by_offset", [(1, True), (3, True), (4, False)])
def test_the_columns_by_offset_are_built_for_inputs_of_at_most_three_channels(monkeypatch, channels, by_offset):
    from xpnet import layers

    calls = []
    by_offsets = layers.im2col_by_offsets
    monkeypatch.setattr(layers, "im2col_by_offsets", lambda *a, **k: calls.append(1) or by_offsets(*a, **k))
    conv_results(np.random.default_rng(0), 6, channels)
    assert bool(calls) is by_offset


def test_network_gradients_do_not_depend_on_the_first_layer_skipping_dx():
    rng = np.random.default_rng(1)
    x, t = rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)
    net = xpnet.nets.SimpleConvNet()
    fast = net.gradient(x, t)
    with fastpaths.disabled("first_layer_without_input_gradient"):
        generic = net.gradient(x, t)
    for key in fast:
        np.testing.assert_array_equal(fast[key], generic[key])


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of the small networks and batches below, which are not worth a thread each (see the test of
    the policy): the by-slices paths must give the same results whatever they are worth."""
    monkeypatch.setattr(xpnet.nets.base, "SLICE_FLOPS_PER_LAYER", 1)


def inference_networks():
    from xpnet.nets import MultiLayerNetExtend

    xpnet.seed(4)
    return {"SimpleConvNet": xpnet.nets.SimpleConvNet(), "DeepConvNet": xpnet.nets.DeepConvNet(),
            "MultiLayerNetExtend": MultiLayerNetExtend(784, [50, 40], 10, use_batchnorm=True,
                                                       use_dropout=True, dropout_ration=0.3)}


@pytest.mark.parametrize("name", ["SimpleConvNet", "DeepConvNet", "MultiLayerNetExtend"])
def test_inference_by_slices_gives_the_scores_of_the_layer_by_layer_pass(name, small_slices):
    net = inference_networks()[name]
    rng = np.random.default_rng(3)
    x = rng.random((37, 1, 28, 28), dtype=np.float32)
    if name == "MultiLayerNetExtend":
        x = x.reshape(37, 784)
        net.gradient(x, rng.integers(0, 10, 37))  # batch statistics into the running ones
    xpnet.set_num_threads(3)
    try:
        assert net._infers_by_slices(x)
        fast, again = net.predict(x), net.predict(x)
        with fastpaths.disabled("inference_by_slices"):
            assert not net._infers_by_slices(x)
            generic = net.predict(x)
    finally:
        xpnet.set_num_threads(None)
    np.testing.assert_array_equal(fast, again)
    np.testing.assert_allclose(fast, generic, rtol=1e-5, atol=1e-5 * float(np.abs(generic).max()))


def test_inference_by_slices_is_for_evaluation_only_and_leaves_training_to_the_layers():
    net = inference_networks()["DeepConvNet"]
    x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)  # 560 MFLOP: worth two threads
    xpnet.set_num_threads(2)
    try:
        calls = []
        net._scores_by_slices = lambda x: calls.append(x) or None
        net.gradient(x, np.arange(32) % 10)  # training: the layers keep what backward needs
        assert calls == []
        net.predict(x)
        assert len(calls) == 1
    finally:
        xpnet.set_num_threads(None)


@pytest.mark.parametrize("name", ["SimpleConvNet", "DeepConvNet", "MultiLayerNet"])
def test_training_by_slices_gives_the_gradients_loss_and_dropout_masks_of_the_whole_batch(name, small_slices):
    from xpnet.nets import MultiLayerNet

    rng = np.random.default_rng(5)
    x, t = rng.random((37, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 37)
    results = {}
    for fast in (True, False):
        xpnet.seed(6)  # the same weights and the same generator state for the dropout masks
        net = (MultiLayerNet(784, [40, 30], 10, weight_decay_lambda=0.1) if name == "MultiLayerNet"
               else getattr(xpnet.nets, name)())
        inputs = x.reshape(37, 784) if name == "MultiLayerNet" else x
        xpnet.set_num_threads(3)
        try:
            if fast:
                assert net._trains_by_slices(inputs)
                grads = net.gradient(inputs, t)
            else:
                with fastpaths.disabled("training_by_slices"):
                    grads = net.gradient(inputs, t)
        finally:
            xpnet.set_num_threads(None)
        after = xpnet.backend.random_uniform(np, (4,))  # the generator went on from the same state
        results[fast] = ({key: np.array(value) for key, value in grads.items()}, float(net.last_layer.loss), after)
    (fast_grads, fast_loss, fast_after), (grads, loss, after) = results[True], results[False]
    assert fast_loss == pytest.approx(loss, rel=1e-6)
    np.testing.assert_array_equal(fast_after, after)
    assert fast_grads.keys() == grads.keys()
    for key in grads:
        np.testing.assert_allclose(fast_grads[key], grads[key], rtol=1e-5, atol=1e-6 * float(np.abs(grads[key]).max()),
                                   err_msg=key)


def test_a_network_with_batch_normalization_trains_on_the_whole_batch(small_slices):
    from xpnet.nets import MultiLayerNetExtend

    net = MultiLayerNetExtend(784, [40], 10, use_batchnorm=True)
    xpnet.set_num_threads(2)
    try:
        x = np.zeros((64, 784), np.float32)
        assert net._infers_by_slices(x) and not net._trains_by_slices(x)
    finally:
        xpnet.set_num_threads(None)


def test_a_network_with_a_layer_of_its_own_passes_the_batch_whole():
    class Scale:  # a user's layer: xpnet cannot know that copies of it may run at the same time
        def forward(self, x):
            return x * 2

        def backward(self, dout):
            return dout * 2

    net = inference_networks()["DeepConvNet"]
    x = np.zeros((64, 1, 28, 28), np.float32)
    xpnet.set_num_threads(2)
    try:
        assert net._infers_by_slices(x) and net._trains_by_slices(x)
        net.layers["Scale"] = Scale()
        assert not net._infers_by_slices(x) and not net._trains_by_slices(x)
    finally:
        xpnet.set_num_threads(None)


@pytest.mark.parametrize("name, shape, batch, threads, slices", [
    ("MultiLayerNet", (784,), 100, 2, 1),  # the book's chapter 6 network: 24 MFLOP in 12 layers
    ("MultiLayerNet", (784,), 1000, 2, 2),
    ("SimpleConvNet", (1, 28, 28), 50, 2, 1),
    ("SimpleConvNet", (1, 28, 28), 100, 2, 2),
    ("SimpleConvNet", (1, 28, 28), 100, 16, 3),  # 176 MFLOP in 7 layers: three slices' worth
    ("DeepConvNet", (1, 28, 28), 10, 2, 1),  # as much work as SimpleConvNet's 100, in three times the layers
    ("DeepConvNet", (1, 28, 28), 100, 2, 2),
    ("DeepConvNet", (1, 28, 28), 100, 16, 10),
    ("DeepConvNet", (1, 28, 28), 5, 16, 1),
])
def test_a_batch_is_cut_into_as_many_slices_as_its_work_per_layer_is_worth(name, shape, batch, threads, slices):
    net = getattr(xpnet.nets, name)(*((784, [100] * 5, 10) if name == "MultiLayerNet" else ()))
    x = np.zeros((batch, *shape), np.float32)
    xpnet.set_num_threads(threads)
    try:
        assert net._slice_count(x) == slices
        assert net._infers_by_slices(x) == (slices > 1) and net._trains_by_slices(x) == (slices > 1)
    finally:
        xpnet.set_num_threads(None)


def test_the_forward_work_of_an_example_counts_the_products_and_every_value():
    net = xpnet.nets.SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 2, "filter_size": 3, "pad": 0,
                                                                        "stride": 1}, hidden_size=5, output_size=3)
    conv = 2 * 2 * 9 * 8 * 8  # 2 filters of 3x3 over an 8x8 output
    relu, pool = 2 * 8 * 8, 2 * 4 * 4 * 4  # pooling: each of the 4x4 outputs of 2 channels reads 2x2 values
    affine1, relu2, affine2 = 2 * 32 * 5, 5, 2 * 5 * 3
    assert net._forward_flops_per_example((1, 10, 10)) == conv + relu + pool + affine1 + relu2 + affine2
    for wrong in ((3, 10, 10), (1, 12, 12), (100,)):  # the forward pass says what is wrong with them
        assert net._forward_flops_per_example(wrong) == 0


def test_unknown_names_are_refused_with_the_list_of_names():
    with pytest.raises(ValueError, match="unknown fast paths.*input_gradient_by_gather"):
        with fastpaths.disabled("im2col_by_magic"):
            pass
    env = {**os.environ, "XPNET_CPU_FAST_PATHS_OFF": "warp_drive", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", "import xpnet.fastpaths"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "XPNET_CPU_FAST_PATHS_OFF: unknown fast paths ['warp_drive']" in done.stderr


FAULTS = """
import resource, numpy as np
from xpnet import hostmem
hostmem.keep_freed_memory()
print(hostmem.state())
def step():  # arrays of a few MiB alive together, then freed, as a training step's activations
    alive = [np.ones(size * 2**20 // 4, np.float32) for size in (6, 7, 5, 6)]
    del alive
step()  # the first step: its pages are new either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and resource.ru_minflt: Linux")
def test_keeping_freed_memory_stops_new_arrays_from_faulting_in_fresh_pages():
    runs = {}
    for off in ("", "keep_freed_memory"):
        env = {**os.environ, "XPNET_CPU_FAST_PATHS_OFF": off, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, check=True)
        state, faults = done.stdout.splitlines()
        runs[off] = (state, int(faults))
    state, faults = runs[""]
    if not state.startswith("on"):
        pytest.skip(f"not glibc here: {state}")
    assert runs["keep_freed_memory"][0].startswith("off")
    assert runs["keep_freed_memory"][1] > 1000  # fresh pages every round
    assert faults < runs["keep_freed_memory"][1] / 20
