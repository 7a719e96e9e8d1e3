"""Synchronized batch normalization: the statistics of the global batch, so that N ranks equal one process.

Plain batch normalization on N ranks normalizes each slice by its own
mean and variance, which is not what one process does with the whole
batch (and the smaller the slices, the noisier). Here every training-mode
forward pass combines the ranks' per-channel statistics, and the backward
pass the matching per-channel sums, as ChainerMN's
MultiNodeBatchNormalization does (and PyTorch's SyncBatchNorm).

Each rank sends its count, mean and centred sum of squares per channel
(one allgather), and every rank combines them the same way (Chan et al.'s
parallel variance), which is as exact as the single-process two-pass
formula; the backward pass sums ``dxn`` and ``dxn * xn`` (one allreduce).
Evaluation (``train_flg=False``) uses the running statistics and
communicates nothing; with synchronization they are the same on every rank.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..layers import BatchNormalization

__all__ = ["SyncBatchStatistics", "synchronize_batch_norm", "synchronized_layers", "average_batch_norm_statistics"]


class SyncBatchStatistics:
    """The ``sync`` of one BatchNormalization layer (see its docstring): statistics over every rank's batch.

    Gradients on each rank are those of its own mean loss, which
    :func:`xpnet.distributed.allreduce_gradients` weights by its share of
    the global batch. The backward pass works in the same scale: each
    rank's sums are weighted by its share before they are added, and the
    means it returns are divided by its own count, so the layer's usual
    formula gives this rank's part of the single-process ``dx``.
    """

    def __init__(self, comm):
        self.comm = comm
        self.total = None  # examples (times H*W) per channel in the global batch, from the last forward

    def statistics(self, x, axes):
        """Mean and (biased) variance per channel over the global batch: two (C,) arrays in ``x``'s dtype."""
        xp = get_array_module(x)
        channels = x.shape[1]
        count = x.size // channels if channels else 0
        local = xp.zeros(1 + 2 * channels, dtype=x.dtype)
        local[0] = count
        if count:
            mean = x.mean(axis=axes)
            centred = x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))
            local[1:1 + channels] = mean
            local[1 + channels:] = (centred * centred).sum(axis=axes)
        gathered = self.comm.allgather(local)  # (ranks, 1 + 2C)
        counts, means, squares = gathered[:, :1], gathered[:, 1:1 + channels], gathered[:, 1 + channels:]
        self.total = counts.sum()
        mean = (counts * means).sum(axis=0) / self.total
        spread = means - mean
        var = (squares.sum(axis=0) + (counts * spread * spread).sum(axis=0)) / self.total
        return mean, var

    def gradient_means(self, dxn, xn, axes):
        """The means over the global batch of ``dxn`` and ``dxn * xn`` per channel, in this rank's scale."""
        xp = get_array_module(dxn)
        channels = dxn.shape[1]
        count = dxn.size // channels if channels else 0
        sums = xp.concatenate([dxn.sum(axis=axes), (dxn * xn).sum(axis=axes)])
        sums *= count / self.total  # this rank's share of the global batch
        self.comm.allreduce_sum(sums)
        if not count:
            return sums[:channels], sums[channels:]  # no examples here: nothing to scale
        sums /= count
        return sums[:channels], sums[channels:]


def synchronize_batch_norm(comm, network, enabled=True) -> int:
    """Make every BatchNormalization layer of ``network`` use the global batch's statistics (or, with
    ``enabled=False``, its own slice's again). Returns the number of such layers.

    Every rank must call it alike: a synchronized layer's forward and
    backward passes are collective calls.
    """
    layers = [layer for layer in network.layers.values() if isinstance(layer, BatchNormalization)]
    for layer in layers:
        layer.sync = SyncBatchStatistics(comm) if enabled else None
    return len(layers)


def synchronized_layers(network) -> list:
    """The network's synchronized BatchNormalization layers, in forward order."""
    return [layer for layer in network.layers.values()
            if isinstance(layer, BatchNormalization) and layer.sync is not None]


def average_batch_norm_statistics(comm, network) -> None:
    """Replace every rank's batch-norm running statistics by their mean over the ranks (one allreduce).

    Without synchronization each rank's running statistics follow its own
    slices, and the ranks evaluate (and would save) different models; call
    this before evaluating or saving. Synchronized layers need it not: their
    statistics are the same everywhere.
    """
    state = network.state()
    names = sorted(key for key in state if "." in key)  # "<layer>.running_mean" and the like
    if not names:
        return
    xp = get_array_module(*(state[name] for name in names))
    buf = xp.concatenate([state[name].reshape(-1) for name in names])
    comm.allreduce_sum(buf)
    buf /= comm.size
    offset = 0
    for name in names:
        array = state[name]
        array[...] = buf[offset:offset + array.size].reshape(array.shape)
        offset += array.size
