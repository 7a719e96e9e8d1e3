"""Each layer alone, forward and backward, on NumPy, CuPy, and PyTorch on CPU and CUDA.

Shapes are the book's: SimpleConvNet's 5x5 convolution and the 3x3 ones of
DeepConvNet (as the benchmark issue lists them, all pad 1), plus one larger
convolution (3->64 channels on 32x32); 2x2 max pooling with stride 2; and
the activations, Affine, BatchNormalization and SoftmaxWithLoss at the
sizes SimpleConvNet and DeepConvNet give them.

FLOPs count the matrix products only (2*M*N*K each): forward one product,
backward two (dW and dx). Pooling, ReLU, batch norm and the loss are
memory-bound, so they carry no FLOPs; compare their times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import xpnet
from xpnet.layers import Affine, BatchNormalization, Convolution, Pooling, Relu, SoftmaxWithLoss
from xpnet.util import conv_output_size

import peers
import references
from references import assert_matches

F32 = np.dtype(np.float32)
PASSES = ("forward", "backward")


@dataclass(frozen=True)
class ConvShape:
    c: int
    h: int
    w: int
    fn: int
    k: int
    pad: int

    @property
    def label(self):
        text = f"conv {self.c}x{self.h}x{self.w}->{self.fn} {self.k}x{self.k}"
        return text + (f" pad {self.pad}" if self.pad else "")

    @property
    def id(self):
        return f"{self.c}x{self.h}x{self.w}-{self.fn}-{self.k}x{self.k}-pad{self.pad}"


CONV_SHAPES = {s.id: s for s in (
    ConvShape(1, 28, 28, 30, 5, 0),  # SimpleConvNet
    ConvShape(1, 28, 28, 16, 3, 1),  # DeepConvNet, 3x3 layers
    ConvShape(16, 28, 28, 16, 3, 1),
    ConvShape(16, 14, 14, 32, 3, 1),
    ConvShape(32, 14, 14, 32, 3, 1),
    ConvShape(32, 7, 7, 64, 3, 1),
    ConvShape(64, 7, 7, 64, 3, 1),
    ConvShape(3, 32, 32, 64, 3, 1),  # larger: CIFAR-sized input, 64 filters
)}


def _normal(rng, shape, std=1.0):
    return (std * rng.standard_normal(shape)).astype(F32)


def run_layer(measure, bk, pass_, *, label, family, x, dout, make_layer, make_module, reference, t=None,
              train_flg=None, flops=(0, 0), im2col_bytes=0):
    """Time ``pass_`` of one layer on backend ``bk``; in a smoke run, check its result against ``reference()``.

    ``make_layer(to_device)`` builds the xpnet layer with its parameters on
    the device; ``make_module(device)`` the torch peer. ``x`` (and labels
    ``t``) and the upstream gradient ``dout`` are host arrays, moved once.
    ``reference()`` returns the float64 forward output and input gradient
    (:mod:`references`).
    """
    if bk.is_torch:
        peer = peers.LayerPeer(make_module(bk.device), bk.to_device(x), None if t is None else bk.to_device(t))
        dout_dev = None if dout is None else bk.to_device(dout)

        def forward():
            y = peer.forward()
            bk.sync()
            return y

        def backward(y):
            y.backward(dout_dev)
            bk.sync()
            return peer.x.grad
    else:
        layer = make_layer(bk.to_device)
        inputs = (bk.to_device(x),) if t is None else (bk.to_device(x), bk.to_device(t))
        kwargs = {} if train_flg is None else {"train_flg": train_flg}
        dout_dev = 1 if dout is None else bk.to_device(dout)

        def forward():
            y = layer.forward(*inputs, **kwargs)
            bk.sync()
            return y

        def backward(_):
            dx = layer.backward(dout_dev)
            bk.sync()
            return dx

    def check(result):
        assert_matches(result, reference()[0 if pass_ == "forward" else 1], f"{label} {pass_} on {bk.name}")

    info = dict(layer=label, family=family, pass_=pass_, im2col_bytes=im2col_bytes, check=check)
    if pass_ == "forward":
        measure(forward, flops=flops[0], **info)
    else:
        measure(backward, setup=forward, flops=flops[1], **info)


# --- convolution ----------------------------------------------------------------------


def conv_case(shape: ConvShape, batch, rng):
    s = shape
    oh, ow = conv_output_size(s.h, s.k, 1, s.pad), conv_output_size(s.w, s.k, 1, s.pad)
    W = _normal(rng, (s.fn, s.c, s.k, s.k), math.sqrt(2.0 / (s.c * s.k * s.k)))
    b = _normal(rng, (s.fn,), 0.1)
    gemm = 2 * batch * oh * ow * s.fn * s.c * s.k * s.k
    x, dout = _normal(rng, (batch, s.c, s.h, s.w)), _normal(rng, (batch, s.fn, oh, ow))
    return dict(
        label=s.label, family="convolution", x=x, dout=dout,
        reference=lambda: references.convolution(x, W, b, s.pad, dout),
        make_layer=lambda dev: Convolution(dev(W), dev(b), stride=1, pad=s.pad),
        make_module=lambda device: peers.conv2d(W, b, 1, s.pad, device),
        flops=(gemm, 2 * gemm), im2col_bytes=batch * oh * ow * s.c * s.k * s.k * F32.itemsize,
    )


@pytest.mark.parametrize("shape", list(CONV_SHAPES))
@pytest.mark.parametrize("pass_", PASSES)
def test_convolution(backend, batch, measure, pass_, shape, rng):
    run_layer(measure, backend, pass_, **conv_case(CONV_SHAPES[shape], batch, rng))


# --- the other layers ------------------------------------------------------------------


def pooling_case(batch, rng, c=30, h=24, w=24):
    """SimpleConvNet's pooling: 30 channels of 24x24 after the 5x5 convolution."""
    oh, ow = conv_output_size(h, 2, 2), conv_output_size(w, 2, 2)
    # A shuffled linspace: no ties inside a window, so every backend picks the same maximum.
    x = rng.permutation(np.linspace(-1.0, 1.0, batch * c * h * w, dtype=F32)).reshape(batch, c, h, w)
    dout = _normal(rng, (batch, c, oh, ow))
    return dict(
        label=f"pool {c}x{h}x{w} 2x2 stride 2", family="pooling", x=x, dout=dout,
        reference=lambda: references.max_pooling_2x2(x, dout),
        make_layer=lambda dev: Pooling(2, 2, stride=2),
        make_module=lambda device: peers.max_pool(2, 2, 2, 0, device),
        im2col_bytes=batch * oh * ow * c * 4 * F32.itemsize,
    )


