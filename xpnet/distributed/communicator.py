"""The communicator: which process this is, how many there are, and the collectives data parallelism needs.

The processes of a run are started by an MPI launcher (``mpiexec -n N``,
Slurm's ``srun``) and meet through mpi4py. Arrays travel as one flat,
contiguous buffer per collective:

* NumPy arrays through MPI;
* CuPy arrays through NCCL (``cupyx.distributed``) once :meth:`Communicator.start_nccl`
  succeeded on every rank, else through a copy to the host and MPI.

mpi4py is imported on first use (importing it starts MPI), so ``import
xpnet.distributed`` costs nothing where no run is distributed.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .. import backend

__all__ = ["Communicator", "DistributedError", "mpi"]

ABORT_PAUSE = 0.25  # seconds between a rank's last output and the abort (see Communicator.abort)
_INSTALL_HINT = "install it with `pip install 'xpnet[mpi]'` (mpi4py and the MPICH wheel), or build mpi4py against your cluster's MPI"


class DistributedError(RuntimeError):
    """The processes of a distributed run disagree, or a collective cannot be done."""


def mpi():
    """mpi4py's ``MPI`` module; importing it the first time starts MPI."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"xpnet.distributed needs mpi4py ({exc}); {_INSTALL_HINT}") from None
    return MPI


