"""A GPU training step queues its work and returns: it never waits for the device.

The probe: a kernel that keeps the GPU busy for a fixed time goes into the
stream first. Host code that synchronizes (a read-back, ``float()`` of a
device scalar, an implicit copy to NumPy) must wait for it; host code that
only queues work returns long before it finishes. (CUDA stream capture would
be stricter, but CuPy refuses cuBLAS calls during capture.)
"""

import time

import numpy as np
import pytest

import xpnet
from xpnet import to_device
from xpnet.nets import DeepConvNet, MultiLayerNetExtend, SimpleConvNet
from xpnet.optimizer import SGD, Adam, Momentum
from xpnet.trainer import Trainer

pytestmark = pytest.mark.gpu

BUSY_SECONDS = 0.3

_SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


@pytest.fixture
def busy():
    """``busy(seconds)`` queues a single-thread kernel that spins on the GPU for about that long."""
    if not xpnet.gpu_available():
        pytest.skip(f"needs a usable GPU ({xpnet.gpu_unavailable_reason()})")
    xpnet.set_device("gpu")
    cp = xpnet.backend.xp_of_device("gpu")
    kernel = cp.RawKernel(_SPIN, "spin")
    hz = cp.cuda.Device().attributes["ClockRate"] * 1000.0

    def queue(seconds):
        kernel((1,), (1,), (np.int64(seconds * hz),))

    queue(0.001)
    xpnet.synchronize()
    return queue


def host_seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize("make, shape, optimizer", [
    (lambda: SimpleConvNet(), (64, 1, 28, 28), SGD),
    (lambda: DeepConvNet(), (64, 1, 28, 28), Adam),
    (lambda: MultiLayerNetExtend(784, [50, 50], 10, use_batchnorm=True, use_dropout=True), (64, 784), Momentum),
], ids=["simple_convnet-sgd", "deep_convnet-adam", "extend-momentum"])
def test_a_training_step_never_waits_for_the_gpu(busy, rng, make, shape, optimizer):
    xpnet.seed(0)
    net, opt = make(), optimizer()
    x = to_device(rng.random(shape, dtype=np.float32), "gpu")
    t = to_device(rng.integers(0, 10, shape[0]), "gpu")

    def step():
        opt.update(net.params, net.gradient(x, t))

    step()  # compile the kernels, fill the memory pool
    xpnet.synchronize()
    busy(BUSY_SECONDS)
    queued = host_seconds(step)
    waited = host_seconds(xpnet.synchronize)
    assert queued < BUSY_SECONDS / 2, f"the step took {queued:.3f} s on the host: it waited for the GPU"
    assert waited > BUSY_SECONDS / 4  # the probe works: the GPU was still busy when the step returned


def test_the_trainer_synchronizes_only_to_read_the_loss(busy, rng):
    """With log_every=k the loop waits for the GPU once every k steps, and at the end of the epoch."""
    x = rng.random((12 * 16, 1, 12, 12), dtype=np.float32)
    t = rng.integers(0, 10, len(x))
    xpnet.seed(0)
    net = SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 8, "filter_size": 3, "pad": 1, "stride": 1})
    trainer = Trainer(net, x, t, x[:16], t[:16], epochs=2, mini_batch_size=16, optimizer="Adam", verbose=False,
                      log_every=4)
    gaps = []
    real_step = trainer.train_step
    last = [None]

    def probed_step(xb, tb):
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append(now - last[0])
        busy(0.05)  # each step queues 50 ms of GPU work ahead of its own
        loss = real_step(xb, tb)
        last[0] = time.perf_counter()
        return loss

    trainer.train_step = probed_step
    trainer.train()  # epoch 1 warms up; epoch 2 is measured
    second_epoch = gaps[-11:]  # the 11 gaps between the 12 steps of epoch 2
    waits = [i + 1 for i, gap in enumerate(second_epoch) if gap > 0.1]
    assert waits == [4, 8], f"host waited after steps {waits} of the epoch; expected only the loss reads after 4 and 8"