def affine_case(batch, rng, d=30 * 12 * 12, m=100):
    """SimpleConvNet's first Affine layer: 4320 pooled features to 100 hidden units."""
    W, b = _normal(rng, (d, m), math.sqrt(2.0 / d)), _normal(rng, (m,), 0.1)
    gemm = 2 * batch * d * m
    x, dout = _normal(rng, (batch, d)), _normal(rng, (batch, m))
    return dict(
        label=f"affine {d}->{m}", family="affine", x=x, dout=dout,
        reference=lambda: references.affine(x, W, b, dout),
        make_layer=lambda dev: Affine(dev(W), dev(b)),
        make_module=lambda device: peers.linear(W, b, device),
        flops=(gemm, 2 * gemm),
    )


def batchnorm_case(batch, rng, c=16, h=28, w=28):
    """Per-channel batch normalization in training mode, on DeepConvNet's first feature maps."""
    gamma, beta = (1.0 + _normal(rng, (c,), 0.1)).astype(F32), _normal(rng, (c,), 0.1)
    x, dout = _normal(rng, (batch, c, h, w)), _normal(rng, (batch, c, h, w))
    return dict(
        label=f"batchnorm {c}x{h}x{w}", family="batchnorm", x=x, dout=dout, train_flg=True,
        reference=lambda: references.batch_normalization(x, gamma, beta, BatchNormalization.eps, dout),
        make_layer=lambda dev: BatchNormalization(dev(gamma), dev(beta)),
        make_module=lambda device: peers.batch_norm(gamma, beta, 4, BatchNormalization.eps, 0.9, device),
    )


def relu_case(batch, rng, c=30, h=24, w=24):
    """SimpleConvNet's first ReLU."""
    x, dout = _normal(rng, (batch, c, h, w)), _normal(rng, (batch, c, h, w))
    return dict(
        label=f"relu {c}x{h}x{w}", family="relu", x=x, dout=dout,
        reference=lambda: references.relu(x, dout),
        make_layer=lambda dev: Relu(),
        make_module=peers.relu,
    )


def softmax_case(batch, rng, k=10):
    """The loss of every network: 10 class scores, index labels."""
    x, t = _normal(rng, (batch, k), 3.0), rng.integers(0, k, size=batch)
    return dict(
        label=f"softmaxwithloss {k}", family="softmaxwithloss", x=x, t=t, dout=None,
        reference=lambda: references.softmax_cross_entropy(x, t),
        make_layer=lambda dev: SoftmaxWithLoss(),
        make_module=peers.cross_entropy,
    )


OTHER_CASES = {"pooling": pooling_case, "affine": affine_case, "batchnorm": batchnorm_case,
               "relu": relu_case, "softmaxwithloss": softmax_case}


@pytest.mark.parametrize("layer", list(OTHER_CASES))
@pytest.mark.parametrize("pass_", PASSES)
def test_layer(backend, batch, measure, pass_, layer, rng):
    run_layer(measure, backend, pass_, **OTHER_CASES[layer](batch, rng))


# --- the peers compute the same thing ----------------------------------------------------


ALL_CASES = {**{i: (lambda batch, rng, s=s: conv_case(s, batch, rng)) for i, s in CONV_SHAPES.items()},
             **OTHER_CASES}


@pytest.mark.parametrize("case", list(ALL_CASES))
def test_peer_matches_xpnet(case, rng):
    """Each torch peer, given the same parameters and inputs, returns xpnet's forward and backward (CPU)."""
    reason = peers.unavailable_reason()
    if reason:
        pytest.skip(f"no torch peer to check: {reason}")
    spec = ALL_CASES[case](2, rng)
    t = spec.get("t")
    layer = spec["make_layer"](lambda a: a)
    inputs = (spec["x"],) if t is None else (spec["x"], t)
    kwargs = {} if spec.get("train_flg") is None else {"train_flg": spec["train_flg"]}
    y = xpnet.to_numpy(layer.forward(*inputs, **kwargs))
    dx = xpnet.to_numpy(layer.backward(1 if spec["dout"] is None else spec["dout"]))

    peer = peers.LayerPeer(spec["make_module"]("cpu"), peers.tensor(spec["x"], "cpu"),
                           None if t is None else peers.tensor(t, "cpu"))
    y_peer = peer.forward()
    peer.backward(y_peer, None if spec["dout"] is None else peers.tensor(spec["dout"], "cpu"))
    np.testing.assert_allclose(y_peer.detach().numpy(), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(peer.x.grad.numpy(), dx, rtol=1e-4, atol=1e-5)
