"""Data-parallel training on MPI (mpi4py), with NCCL for GPU arrays: N processes train one model.

Every rank holds the whole network and takes its slice of the same
globally shuffled batch; one allreduce per step averages the gradients
over the global batch (by examples, so an uneven last batch is weighted
right), and every rank applies the same update. Batch normalization can
use the global batch's statistics, so N ranks with batches of b compute
what one process computes with batches of N*b. Launch with ``mpiexec -n N
python script.py`` (see docs/distributed.md)::

    import numpy as np
    import xpnet
    from xpnet import distributed
    from xpnet.nets import MultiLayerNetExtend
    from xpnet.optimizer import Adam

    comm = distributed.init()                   # MPI, this rank's device, same-run check, abort on error
    seed = distributed.seed_ranks(comm, 0)      # dropout differs per rank; `seed` is shared
    net = MultiLayerNetExtend(784, [100, 100], 10, use_batchnorm=True)
    distributed.broadcast_parameters(comm, net)  # everyone starts from rank 0's weights
    distributed.synchronize_batch_norm(comm, net)
    optimizer = Adam()
    order = np.random.default_rng(seed).permutation(len(x_train))
    global_batch = comm.size * 100               # 100 examples per rank
    for start in range(0, len(order), global_batch):
        index = distributed.shard(comm, order[start:start + global_batch])
        grads, loss = distributed.gradient(comm, net, x_train[index], t_train[index])
        optimizer.update(net.params, grads)
    test_acc = distributed.accuracy(comm, net, x_test, t_test)  # each rank evaluates a slice

Requires the ``mpi`` extra (``pip install 'xpnet[mpi]'``: mpi4py and
MPICH); mpi4py is imported only when a communicator is made.
"""

from .batch_norm import SyncBatchStatistics, average_batch_norm_statistics, synchronize_batch_norm, synchronized_layers
from .communicator import Communicator, DistributedError
from .data_parallel import (
    allreduce_gradients,
    broadcast_optimizer_state,
    broadcast_parameters,
    check_in_sync,
    gradient,
    parameters_digest,
)
from .launch import abort_on_exception, abort_unless_zero, check_same_run, init, launched_size, run_signature, seed_ranks, use_local_device
from .sharding import accuracy, shard, shard_slice

__all__ = [
    "Communicator",
    "DistributedError",
    "init",
    "launched_size",
    "abort_on_exception",
    "abort_unless_zero",
    "check_same_run",
    "run_signature",
    "seed_ranks",
    "use_local_device",
    "shard",
    "shard_slice",
    "gradient",
    "allreduce_gradients",
    "broadcast_parameters",
    "broadcast_optimizer_state",
    "parameters_digest",
    "check_in_sync",
    "accuracy",
    "synchronize_batch_norm",
    "synchronized_layers",
    "average_batch_norm_statistics",
    "SyncBatchStatistics",
]
