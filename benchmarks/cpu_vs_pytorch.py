"""xpnet against PyTorch on the CPU: training step, inference and peak memory, each library in a process of its own.

    python benchmarks/cpu_vs_pytorch.py [--threads 2] [--batch 100] [--rounds 5] [--steps 15] [--out DIR]

Both run float32 on the same shapes (the book's SimpleConvNet and
DeepConvNet on 28x28 images) with the same thread count:
``xpnet.set_num_threads`` and ``torch.set_num_threads``. A training step is
forward, backward and an SGD update; inference is a forward pass in
evaluation mode.

Each library runs in a process of its own, never beside the other: in
one process, PyTorch's OpenMP threads and NumPy's BLAS threads spin after
each call and take each other's cores (PyTorch's SimpleConvNet step
measured 38 ms beside xpnet and 18 ms alone on a 2-core Xeon). The
processes alternate round by round (xpnet then PyTorch, then PyTorch then
xpnet), so that a neighbour who slows the machine for a while slows both
alike; each process times ``--steps`` calls of every case after warm-up
calls, and a case's time is the median over its rounds of each process's
median. The load average is recorded before every process: on a shared
machine it says how much the figures can be trusted.

Peak memory is the resident-set high-water mark of a DeepConvNet training
step (after a warm-up step) above the size of the process before any step
ran, with the network and the data in place, in a fresh process per
library (Linux only).

:mod:`thread_scaling` runs the same processes at 1, 2, ... and all cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIBRARIES = ("xpnet", "torch")
NETWORKS = ("SimpleConvNet", "DeepConvNet")
KINDS = ("train", "inference")
CASES = tuple(f"{net} {kind}" for net in NETWORKS for kind in KINDS)
TIME_TARGETS = {"all cores": 1.3, "1 thread": 1.2}  # xpnet's time / PyTorch's, every case
MEMORY_TARGET = 1.5
SPEEDUP_TARGET = 0.9  # xpnet's speedup from 1 thread to all cores / PyTorch's
MANY_CORE_TARGET = ("DeepConvNet train", 16, 2.0)  # on a many-core machine: this case at this count, within 2x
LR = 0.01
CPU_TIME_NOTE = ("ms: wall clock, the figure of the targets. CPU ms: the CPU time of all the process's threads, "
                 "which a busy machine inflates less than the wall clock: at one thread, it is the work a step "
                 "takes; at more, it adds the pools' overhead (and PyTorch's OpenMP threads count their "
                 "spin-waiting).")


# --- the two libraries, each on its own ----------------------------------------------------------------


def torch_model(name):
    """The PyTorch twin of the xpnet network ``name`` (the same layers and shapes)."""
    import torch.nn as nn

    if name == "SimpleConvNet":
        return nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                             nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))
    layers, channels = [], 1
    for i, (filters, pad) in enumerate([(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]):
        layers += [nn.Conv2d(channels, filters, 3, padding=pad), nn.ReLU()]
        channels = filters
        if i % 2:
            layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(50, 10))


def make_cases(library, batch, networks=NETWORKS, seed=0):
    """``{"<network> train": step, "<network> inference": predict}`` for one library, on seeded data."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, batch)
    cases = {}
    for name in networks:
        if library == "xpnet":
            import xpnet.nets
            from xpnet.optimizer import SGD

            net, optimizer = getattr(xpnet.nets, name)(), SGD(lr=LR)

            def step(net=net, optimizer=optimizer):
                optimizer.update(net.params, net.gradient(x, t))

            cases[f"{name} train"], cases[f"{name} inference"] = step, lambda net=net: net.predict(x)
        else:
            import torch
            import torch.nn.functional as F

            model = torch_model(name)
            optimizer = torch.optim.SGD(model.parameters(), lr=LR)
            xt, tt = torch.from_numpy(x), torch.from_numpy(t)

            def step(model=model, optimizer=optimizer):
                model.train()
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(xt), tt).backward()
                optimizer.step()

            def predict(model=model):
                model.eval()
                with torch.no_grad():
                    model(xt)

            cases[f"{name} train"], cases[f"{name} inference"] = step, predict
    return cases


