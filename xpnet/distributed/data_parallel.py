"""Data parallelism: every rank holds the whole network, computes the gradient of its slice of the
global batch, and one allreduce per step turns the slices' gradients into the whole batch's.

The ranks start from rank 0's parameters (:func:`broadcast_parameters`) and
apply the same update to the same averaged gradient, so they stay
identical, bit for bit, without ever sending parameters again.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .. import backend
from ..backend import get_array_module
from .batch_norm import synchronized_layers
from .communicator import DistributedError

__all__ = [
    "gradient",
    "allreduce_gradients",
    "broadcast_parameters",
    "broadcast_optimizer_state",
    "parameters_digest",
    "check_in_sync",
]


def gradient(comm, network, x, t):
    """One step's gradient of the global batch, from this rank's slice ``x``, ``t`` of it.

    Every rank calls it with its own slice (see :func:`xpnet.distributed.shard`);
    slices may differ in size, and may be empty when the global batch has
    fewer examples than there are ranks. Returns ``(grads, loss)``: the
    gradients (a dict like ``network.gradient``'s, on the network's device,
    the same on every rank) and the loss (0-d array) of the global batch,
    both what one process would compute on the whole batch. With
    synchronized batch normalization a rank without examples still takes
    part in its collectives.
    """
    count = int(x.shape[0])
    if count:
        grads = network.gradient(x, t)
        loss = network.last_layer.loss
    else:
        _take_part_without_examples(network)
        grads = {name: get_array_module(p).zeros_like(p) for name, p in network.params.items()}
        loss = 0.0
    return allreduce_gradients(comm, grads, count, loss)


def allreduce_gradients(comm, grads, count, loss=0.0):
    """Average gradients over the global batch with one allreduce of one packed buffer.

    ``grads`` are the gradients of this rank's mean loss over its ``count``
    examples; ``loss`` that mean loss. Each rank weights its gradients and
    loss by ``count``, and the sums are divided by the global count, so an
    uneven split (the last batch of an epoch) weighs every example alike:
    the average is by examples, not by ranks (the global batch must not be
    empty). Returns ``(grads, loss)``:
    new arrays (views of one buffer) in ``grads``' order and the mean loss
    (0-d), identical on every rank. No synchronization with the GPU.
    """
    names = sorted(grads)  # one order on every rank, whatever the dicts' order
    if not names:
        raise ValueError("allreduce_gradients: no gradients")
    first = grads[names[0]]
    xp, dtype = get_array_module(first), first.dtype
    mixed = sorted({str(grads[name].dtype) for name in names} - {str(dtype)})
    if mixed:
        raise ValueError(f"allreduce_gradients: the gradients must share one dtype, got {dtype} and {', '.join(mixed)}")
    sizes = [grads[name].size for name in names]
    total = sum(sizes)
    buf = xp.empty(total + 2, dtype=dtype)
    xp.concatenate([grads[name].reshape(-1) for name in names], out=buf[:total])
    buf[:total] *= float(count)
    buf[total] = float(count)
    buf[total + 1] = loss * float(count)
    comm.allreduce_sum(buf)
    if xp is np and buf[total] == 0:  # (on the GPU this check would wait for the device)
        raise ValueError("allreduce_gradients: the global batch is empty: no rank had an example")
    buf /= buf[total].copy()  # the global count; a copy, for buf[total] itself changes
    averaged, offset = {}, 0
    for name, size in zip(names, sizes):
        averaged[name] = buf[offset:offset + size].reshape(grads[name].shape)
        offset += size
    return {name: averaged[name] for name in grads}, buf[total + 1:].reshape(())


def _take_part_without_examples(network):
    """A rank with an empty slice: the collectives of synchronized batch normalization, in the order the
    other ranks' forward and backward passes make them, with nothing of its own to add."""
    layers = synchronized_layers(network)
    for layer in layers:
        xp = get_array_module(layer.gamma)
        layer.forward(xp.zeros((0, layer.gamma.shape[0]), dtype=layer.gamma.dtype), train_flg=True)
    for layer in reversed(layers):
        xp = get_array_module(layer.gamma)
        layer.backward(xp.zeros((0, layer.gamma.shape[0]), dtype=layer.gamma.dtype))


