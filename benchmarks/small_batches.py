"""xpnet's speedup from one thread to all cores on small work: the book's networks at small batches.

    python benchmarks/small_batches.py [--rounds 5] [--steps 15] [--cases NAME ...] [--out DIR]
                                       [--source TREE --label COMMIT]

Handing work to a thread costs its waking and, on every NumPy call, a turn
at the interpreter lock; on small batches that cost can exceed what a
second core gives. This benchmark times xpnet's training step (forward,
backward and an SGD update) and inference of the book's networks at the
batch sizes of its chapters and smaller, at one thread and at all cores,
each thread count in processes of its own, alternating round by round.
It writes ``small-batches-<cores>core-<date>.json`` and ``.md``: the
medians over rounds, xpnet's speedup, and whether more cores ever made a
case slower (a speedup under ``SLOWER``, which leaves room for the
machine's drift). ``--source`` measures another tree (an older commit),
as in ``cpu_vs_pytorch.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_vs_pytorch as cvp  # noqa: E402

# name: (network, constructor arguments, one example's shape, batch)
CASES = {
    "MultiLayerNet, batch 100": ("MultiLayerNet", (784, [100] * 5, 10), (784,), 100),
    "MultiLayerNet, batch 1000": ("MultiLayerNet", (784, [100] * 5, 10), (784,), 1000),
    "MultiLayerNetExtend (batch norm), batch 100": ("MultiLayerNetExtend", (784, [100] * 5, 10), (784,), 100),
    "SimpleConvNet, batch 10": ("SimpleConvNet", (), (1, 28, 28), 10),
    "SimpleConvNet, batch 20": ("SimpleConvNet", (), (1, 28, 28), 20),
    "SimpleConvNet, batch 50": ("SimpleConvNet", (), (1, 28, 28), 50),
    "SimpleConvNet, batch 100": ("SimpleConvNet", (), (1, 28, 28), 100),
    "DeepConvNet, batch 4": ("DeepConvNet", (), (1, 28, 28), 4),
    "DeepConvNet, batch 10": ("DeepConvNet", (), (1, 28, 28), 10),
    "DeepConvNet, batch 20": ("DeepConvNet", (), (1, 28, 28), 20),
}
SLOWER = 0.9  # a speedup below this: more cores made the case slower, beyond the drift of this kind of machine


def time_cases(names, steps, warmup=3):
    """In the measuring process: ``{"<case> train" | "<case> inference": median ms}`` over ``steps`` calls."""
    import numpy as np

    import xpnet.nets
    from xpnet.optimizer import SGD

    rng = np.random.default_rng(0)
    times = {}
    for name in names:
        network, args, shape, batch = CASES[name]
        kwargs = {"use_batchnorm": True} if network == "MultiLayerNetExtend" else {}
        net, optimizer = getattr(xpnet.nets, network)(*args, **kwargs), SGD(lr=0.01)
        x, t = rng.random((batch, *shape), dtype=np.float32), rng.integers(0, 10, batch)
        for what, fn in (("train", lambda: optimizer.update(net.params, net.gradient(x, t))),
                         ("inference", lambda: net.predict(x))):
            for _ in range(warmup):
                fn()
            calls = []
            for _ in range(steps):
                start = time.perf_counter()
                fn()
                calls.append(time.perf_counter() - start)
            times[f"{name} {what}"] = statistics.median(calls) * 1e3
    return times


def measure(names, counts, rounds, steps):
    """Processes alternating between the thread counts, round by round: a list of records."""
    records = []
    for r in range(rounds):
        for threads in counts if r % 2 == 0 else counts[::-1]:
            load = os.getloadavg()[0]
            records.append({"threads": threads, "round": r, "load": load, "ms": cvp.run_child(steps, *names, threads=threads, script=__file__)})
            print(f"round {r + 1}/{rounds}: {threads} threads, load {load:.2f}", file=sys.stderr)
    return records


def summarize(records, counts):
    """Per case: the median over rounds at the first and last thread count, and the speedup between them."""
    first, last = counts[0], counts[-1]

    def median(threads, case):
        return statistics.median(r["ms"][case] for r in records if r["threads"] == threads)

    cases = records[0]["ms"]
    return {case: {"one_ms": median(first, case), "all_ms": median(last, case),
                   "speedup": median(first, case) / median(last, case)} for case in cases}


def report(result):
    m, (first, last) = result["machine"], (result["threads"][0], result["threads"][-1])
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores; NumPy {m['numpy']}; float32; commit "
             f"{m.get('commit') or 'unknown'}; {m['date']} {m['time']}; {result['rounds']} rounds of alternating "
             f"processes, {result['steps']} timed calls of each case in each; {cvp.load_range(result['records'])}",
             "", f"| case | {first} thread{'s' if first > 1 else ''} ms | {last} threads ms | speedup | "
             f"slower with more threads (< {SLOWER}) |", "| --- | ---: | ---: | ---: | --- |"]
    for case, r in result["summary"].items():
        lines.append(f"| {case} | {r['one_ms']:.2f} | {r['all_ms']:.2f} | {r['speedup']:.2f} | "
                     f"{'yes' if r['speedup'] < SLOWER else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(time_cases(argv[2:], int(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser.add_argument("--threads", type=int, nargs=2, default=[1, cores], metavar=("FEW", "MANY"),
                        help=f"the two thread counts compared (default: 1 and all cores, {cores})")
    parser.add_argument("--rounds", type=int, default=5, help="processes per thread count, alternating")
    parser.add_argument("--steps", type=int, default=15, help="timed calls of each case in each process")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), metavar="CASE",
                        help="the cases to time (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="folder for small-batches-<cores>core-<date>.*")
    cvp.add_source_options(parser)
    args = parser.parse_args(argv)
    cvp.use_source(args)
    records = measure(args.cases, args.threads, args.rounds, args.steps)
    result = {"machine": cvp.machine(), "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "summary": summarize(records, args.threads), "records": records}
    text = report(result)
    print(text)
    if args.out:
        suffix = f"-{args.label}" if args.label else ""
        cvp.save(args.out, f"small-batches-{cores}core-{result['machine']['date']}{suffix}", result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
