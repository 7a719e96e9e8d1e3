"""The training problems that tests/test_distributed.py solves twice: by N ranks under mpiexec
(``train_distributed``, run by tests/mpi/train.py) and by one process with N times the batch
(``train_single``, run by the test itself).

A small MultiLayerNetExtend on inputs with a nonzero mean, trained for two epochs of shuffled global
batches of ``N * PER_RANK`` examples; the data set has ``remainder`` examples beyond whole batches, so
the last batch of each epoch splits unevenly across the ranks.

Adam runs without batch normalization: the bias of an Affine layer that feeds batch normalization has a
gradient of exactly zero, and Adam divides its rounding noise by its own size, which makes steps of
about lr / 100 in a direction no two summation orders agree on (one process with another BLAS would
not reproduce itself either).
"""

import numpy as np

import xpnet
from xpnet import distributed
from xpnet.nets import MultiLayerNetExtend
from xpnet.optimizer import get_optimizer

PER_RANK = 8  # examples per rank in a full batch
EPOCHS = 2
FEATURES, HIDDEN, CLASSES = 12, [16, 16], 4
INIT_SEED, DATA_SEED, SHUFFLE_SEED = 100, 1, 2

SCENARIOS = {
    "sgd": {"optimizer": "SGD", "lr": 0.1, "batch_norm": "synchronized", "remainder": "5"},
    "adam": {"optimizer": "Adam", "lr": 0.01, "batch_norm": None, "remainder": "5"},
    # the last batch has one example fewer than there are ranks: the last rank gets none
    "sgd-empty-rank": {"optimizer": "SGD", "lr": 0.1, "batch_norm": "synchronized", "remainder": "ranks - 1"},
    "adam-empty-rank": {"optimizer": "Adam", "lr": 0.01, "batch_norm": None, "remainder": "ranks - 1"},
    "sgd-unsynchronized-batch-norm": {"optimizer": "SGD", "lr": 0.1, "batch_norm": "per rank", "remainder": "5"},
}


def data(name, ranks):
    """(x, t): float32 inputs (mean 1, std 2) and integer labels, as many as the scenario needs for ``ranks``."""
    remainder = SCENARIOS[name]["remainder"]
    n = 3 * ranks * PER_RANK + (ranks - 1 if remainder == "ranks - 1" else int(remainder))
    rng = np.random.default_rng(DATA_SEED)
    x = (1.0 + 2.0 * rng.standard_normal((n, FEATURES))).astype(np.float32)
    t = rng.integers(0, CLASSES, n)
    return x, t


def global_batches(n, ranks):
    """Index arrays of every step: EPOCHS shuffled passes in batches of ranks * PER_RANK."""
    size = ranks * PER_RANK
    for epoch in range(1, EPOCHS + 1):
        order = np.random.default_rng([SHUFFLE_SEED, epoch]).permutation(n)
        yield from (order[i:i + size] for i in range(0, n, size))


def network(name):
    return MultiLayerNetExtend(FEATURES, HIDDEN, CLASSES, use_batchnorm=SCENARIOS[name]["batch_norm"] is not None)


def optimizer(name):
    spec = SCENARIOS[name]
    return get_optimizer(spec["optimizer"], lr=spec["lr"])


def train_single(name, ranks):
    """One process, batches of ranks * PER_RANK: (network, losses per step)."""
    x, t = data(name, ranks)
    xpnet.seed(INIT_SEED)
    net, opt = network(name), optimizer(name)
    losses = []
    for index in global_batches(len(x), ranks):
        grads = net.gradient(x[index], t[index])
        losses.append(float(net.last_layer.loss))
        opt.update(net.params, grads)
    return net, losses


def train_distributed(comm, name):
    """This rank's part, batches of PER_RANK per rank: (network, global losses per step, digest of the
    initial parameters before the broadcast)."""
    x, t = data(name, comm.size)
    distributed.seed_ranks(comm, INIT_SEED)  # rank r draws its initial weights with seed INIT_SEED + r
    net, opt = network(name), optimizer(name)
    drawn = distributed.parameters_digest(net)
    distributed.broadcast_parameters(comm, net)
    distributed.synchronize_batch_norm(comm, net, enabled=SCENARIOS[name]["batch_norm"] == "synchronized")
    losses = []
    for index in global_batches(len(x), comm.size):
        mine = distributed.shard(comm, index)
        grads, loss = distributed.gradient(comm, net, x[mine], t[mine])
        losses.append(float(loss))
        opt.update(net.params, grads)
    return net, losses, drawn