def set_threads(library, threads):
    if library == "xpnet":
        import xpnet

        if hasattr(xpnet, "set_num_threads"):  # older trees (--source) have BLAS threads only, set by the environment
            xpnet.set_num_threads(threads)
    else:
        import torch

        torch.set_num_threads(threads)


SOURCE = ROOT  # the tree whose xpnet is measured (--source)


def child_env(threads):
    """The environment of a measuring process: the measured tree first on the path, pools sized before import."""
    path = os.pathsep.join(p for p in (str(SOURCE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "XPNET_NUM_THREADS": str(threads)}


def time_cases(library, threads, batch, steps, warmup=3, networks=NETWORKS):
    """In the measuring process: for every case, the median of ``steps`` timed calls in wall-clock milliseconds
    (``ms``) and in milliseconds of CPU time of all the process's threads (``cpu_ms``)."""
    set_threads(library, threads)
    wall, cpu = {}, {}
    for case, fn in make_cases(library, batch, networks).items():
        for _ in range(warmup):
            fn()
        walls, cpus = [], []
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
        wall[case], cpu[case] = statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3
    return {"ms": wall, "cpu_ms": cpu}


def peak_step_bytes(library, threads, batch):
    """In the measuring process: the peak resident set of a DeepConvNet training step above the idle process."""
    set_threads(library, threads)
    step = make_cases(library, batch, networks=("DeepConvNet",))["DeepConvNet train"]
    before = _rss("VmRSS")  # the network and the data exist, no step has run
    step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current size
    step()
    return _rss("VmHWM") - before


def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_child(*args, threads, env=None, script=__file__):
    """Run ``script`` (this one by default) in a fresh process (``--child ...``) at ``threads`` threads, on the
    tree measured, and return what it printed, as JSON."""
    done = subprocess.run([sys.executable, str(Path(script).resolve()), "--child", *map(str, args)],
                          capture_output=True, text=True, env={**child_env(threads), **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def measure(thread_counts, rounds, batch, steps):
    """Processes alternating between the libraries, round by round, at each thread count: a list of records."""
    records = []
    for r in range(rounds):
        for threads in thread_counts:
            order = LIBRARIES if r % 2 == 0 else LIBRARIES[::-1]
            for library in order:
                load = os.getloadavg()[0]
                times = run_child("time", library, threads, batch, steps, threads=threads)
                records.append({"library": library, "threads": threads, "round": r, "load": load, **times})
                print(f"round {r + 1}/{rounds}: {library} at {threads} threads, load {load:.2f}", file=sys.stderr)
    return records


def medians(records, library, threads, key="ms"):
    """Per case: the median over rounds of the processes' medians (``ms``: wall clock; ``cpu_ms``: CPU time)."""
    mine = [r[key] for r in records if r["library"] == library and r["threads"] == threads]
    return {case: statistics.median(m[case] for m in mine) for case in mine[0]}


def memory(threads, batch):
    if not sys.platform.startswith("linux"):
        return None
    peaks = {lib: run_child("memory", lib, threads, batch, threads=threads) for lib in LIBRARIES}
    return {"batch": batch, "threads": threads, "xpnet_mib": peaks["xpnet"] / 2**20,
            "torch_mib": peaks["torch"] / 2**20, "ratio": peaks["xpnet"] / peaks["torch"]}


# --- facts and tables ----------------------------------------------------------------------------------


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    facts = run_child("facts", "xpnet", 1, 0, threads=1)
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(), **facts, "commit": commit(), "date": time.strftime("%Y-%m-%d"),
            "time": time.strftime("%H:%M")}


def library_facts():
    import numpy as np

    import xpnet

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    facts = {"numpy": np.__version__, "torch": torch_version, "xpnet": xpnet.__version__}
    try:
        from xpnet import hostmem, threads
    except ImportError:  # an older tree (--source)
        from threadpoolctl import threadpool_info

        return {**facts, "blas": str([p for p in threadpool_info() if p["user_api"] == "blas"])}
    hostmem.keep_freed_memory()
    return {**facts, "blas": threads.blas_info(), "host_memory": hostmem.state()}


LABEL = None  # --label: what --source is, when it is not a git tree


def commit():
    """The git commit of the source tree measured, with "+changes" if it differs from it; else (a tree that is not
    a git checkout of its own, such as one from ``git archive``) the ``--label``, or None."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=SOURCE, capture_output=True, text=True, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(SOURCE).resolve():
            return LABEL  # a folder inside some other repository
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return LABEL
    return head + ("+changes" if dirty else "")


def load_range(records):
    loads = [r["load"] for r in records]
    return f"load average {min(loads):.2f} to {max(loads):.2f} (1-minute, before each process)"


def report(result):
    m = result["machine"]
    threads = result["threads"]
    target = TIME_TARGETS["1 thread" if threads == 1 else "all cores"]
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores, {threads} threads each; NumPy {m['numpy']}, "
             f"PyTorch {m['torch']}; float32, batch {result['batch']}; commit {m.get('commit') or 'unknown'}; "
             f"{m['date']} {m['time']}; {result['rounds']} rounds of alternating processes, "
             f"{load_range(result['records'])}",
             "", "| case | xpnet ms | PyTorch ms | ratio | target | met | xpnet CPU ms | PyTorch CPU ms |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for case, r in result["timings"].items():
        lines.append(f"| {case} | {r['xpnet_ms']:.1f} | {r['torch_ms']:.1f} | {r['ratio']:.2f} | ≤ {target} | "
                     f"{'yes' if r['ratio'] <= target else 'no'} | {r['xpnet_cpu_ms']:.1f} | {r['torch_cpu_ms']:.1f} |")
    mem = result.get("memory")
    if mem:
        lines.append(f"| DeepConvNet training step, peak memory at batch {mem['batch']} | {mem['xpnet_mib']:.0f} MiB | "
                     f"{mem['torch_mib']:.0f} MiB | {mem['ratio']:.2f} | ≤ {MEMORY_TARGET} | "
                     f"{'yes' if mem['ratio'] <= MEMORY_TARGET else 'no'} | | |")
    lines += ["", CPU_TIME_NOTE]
    return "\n".join(lines)


def timings(records, threads):
    xp, tc = medians(records, "xpnet", threads), medians(records, "torch", threads)
    xp_cpu, tc_cpu = medians(records, "xpnet", threads, "cpu_ms"), medians(records, "torch", threads, "cpu_ms")
    return {case: {"xpnet_ms": xp[case], "torch_ms": tc[case], "ratio": xp[case] / tc[case],
                   "xpnet_cpu_ms": xp_cpu[case], "torch_cpu_ms": tc_cpu[case]} for case in xp}


def save(out, stem, result, text):
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(text + "\n")


def add_source_options(parser):
    parser.add_argument("--source", type=Path, default=None,
                        help="measure the xpnet of another source tree (e.g. an older commit from git archive)")
    parser.add_argument("--label", default=None, help="what --source is (its commit): recorded and added to the names")


def use_source(args):
    global SOURCE, LABEL
    if args.source:
        SOURCE = args.source.resolve()
    LABEL = args.label


def child_main(argv):
    what, library, threads, batch, *rest = argv
    threads, batch = int(threads), int(batch)
    if what == "time":
        networks = rest[1].split(",") if len(rest) > 1 else NETWORKS
        print(json.dumps(time_cases(library, threads, batch, int(rest[0]), networks=networks)))
    elif what == "memory":
        print(json.dumps(peak_step_bytes(library, threads, batch)))
    else:
        print(json.dumps(library_facts()))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--memory-batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="processes per library, alternating")
    parser.add_argument("--steps", type=int, default=15, help="timed calls of each case in each process")
    parser.add_argument("--out", type=Path, default=None, help="folder for cpu-vs-pytorch-<cores>core-<date>.json and .md")
    add_source_options(parser)
    args = parser.parse_args(argv)
    use_source(args)
    records = measure([args.threads], args.rounds, args.batch, args.steps)
    result = {"machine": machine(), "batch": args.batch, "threads": args.threads, "rounds": args.rounds,
              "steps": args.steps, "timings": timings(records, args.threads),
              "memory": memory(args.threads, args.memory_batch), "records": records}
    text = report(result)
    print(text)
    if args.out:
        m = result["machine"]
        suffix = f"-{args.label}" if args.label else ""
        save(args.out, f"cpu-vs-pytorch-{m['cores']}core-{args.threads}threads-{m['date']}{suffix}", result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
