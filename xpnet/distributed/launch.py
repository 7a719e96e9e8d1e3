"""Starting a distributed run safely: one GPU per rank, the same run on every rank, a failure that ends the job.

Without care an MPI job hangs: a rank that raises leaves the others
waiting in their next collective for ever. :func:`abort_on_exception`
(which :func:`init` installs) turns an uncaught exception on any rank into
``MPI.COMM_WORLD.Abort``, after printing that rank's traceback; a rank
killed by a signal is noticed by the launcher (``mpiexec``), which ends the
others. ``python -m mpi4py script.py`` does the same for a script that
does not call :func:`init`.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import traceback
from pathlib import Path

from .. import backend
from .communicator import Communicator, DistributedError, group_ranks, ranks_text

__all__ = ["init", "launched_size", "abort_on_exception", "abort_unless_zero", "check_same_run", "run_signature", "seed_ranks", "use_local_device"]

_PACKAGE = Path(__file__).resolve().parents[1]


def init(device=None, *, mpi_comm=None, nccl="auto", argv=None, check=True, abort=True) -> Communicator:
    """Start this process's part of a data-parallel run; call it on every rank before building the network.

    In order: the communicator (``mpi_comm``, default ``MPI.COMM_WORLD``);
    with ``abort`` an excepthook that ends the whole job when this rank
    raises; with ``check`` the check that every rank runs the same
    arguments (``argv``, default ``sys.argv[1:]``) and the same xpnet; the
    device (:func:`use_local_device`); and on a GPU, NCCL for the
    collectives: ``nccl`` is ``"auto"`` (where every rank can, else host
    copies and MPI, with the reason in ``comm.nccl_reason``), ``"required"``
    or ``"off"``.
    """
    if nccl not in ("auto", "required", "off"):
        raise ValueError(f"init: nccl must be 'auto', 'required' or 'off', got {nccl!r}")
    comm = Communicator(mpi_comm)
    if abort:
        abort_on_exception(comm)
    if check:
        check_same_run(comm, argv)
    if use_local_device(comm, device) != "cpu" and nccl != "off":
        comm.start_nccl(required=nccl == "required")
    return comm


# Variables that MPI launchers set in every process they start, and what they hold.
_LAUNCHER_SIZES = (
    ("PMI_SIZE", "MPICH's and Intel MPI's mpiexec (Hydra)"),
    ("OMPI_COMM_WORLD_SIZE", "Open MPI's mpirun"),
    ("MV2_COMM_WORLD_SIZE", "MVAPICH's mpirun"),
)


def launched_size(environ=None) -> int | None:
    """The number of processes an MPI launcher started this one among, read from the environment without
    starting MPI; None when no launcher is seen (a plain ``python`` or ``xpnet`` run).

    A command such as ``xpnet train`` can decide with it whether to call
    :func:`init`: ``mpiexec -n 4 xpnet train ...`` gives 4. Slurm's ``srun
    --mpi=pmix`` is recognized by ``PMIX_RANK`` with ``SLURM_NTASKS``.
    """
    environ = os.environ if environ is None else environ
    for name, _ in _LAUNCHER_SIZES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    if "PMIX_RANK" in environ and environ.get("SLURM_NTASKS", "").isdigit():
        return int(environ["SLURM_NTASKS"])
    return None


# --- failure ---------------------------------------------------------------------------


def abort_on_exception(comm) -> None:
    """An uncaught exception on this rank prints its traceback, headed by the rank, and aborts every rank.

    Python's default would end this process only, and the other ranks would
    wait for it in their next collective for ever.
    """
    previous = sys.excepthook
    if getattr(previous, "xpnet_aborts", False):  # installed already
        return

    def hook(kind, value, tb):
        try:
            sys.stdout.flush()
            text = "".join(traceback.format_exception(kind, value, tb))
            sys.stderr.write(f"xpnet.distributed: rank {comm.rank} of {comm.size} (host {comm.host}) failed; "
                             f"aborting the job\n{text}")
            sys.stderr.flush()
        finally:
            if previous is not sys.__excepthook__:  # another hook was installed: let it see the error too
                previous(kind, value, tb)
            comm.abort(1)

    hook.xpnet_aborts = True
    sys.excepthook = hook


def abort_unless_zero(comm, code) -> int:
    """Return 0 when ``code`` is 0; otherwise end the whole job with ``code`` now (``MPI.COMM_WORLD.Abort``).

    For a command that reports an error by its exit status: a rank that
    simply exits, even with an error status, leaves the others waiting in
    their next collective for ever. ``sys.exit(abort_unless_zero(comm, main()))``.
    """
    code = int(code or 0)
    if code:
        sys.stdout.flush()
        sys.stderr.write(f"xpnet.distributed: rank {comm.rank} of {comm.size} (host {comm.host}) ends with exit "
                         f"status {code}; aborting the job\n")
        sys.stderr.flush()
        comm.abort(code)
    return 0


# --- the same run everywhere -----------------------------------------------------------------


def _source_digest() -> str:
    """SHA-256 of xpnet's Python sources (relative paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_signature(argv=None) -> dict:
    """What every rank of one run must share: its arguments, xpnet's version and a digest of xpnet's sources."""
    from .. import __version__

    return {"argv": list(sys.argv[1:] if argv is None else argv), "xpnet": __version__, "sources": _source_digest()}


