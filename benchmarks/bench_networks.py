"""Whole networks: one training step (forward, backward, Adam update) and inference.

SimpleConvNet and DeepConvNet with the book's settings on 1x28x28 input,
on NumPy, CuPy, and their PyTorch equivalents (same layers, shapes and
initial weights, built by :func:`peers.net_like`) on CPU and CUDA.
FLOPs count the matrix products of the convolutions and Affine layers:
inference one product per layer, a training step three (forward, dW, dx).
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.util import conv_output_size

import peers
import references

F32 = np.dtype(np.float32)
PASSES = ("train-step", "inference")
INPUT_DIM = (1, 28, 28)
LR = 0.001
STEP_SEED = 7  # xpnet's generator before a measured step, and before its reference: the same dropout masks


def _nets():
    return pytest.importorskip("xpnet.nets", reason="xpnet.nets (the book's networks) is not available")


def build_simple_convnet(dtype=F32):
    return _nets().SimpleConvNet(input_dim=INPUT_DIM,
                                 conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                                 hidden_size=100, output_size=10, weight_init_std=0.01, dtype=dtype)


def build_deep_convnet(dtype=F32):
    return _nets().DeepConvNet(input_dim=INPUT_DIM, dtype=dtype)


NETWORKS = {"SimpleConvNet": build_simple_convnet, "DeepConvNet": build_deep_convnet}


def network_costs(net, batch):
    """(FLOPs of one forward pass's matrix products, bytes of all im2col buffers) for ``batch`` examples."""
    from xpnet.layers import Affine, Convolution, Pooling

    c, h, w = net.input_dim
    flops = im2col = 0
    for layer in net.layers.values():
        if isinstance(layer, Convolution):
            fn, _, fh, fw = layer.W.shape
            oh, ow = conv_output_size(h, fh, layer.stride, layer.pad), conv_output_size(w, fw, layer.stride, layer.pad)
            flops += 2 * batch * oh * ow * fn * c * fh * fw
            im2col += batch * oh * ow * c * fh * fw * F32.itemsize
            c, h, w = fn, oh, ow
        elif isinstance(layer, Pooling):
            oh = conv_output_size(h, layer.pool_h, layer.stride, layer.pad)
            ow = conv_output_size(w, layer.pool_w, layer.stride, layer.pad)
            im2col += batch * oh * ow * c * layer.pool_h * layer.pool_w * F32.itemsize
            h, w = oh, ow
        elif isinstance(layer, Affine):
            d, m = layer.W.shape
            flops += 2 * batch * d * m
            c, h, w = m, 1, 1
    return flops, im2col


def make_network(name):
    """The network ``name`` built on the CPU from seed 0 (the same initial weights for every backend)."""
    with xpnet.using_device("cpu"):
        xpnet.seed(0)
        return NETWORKS[name]()


def float64_copy(net, name, device):
    """The reference: network ``name`` with ``net``'s weights in float64, on ``device``."""
    with xpnet.using_device("cpu"):
        copy = NETWORKS[name](dtype=np.float64)
    copy.load_state(net.state())
    return copy.to(device)


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("pass_", PASSES)
def test_network(backend, batch, measure, pass_, name, rng):
    net = make_network(name)
    x_host = rng.standard_normal((batch, *INPUT_DIM)).astype(F32)
    t_host = rng.integers(0, 10, size=batch)
    x, t = backend.to_device(x_host), backend.to_device(t_host)
    forward_flops, im2col_bytes = network_costs(net, batch)
    where = "cpu" if backend.is_torch else backend.device  # xpnet's reference runs where xpnet's step ran
    reference = float64_copy(net, name, where)
    x64, t64 = xpnet.to_device(x_host.astype(np.float64), where), xpnet.to_device(t_host, where)
    dropout = any(type(layer).__name__ == "Dropout" for layer in net.layers.values())
    what = f"{name} {pass_} at batch {batch} on {backend.name}"

    if backend.is_torch:
        peer = peers.NetPeer(peers.net_like(net, backend.device), "adam", LR)

        def train_step():
            loss = peer.train_step(x, t)
            backend.sync()
            return loss

        def inference():
            y = peer.predict(x)
            backend.sync()
            return y
    else:
        optimizer = pytest.importorskip("xpnet.optimizer", reason="xpnet.optimizer is not available").Adam(lr=LR)
        net.to(backend.device)

        def train_step():
            grads = net.gradient(x, t)
            optimizer.update(net.params, grads)
            backend.sync()
            return grads

        def inference():
            y = net.predict(x, train_flg=False)
            backend.sync()
            return y

    def check_step(result):
        if backend.is_torch:  # the loss of the step: its dropout masks are torch's own, unlike any reference's
            loss = float(references.host(result))
            if dropout:
                assert np.isfinite(loss) and loss > 0, what
            else:
                references.assert_matches(loss, float(reference.loss(x64, t64, train_flg=True)), what)
            return
        xpnet.seed(STEP_SEED)  # the masks of the measured step
        expected = reference.gradient(x64, t64)
        assert set(result) == set(expected), what
        for key, value in expected.items():
            references.assert_matches_in_norm(result[key], xpnet.to_numpy(value), f"{what}: {key}")

    def check_inference(result):
        references.assert_matches(result, xpnet.to_numpy(reference.predict(x64, train_flg=False)), what)

    info = dict(layer=f"{name} {'x'.join(map(str, INPUT_DIM))}", family="network", pass_=pass_,
                im2col_bytes=im2col_bytes)
    xpnet.seed(STEP_SEED)
    if pass_ == "train-step":
        measure(train_step, flops=3 * forward_flops, optimizer="adam", check=check_step, **info)
    else:
        measure(inference, flops=forward_flops, check=check_inference, **info)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_peer_matches_xpnet(name):
    """The torch peer is the same network: the same scores and loss on the same input (CPU)."""
    reason = peers.unavailable_reason()
    if reason:
        pytest.skip(f"no torch peer to check: {reason}")
    net = make_network(name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, *INPUT_DIM)).astype(F32)
    t = rng.integers(0, 10, size=4)
    model = peers.net_like(net, "cpu")
    model.eval()
    scores = model(peers.tensor(x, "cpu")).detach().numpy()
    np.testing.assert_allclose(scores, xpnet.to_numpy(net.predict(x, train_flg=False)), rtol=1e-4, atol=1e-5)
    loss = peers.cross_entropy("cpu")(model(peers.tensor(x, "cpu")), peers.tensor(t, "cpu"))
    np.testing.assert_allclose(loss.item(), float(net.loss(x, t, train_flg=False)), rtol=1e-4)
