"""Sharding: each rank's slice of a global batch, and evaluation split across the ranks and combined by counts.

Every rank draws the same global batches (the same seeded shuffle) and
takes a contiguous slice of each: with N ranks and a global batch of B
examples, the first ``B % N`` ranks take ``B // N + 1`` examples and the
others ``B // N``, so slices differ by at most one example and cover the
batch exactly once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shard_slice", "shard", "accuracy"]


def shard_slice(n, rank, size) -> slice:
    """The slice of ``range(n)`` that rank ``rank`` of ``size`` takes (possibly empty when n < size)."""
    n, rank, size = int(n), int(rank), int(size)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"shard_slice: rank must be in 0..size-1, got rank {rank} of size {size}")
    if n < 0:
        raise ValueError(f"shard_slice: n must be >= 0, got {n}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def shard(comm, batch):
    """This rank's slice of ``batch`` (an index array, or any array whose first axis is the examples)."""
    return batch[shard_slice(len(batch), comm.rank, comm.size)]


def accuracy(comm, network, x, t, batch_size=100) -> float:
    """The accuracy of ``network`` on all of ``x``, ``t``, each rank evaluating its slice.

    The same on every rank, and exactly what ``network.accuracy(x, t)``
    gives in one process: the ranks add their counts of correct answers and
    of examples (one small allreduce), not their accuracies. Every rank
    must hold the same ``x`` and ``t`` and the same network (batch-norm
    statistics included).
    """
    if x.shape[0] == 0:
        raise ValueError("accuracy: no examples")
    part = shard_slice(x.shape[0], comm.rank, comm.size)
    count = part.stop - part.start
    correct = round(network.accuracy(x[part], t[part], batch_size) * count) if count else 0
    totals = comm.allreduce_sum(np.array([correct, count], dtype=np.int64))
    return int(totals[0]) / int(totals[1])