def _describe_signature(signature) -> str:
    return (f"arguments `{shlex.join(signature['argv'])}`, xpnet {signature['xpnet']} "
            f"(sources {signature['sources'][:12]})")


def check_same_run(comm, argv=None) -> dict:
    """Make sure every rank was started with the same arguments and the same xpnet (version and sources).

    Otherwise a DistributedError on every rank names the ranks of each
    variant, e.g. "ranks 0, 2: arguments `--epochs 3` ...; rank 1: arguments
    `--epochs 4` ...". Returns this rank's signature.
    """
    signature = run_signature(argv)
    signatures = comm.allgather_object(signature)
    if any(s != signatures[0] for s in signatures):
        groups = "; ".join(f"{ranks_text(r)}: {_describe_signature(s)}" for r, s in group_ranks(signatures))
        raise DistributedError(f"the ranks were not started alike: {groups}. Start every rank with the same "
                               f"arguments and the same xpnet")
    return signature


# --- randomness and devices --------------------------------------------------------------


def seed_ranks(comm, seed=None) -> int:
    """Seed xpnet's generators with ``seed + rank``, so that each rank draws its own dropout masks.

    ``seed`` None: rank 0 draws one and every rank gets it. Returns the
    shared ``seed``, for what must be the same everywhere (the shuffle of
    the global batches). Initial weights drawn afterwards differ between
    ranks: :func:`broadcast_parameters` makes them rank 0's.
    """
    if seed is None:
        seed = int(backend.host_rng().integers(2**31)) if comm.rank == 0 else None
    seed = int(comm.bcast_object(None if seed is None else int(seed), root=0))
    backend.seed(seed + comm.rank)
    return seed


def use_local_device(comm, device=None) -> str:
    """Make this rank's device the default and return it: the CPU, or on a GPU the one given by ``local_rank``.

    ``device`` is 'cpu', 'gpu' or 'auto' (default: ``XPNET_DEVICE``). A GPU
    rank takes ``gpu:<local_rank mod the node's GPU count>``, so that the
    ranks of a node spread over its GPUs; an explicit 'gpu:N' is kept as it
    is (then ranks of one node share it, and NCCL is refused). 'auto' picks
    the GPU on every rank or on none: the ranks agree.
    """
    if device is None:  # the name as given, not normalized: XPNET_DEVICE=gpu means each rank's own GPU
        device = os.environ.get("XPNET_DEVICE") or "cpu"
    name = str(device).strip().lower()
    if name in ("gpu", "cuda", "auto"):
        usable = backend.gpu_available()
        if name == "auto":
            usable = not comm.any(not usable)
        if name == "auto" and not usable:
            return backend.set_device("cpu")
        count = len(backend.gpu_devices()) if usable else 0
        if count == 0:
            raise DistributedError(f"rank {comm.rank} on {comm.host}: the GPU was asked for but cannot be used: "
                                   f"{backend.gpu_unavailable_reason()}")
        return backend.set_device(f"gpu:{comm.local_rank % count}")
    return backend.set_device(name)
