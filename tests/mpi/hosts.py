"""Run under mpiexec across two "hosts" (network namespaces): train.py's run, plus which network
namespace each rank ran in and how many bytes it received on its interface ``eth0``.

    hosts.py OUT_DIR    (writes OUT_DIR/hosts.json from rank 0, besides train.py's results)
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train  # noqa: E402

from xpnet import distributed  # noqa: E402


def received(interface="eth0"):
    for line in Path("/proc/self/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == interface:
            return int(counters.split()[0])
    return None


def main(out_dir):
    before = received()
    train.main(out_dir)
    comm = distributed.Communicator()
    report = comm.allgather_object({"rank": comm.rank, "namespace": os.readlink("/proc/self/ns/net"),
                                    "eth0 bytes received": None if before is None else received() - before})
    if comm.rank == 0:
        (Path(out_dir) / "hosts.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