class Communicator:
    """The processes of one data-parallel run.

    ``rank`` (0 to ``size`` - 1) and ``size`` come from the MPI communicator
    (default ``MPI.COMM_WORLD``); ``local_rank`` and ``local_size`` count the
    processes on this node (``Split_type(COMM_TYPE_SHARED)``), which choose
    the GPU; ``host`` is the node's name.

    The array collectives take a 1-D contiguous array (NumPy or CuPy) and
    work in place where they can; every rank must call them in the same
    order with arrays of the same size and dtype, as with MPI itself.
    """

    def __init__(self, mpi_comm=None):
        MPI = mpi()
        self.mpi_comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank, self.size = self.mpi_comm.Get_rank(), self.mpi_comm.Get_size()
        node = self.mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.host = MPI.Get_processor_name()
        self._host_route = _HostRoute(self.mpi_comm)
        self._nccl_route = None
        self.nccl_reason = "NCCL not started (Communicator.start_nccl starts it once the GPU is chosen)"

    def __repr__(self):
        route = "NCCL" if self._nccl_route is not None else "MPI"
        return (f"Communicator(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
                f"local_size={self.local_size}, host={self.host!r}, device arrays through {route})")

    @property
    def uses_nccl(self) -> bool:
        """Whether CuPy arrays go through NCCL (else through host copies and MPI; ``nccl_reason`` says why)."""
        return self._nccl_route is not None

    # --- collectives on arrays --------------------------------------------------

    def _route(self, buf):
        if buf.ndim != 1 or not buf.flags.c_contiguous:
            raise ValueError(f"Communicator: collectives take 1-D contiguous buffers, got shape {tuple(buf.shape)}"
                             f"{'' if buf.flags.c_contiguous else ' (not contiguous)'}")
        if self._nccl_route is not None and backend.is_cupy_array(buf):
            return self._nccl_route
        return self._host_route

    def allreduce_sum(self, buf):
        """Replace ``buf`` on every rank by the sum of every rank's ``buf``; returns ``buf``."""
        return self._route(buf).allreduce_sum(buf)

    def broadcast(self, buf, root=0):
        """Copy ``root``'s ``buf`` into every rank's ``buf``; returns ``buf``."""
        return self._route(buf).broadcast(buf, root)

    def allgather(self, buf):
        """Every rank's ``buf`` (n,), stacked in rank order: a new (size, n) array on ``buf``'s device."""
        return self._route(buf).allgather(buf, self.size)

    # --- collectives on small Python objects (pickled, on the host) ------------------

    def allgather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""
        return self.mpi_comm.allgather(obj)

    def bcast_object(self, obj, root=0):
        """``root``'s ``obj`` on every rank."""
        return self.mpi_comm.bcast(obj, root=root)

    def any(self, flag) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        return bool(self.mpi_comm.allreduce(bool(flag), op=mpi().LOR))

    def barrier(self) -> None:
        self.mpi_comm.Barrier()

    def abort(self, code=1) -> None:
        """End every process of the job now (``MPI.COMM_WORLD.Abort``), ``ABORT_PAUSE`` seconds after
        flushing this rank's output: MPICH's launcher forwards what a rank writes through a pipe, and
        the abort can end that forwarding first (a job's stderr once came back empty, without the line
        saying why it ended)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_PAUSE)
        mpi().COMM_WORLD.Abort(code)

    def agree(self, value, what, describe=str):
        """Check that every rank holds the same ``value``; else a DistributedError on every rank naming
        the ranks of each value, e.g. "the networks differ between ranks: ranks 0, 2: ...; rank 1: ..."."""
        values = self.allgather_object(value)
        if all(v == values[0] for v in values):
            return value
        groups = "; ".join(f"{ranks_text(ranks)}: {describe(v)}" for ranks, v in group_ranks(values))
        raise DistributedError(f"{what} differ between ranks: {groups}")

    # --- NCCL -----------------------------------------------------------------------

    def start_nccl(self, required=False) -> bool:
        """Send CuPy arrays through NCCL from now on, where every rank can (a collective call).

        Each rank must be on a GPU of its own (``backend.get_device()``, chosen
        before this call; GPUs are told apart by their PCI bus id, so that
        ranks that each see one GPU as ``gpu:0`` under ``CUDA_VISIBLE_DEVICES``
        are not mistaken for sharing one), with CuPy's NCCL, in a communicator spanning
        ``MPI.COMM_WORLD`` (cupyx.distributed meets there). When any rank
        cannot, every rank keeps the host route and ``nccl_reason`` says why;
        with ``required=True`` that is a DistributedError instead. Returns
        whether NCCL is on.
        """
        device = backend.get_device()
        obstacle = self._nccl_obstacle(device)
        gpu = None if obstacle else backend.gpu_bus_id(device)  # the physical GPU, whatever the numbering
        reports = self.allgather_object((obstacle, self.host, gpu, device))
        obstacles = [f"{ranks_text(ranks)}: {why}" for ranks, why in group_ranks([r[0] for r in reports]) if why]
        for ranks, (host, gpu) in group_ranks([(host, gpu) for _, host, gpu, _ in reports]):
            if len(ranks) > 1 and gpu is not None:
                obstacles.append(f"{ranks_text(ranks)} share the GPU at PCI {gpu} on {host}, and NCCL refuses "
                                 f"two ranks on one GPU")
        if obstacles:
            self.nccl_reason = "; ".join(obstacles)
            if required:
                raise DistributedError(f"NCCL cannot be used: {self.nccl_reason}")
            return False
        self._nccl_route = _NCCLRoute(backend.nccl_process_group(self.size, self.rank))
        self.nccl_reason = None
        return True

    def _nccl_obstacle(self, device) -> str | None:
        """Why this rank cannot join an NCCL communicator, or None."""
        if device == "cpu":
            return "its device is the CPU"
        reason = backend.nccl_unavailable_reason()
        if reason is not None:
            return reason
        MPI = mpi()
        if MPI.Comm.Compare(self.mpi_comm, MPI.COMM_WORLD) not in (MPI.IDENT, MPI.CONGRUENT):
            return "its communicator is not MPI.COMM_WORLD, where cupyx.distributed meets"
        return None


class _HostRoute:
    """Collectives through MPI on host memory; CuPy arrays are copied to the host and back."""

    def __init__(self, mpi_comm):
        self.mpi_comm = mpi_comm

    @staticmethod
    def _on_host(buf):
        return backend.to_numpy(buf) if backend.is_cupy_array(buf) else buf

    @staticmethod
    def _back(buf, host):
        if host is not buf:
            buf[...] = backend.to_device(host, backend.device_of(buf))
        return buf

    def allreduce_sum(self, buf):
        MPI = mpi()
        host = self._on_host(buf)
        self.mpi_comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return self._back(buf, host)

    def broadcast(self, buf, root):
        host = self._on_host(buf)
        self.mpi_comm.Bcast(host, root=root)
        return self._back(buf, host)

    def allgather(self, buf, size):
        host = self._on_host(buf)
        out = np.empty((size, host.size), dtype=host.dtype)
        self.mpi_comm.Allgather(host, out)
        return out if host is buf else backend.to_device(out, backend.device_of(buf))


class _NCCLRoute:
    """Collectives on CuPy arrays through a ``cupyx.distributed`` NCCL communicator, on the current stream.

    NCCL queues the work on the stream like any kernel, so what follows on
    the same stream sees the result without a synchronization.
    """

    def __init__(self, nccl):
        self.nccl = nccl

    def allreduce_sum(self, buf):
        self.nccl.all_reduce(buf, buf, op="sum")
        return buf

    def broadcast(self, buf, root):
        self.nccl.broadcast(buf, root)
        return buf

    def allgather(self, buf, size):
        out = backend.get_array_module(buf).empty((size, buf.size), dtype=buf.dtype)
        self.nccl.all_gather(buf, out, buf.size)
        return out


# --- naming ranks in messages ------------------------------------------------------------


def group_ranks(values):
    """[(ranks, value)] for each distinct value of a per-rank list, in order of first appearance."""
    groups = []
    for rank, value in enumerate(values):
        for ranks, seen in groups:
            if seen == value:
                ranks.append(rank)
                break
        else:
            groups.append(([rank], value))
    return groups


def ranks_text(ranks) -> str:
    """'rank 3' or 'ranks 0, 1, 2'."""
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