# --- starting from the same state --------------------------------------------------------


def _layout(state):
    return [(name, tuple(int(n) for n in state[name].shape), str(state[name].dtype)) for name in sorted(state)]


def _describe_layout(layout):
    shown = ", ".join(f"{name} {shape} {dtype}" for name, shape, dtype in layout[:6])
    return f"{len(layout)} arrays ({shown}{', ...' if len(layout) > 6 else ''})"


def broadcast_parameters(comm, network, root=0):
    """Copy ``root``'s parameters and batch-norm statistics into every rank's network, in place.

    Call it once after building the network (each rank may have drawn other
    initial weights) and after loading a checkpoint on one rank. The
    networks must have the same names, shapes and dtypes: a DistributedError
    on every rank names the ranks that differ. One broadcast of one buffer
    (NCCL on the GPU where started).
    """
    state = network.state()
    layout = comm.agree(_layout(state), "the networks (parameter names, shapes and dtypes)", _describe_layout)
    if not layout:
        return
    names = [name for name, _, _ in layout]
    dtypes = {dtype for _, _, dtype in layout}
    if len(dtypes) > 1:
        raise ValueError(f"broadcast_parameters: the network mixes dtypes {sorted(dtypes)}")
    xp = get_array_module(*state.values())
    buf = xp.concatenate([state[name].reshape(-1) for name in names])
    comm.broadcast(buf, root)
    if comm.rank == root:
        return
    offset = 0
    for name in names:
        array = state[name]
        array[...] = buf[offset:offset + array.size].reshape(array.shape)
        offset += array.size


def broadcast_optimizer_state(comm, optimizer, root=0):
    """Give every rank ``root``'s optimizer state (hyperparameters, ``iter``, moments), e.g. after a resume.

    The state goes through the host once: its scalars and layout as one
    small object, its arrays as one buffer of bytes. The other ranks load
    it with ``load_state_dict`` (moved to the parameters' device at the next
    update). Every rank must use the same optimizer class.
    """
    comm.agree(type(optimizer).__name__, "the optimizers")
    state = optimizer.state_dict() if comm.rank == root else None
    header = None
    if comm.rank == root:
        header = {key: (("array", tuple(v.shape), v.dtype.str) if isinstance(v, np.ndarray) else v)
                  for key, v in state.items()}
    header = comm.bcast_object(header, root)
    keys = [key for key, v in header.items() if isinstance(v, tuple) and v and v[0] == "array"]
    sizes = [int(np.prod(header[key][1])) * np.dtype(header[key][2]).itemsize for key in keys]
    buf = np.empty(sum(sizes), dtype=np.uint8)
    if comm.rank == root and keys:
        np.concatenate([np.ascontiguousarray(state[key]).reshape(-1).view(np.uint8) for key in keys], out=buf)
    if keys:
        comm.broadcast(buf, root)
    if comm.rank == root:
        return
    received, offset = dict(header), 0
    for key, size in zip(keys, sizes):
        _, shape, dtype = header[key]
        received[key] = buf[offset:offset + size].view(np.dtype(dtype)).reshape(shape).copy()
        offset += size
    optimizer.load_state_dict(received)


# --- checking that the ranks agree -------------------------------------------------------


def parameters_digest(network) -> str:
    """SHA-256 of the network's state (names, shapes, dtypes and bytes), read on the host."""
    digest = hashlib.sha256()
    state = network.state()
    for name in sorted(state):
        array = np.ascontiguousarray(backend.to_numpy(state[name]))
        digest.update(f"{name}{array.shape}{array.dtype.str}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_in_sync(comm, network):
    """Raise DistributedError on every rank, naming them, unless every rank's network state is bit-identical.

    Copies the state to the host: a check for checkpoints and tests, not for every step.
    """
    try:
        comm.agree(parameters_digest(network), "the parameters", lambda d: f"state digest {d[:16]}")
    except DistributedError as exc:
        raise DistributedError(f"{exc}; the ranks no longer train one model") from None
