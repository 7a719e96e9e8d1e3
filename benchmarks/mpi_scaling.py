"""Data-parallel scaling on the CPU: images per second with 1 and 2 MPI ranks of one thread each.

    python benchmarks/mpi_scaling.py [--rounds 5] [--steps 20] [--batch 100] [--out DIR]

Each run is ``mpiexec -n R python benchmarks/mpi_scaling.py --worker ...``
with OMP, OpenBLAS and MKL at one thread per rank. A worker trains the
book's SimpleConvNet (1x28x28 images, Adam) with xpnet.distributed's
explicit step (its slice of the global batch, ``distributed.gradient``, the
optimizer's update) for a few untimed steps, then ``--steps`` timed ones
between two barriers; images per second is the global batch times the
steps over rank 0's wall time. Two kinds of scaling:

* strong: a global batch of ``--batch`` examples, split over the ranks;
* weak: ``--batch`` examples per rank, a global batch of R times that.

Runs alternate round by round (1 rank, 2 ranks, each mode) so that a
noisy neighbour slows every configuration alike; the result of each is
the median over ``--rounds``. Writes ``mpi-scaling-<cores>core-<date>.json``
and ``.md`` into ``--out`` with the machine, its load average before and
after, the versions and the commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RANKS = (1, 2)
MODES = ("strong", "weak")


def worker(mode, batch, steps, warmup):
    """One rank's part; rank 0 prints one JSON line."""
    import numpy as np

    from xpnet import distributed
    from xpnet.nets import SimpleConvNet
    from xpnet.optimizer import Adam

    comm = distributed.init(device="cpu")
    distributed.seed_ranks(comm, 0)
    global_batch = batch if mode == "strong" else batch * comm.size
    rng = np.random.default_rng(0)
    x = rng.random((global_batch, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, global_batch)
    net, optimizer = SimpleConvNet(), Adam()
    distributed.broadcast_parameters(comm, net)
    mine = distributed.shard(comm, np.arange(global_batch))
    xb, tb = x[mine], t[mine]

    def step():
        grads, _ = distributed.gradient(comm, net, xb, tb)
        optimizer.update(net.params, grads)

    for _ in range(warmup):
        step()
    comm.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    comm.barrier()
    seconds = time.perf_counter() - start
    distributed.check_in_sync(comm, net)
    buf = np.zeros(sum(p.size for p in net.params.values()) + 2, dtype=np.float32)  # the step's gradient buffer
    comm.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        comm.allreduce_sum(buf)
    allreduce = (time.perf_counter() - start) / steps
    if comm.rank == 0:
        print(json.dumps({"mode": mode, "ranks": comm.size, "global_batch": global_batch,
                          "per_rank_batch": len(mine), "steps": steps, "seconds": seconds,
                          "images_per_second": global_batch * steps / seconds,
                          "gradient_bytes": buf.nbytes, "allreduce_ms": 1e3 * allreduce}), flush=True)


def launch(ranks, mode, args):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(ranks), sys.executable, __file__,
               "--worker", mode, "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = {**os.environ, **ONE_THREAD, "XPNET_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine():
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version()}


def versions():
    import numpy as np
    from mpi4py import MPI  # the driver starts MPI too (a singleton); harmless, and it names the library

    return {"numpy": np.__version__, "mpi4py": __import__("mpi4py").__version__,
            "mpi": " ".join(MPI.Get_library_version().splitlines()[0].split())}


def commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def table(results):
    rows = ["| scaling | ranks | global batch | per rank | images/s (median) | runs | speed-up | efficiency |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode in MODES:
        base = results[mode]["1"]["median"]
        for ranks in RANKS:
            r = results[mode][str(ranks)]
            speedup = r["median"] / base
            rows.append(f"| {mode} | {ranks} | {r['global_batch']} | {r['per_rank_batch']} | {r['median']:,.0f} | "
                        f"{', '.join(f'{v:,.0f}' for v in r['runs'])} | {speedup:.2f}x | {speedup / ranks:.0%} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.batch, args.steps, args.warmup)

    load_before = os.getloadavg()
    runs = {mode: {str(r): [] for r in RANKS} for mode in MODES}
    allreduce_ms = []
    shapes = {}
    for round_ in range(args.rounds):
        for mode in MODES:
            for ranks in RANKS:
                result = launch(ranks, mode, args)
                runs[mode][str(ranks)].append(result["images_per_second"])
                if ranks > 1:
                    allreduce_ms.append(result["allreduce_ms"])
                shapes[(mode, ranks)] = result
                print(f"round {round_ + 1}/{args.rounds}: {mode}, {ranks} rank(s): "
                      f"{result['images_per_second']:,.0f} images/s", flush=True)
    load_after = os.getloadavg()
    results = {mode: {str(r): {"runs": runs[mode][str(r)], "median": statistics.median(runs[mode][str(r)]),
                               "global_batch": shapes[(mode, r)]["global_batch"],
                               "per_rank_batch": shapes[(mode, r)]["per_rank_batch"]} for r in RANKS}
               for mode in MODES}
    report = {"benchmark": "mpi_scaling", "network": "SimpleConvNet", "optimizer": "Adam", "dtype": "float32",
              "threads_per_rank": 1, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
              "date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine(),
              "load_average_before": load_before, "load_average_after": load_after,
              "versions": versions(), "results": results,
              "gradient_allreduce": {"bytes": shapes[("strong", 2)]["gradient_bytes"], "ranks": 2,
                                     "median_ms": statistics.median(allreduce_ms), "runs_ms": allreduce_ms}}
    text = (f"# Data-parallel scaling on the CPU ({report['date']}, commit {report['commit']})\n\n"
            f"SimpleConvNet, Adam, float32, one thread per rank, `mpiexec -n 1|2`, {args.steps} timed steps after "
            f"{args.warmup} untimed ones, median of {args.rounds} alternating rounds.\n\n"
            f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; load average "
            f"{', '.join(f'{v:.2f}' for v in load_before)} before and {', '.join(f'{v:.2f}' for v in load_after)} "
            f"after (1, 5, 15 minutes); {report['versions']['mpi']}, mpi4py {report['versions']['mpi4py']}, "
            f"NumPy {report['versions']['numpy']}.\n\n{table(results)}\n\n"
            f"One allreduce of the step's gradient buffer ({report['gradient_allreduce']['bytes'] / 2**20:.2f} MiB) "
            f"on 2 ranks: {report['gradient_allreduce']['median_ms']:.2f} ms (median).\n")
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"mpi-scaling-{report['machine']['cores']}core-{report['date']}"
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / f"{stem}.md").write_text(text)
        print(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
