"""Run under mpiexec: ways for a distributed run to go wrong, each of which must end the whole job.

    fail.py raise        rank 1 raises after the first allreduce; the others wait in the next one
    fail.py kill         rank 1 kills itself (SIGKILL) there instead
    fail.py exit-status  rank 1 ends there with exit status 3, as a command reporting an error does
    fail.py plain-raise  as `raise`, without xpnet.distributed.init (launch with `python -m mpi4py`)
    fail.py same-run ... every rank checks that all were started with the same arguments
"""

import os
import signal
import sys

import numpy as np

from xpnet import distributed


def main(mode):
    if mode == "same-run":
        distributed.init(device="cpu")
        print("started alike", flush=True)
        return
    if mode == "plain-raise":
        comm = distributed.Communicator()
    else:
        comm = distributed.init(device="cpu", check=False)
    buf = np.ones(4, dtype=np.float32)
    comm.allreduce_sum(buf)
    if comm.rank == 1:
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "exit-status":
            sys.exit(distributed.abort_unless_zero(comm, 3))
        raise ValueError(f"rank 1 fails on purpose ({mode})")
    comm.allreduce_sum(buf)  # rank 1 never comes: without an abort this waits for ever


if __name__ == "__main__":
    main(sys.argv[1])
