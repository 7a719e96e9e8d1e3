"""The timed suite, each library in processes of its own, alternating, and the report of them all.

    python benchmarks/suite.py --out DIR [--rounds 3] [--threads N] [-k EXPR] [-m EXPR] [--stat median]
                               [pytest-benchmark options, e.g. --benchmark-max-time=0.5]

Each round runs ``XPNET_BENCH=1 python -m pytest benchmarks --bench-library
LIBRARY`` once for xpnet and once for PyTorch, in that order in the first
round and the other way round in the next (xpnet, torch, torch, xpnet, ...),
so that a neighbour who slows the machine for a while slows both alike. In
one process the two libraries' thread pools take each other's cores, so a
ratio from one process is not a result. Every process gets the same thread
count (``XPNET_NUM_THREADS``, which the PyTorch peers follow too, and the
BLAS and OpenMP variables) and writes ``DIR/LIBRARY-ROUND.json`` and its
log ``DIR/LIBRARY-ROUND.log``; then ``xpnet.tools.benchreport`` writes
``DIR/report.md`` (and ``speedup.png``) from all the files: a case's time is
the median over the processes that timed it.

``-k``, ``-m`` and any option this script does not know (pytest-benchmark's
``--benchmark-...``) go to every pytest process. The exit status is 1 if any
process failed, else the report's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIBRARIES = ("xpnet", "torch")
USAGE_ERROR = 4  # pytest's exit status for a usage error: every other process would fail alike


def order(rounds):
    """[(round, library), ...]: xpnet then torch in the first round, torch then xpnet in the next, and so on."""
    return [(r, library) for r in range(1, rounds + 1)
            for library in (LIBRARIES if r % 2 else LIBRARIES[::-1])]


def child_env(threads):
    """The environment of every timed process: the source tree first on the path, every pool at ``threads``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    n = str(threads)
    return {**os.environ, "PYTHONPATH": path, "XPNET_BENCH": "1", "XPNET_NUM_THREADS": n, "OMP_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def pytest_command(library, json_path, keyword=None, marks=None, extra=()):
    command = [sys.executable, "-m", "pytest", str(HERE), "-p", "no:xdist", "-p", "no:cacheprovider",
               "--bench-library", library, f"--benchmark-json={json_path}"]
    if keyword:
        command += ["-k", keyword]
    if marks:
        command += ["-m", marks]
    return command + list(extra)


def default_threads():
    sys.path.insert(0, str(ROOT))
    import xpnet

    return xpnet.get_num_threads()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Other options go to pytest (pytest-benchmark's --benchmark-...).")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON, the logs and the report")
    parser.add_argument("--rounds", type=int, default=3, help="processes per library, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of both libraries (default: xpnet.get_num_threads(), every usable core "
                             "unless XPNET_NUM_THREADS says otherwise)")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest's -k: which cases")
    parser.add_argument("-m", dest="marks", metavar="EXPR", help="pytest's -m")
    parser.add_argument("--stat", choices=("median", "min", "mean"), default="median",
                        help="the statistic of each process's rounds in the report")
    args, extra = parser.parse_known_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, not {args.threads}")
    clash = [a for a in extra if a.split("=")[0] in ("--benchmark-json", "--bench-library", "-n", "--numprocesses")]
    if clash:
        parser.error(f"{' '.join(clash)}: this script chooses the library and the JSON of each process itself, "
                     f"and never runs pytest-xdist")
    return args, extra


def main(argv=None):
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    threads = args.threads or default_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    env = child_env(threads)
    files, failed = [], []
    for r, library in order(args.rounds):
        json_path = args.out / f"{library}-{r}.json"
        log_path = args.out / f"{library}-{r}.log"
        json_path.unlink(missing_ok=True)
        command = pytest_command(library, json_path, args.keyword, args.marks, extra)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"round {r}/{args.rounds}: {library} at {threads} threads, load {load:.2f}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            status = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"  exit {status} after {time.perf_counter() - start:.0f} s: {log_path}", file=sys.stderr, flush=True)
        if status == USAGE_ERROR:
            print(log_path.read_text(encoding="utf-8"), file=sys.stderr)
            return 2
        if status != 0:
            failed.append(log_path.name)
        if json_path.exists():
            files.append(json_path)
    if not files:
        print("no process wrote a result file; see the logs in " + str(args.out), file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT))
    from xpnet.tools import benchreport

    status = benchreport.main([*map(str, files), "--out", str(args.out), "--stat", args.stat])
    if failed:
        print(f"failed: {', '.join(failed)} (the report holds what the others timed)", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
