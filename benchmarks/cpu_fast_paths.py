"""Each CPU fast path on and off: does it pay? The cases it serves timed in processes of their own, alternating.

    python benchmarks/cpu_fast_paths.py [--threads 1 2] [--rounds 5] [--steps 15] [--out DIR]

For every fast path of :mod:`xpnet.fastpaths`, the cases it speeds up
(training steps: forward, backward and an SGD update; or inference; batch
100, float32) run with it on, and off (``XPNET_CPU_FAST_PATHS_OFF=<name>``), each in a
fresh process, on and off alternating round by round at each thread
count. A case's time is the median over rounds of each process's median.
``gain`` is the time off divided by the time on: above 1, the fast path
pays. Writes ``cpu-fast-paths-<cores>core-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_vs_pytorch as cvp  # noqa: E402

CASES = {  # fast path: the cases (network and pass) it should speed up
    "input_gradient_by_gather": ("DeepConvNet train",),
    "products_by_filter_row": ("DeepConvNet train",),  # SimpleConvNet's one convolution has rows of 5 values
    "columns_by_offset": ("SimpleConvNet train", "DeepConvNet train"),  # their first convolutions: 1 channel
    "inference_by_slices": ("SimpleConvNet inference", "DeepConvNet inference"),  # at 1 thread: not taken
    "training_by_slices": ("SimpleConvNet train", "DeepConvNet train"),  # at 1 thread: not taken
    "keep_freed_memory": ("SimpleConvNet train", "DeepConvNet train"),
    "first_layer_without_input_gradient": ("SimpleConvNet train", "DeepConvNet train"),
}


def measure(thread_counts, rounds, batch, steps, names):
    records = []
    for r in range(rounds):
        for threads in thread_counts:
            for name in names:
                networks = ",".join(dict.fromkeys(case.split()[0] for case in CASES[name]))
                for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    load = os.getloadavg()[0]
                    env = {"XPNET_CPU_FAST_PATHS_OFF": name if state == "off" else ""}
                    ms = cvp.run_child("time", "xpnet", threads, batch, steps, networks, threads=threads, env=env)
                    records.append({"fast_path": name, "state": state, "threads": threads, "round": r, "load": load,
                                    **{key: {case: v for case, v in values.items() if case in CASES[name]}
                                       for key, values in ms.items()}})
                    print(f"round {r + 1}/{rounds}: {name} {state} at {threads} threads, load {load:.2f}",
                          file=sys.stderr)
    return records


def summarize(records):
    rows = []
    keys = sorted({(r["fast_path"], r["threads"]) for r in records}, key=lambda k: (list(CASES).index(k[0]), k[1]))
    for name, threads in keys:
        mine = [r for r in records if r["fast_path"] == name and r["threads"] == threads]
        for case in mine[0]["ms"]:
            row = {"fast_path": name, "case": case, "threads": threads}
            for key in ("ms", "cpu_ms"):
                row[f"on_{key}"] = statistics.median(r[key][case] for r in mine if r["state"] == "on")
                row[f"off_{key}"] = statistics.median(r[key][case] for r in mine if r["state"] == "off")
            row["gain"], row["cpu_gain"] = row["off_ms"] / row["on_ms"], row["off_cpu_ms"] / row["on_cpu_ms"]
            rows.append(row)
    return rows


def report(result):
    m = result["machine"]
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores; NumPy {m['numpy']}; float32, batch {result['batch']}; "
             f"commit {m.get('commit') or 'unknown'}; {m['date']} {m['time']}; {result['rounds']} rounds of "
             f"alternating processes, {cvp.load_range(result['records'])}", "",
             "| fast path | case | threads | on ms | off ms | gain (off ÷ on) | on CPU ms | off CPU ms | CPU gain |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['fast_path']} | {r['case']} | {r['threads']} | {r['on_ms']:.1f} | {r['off_ms']:.1f} | "
                     f"{r['gain']:.2f} | {r['on_cpu_ms']:.1f} | {r['off_cpu_ms']:.1f} | {r['cpu_gain']:.2f} |")
    lines += ["", cvp.CPU_TIME_NOTE]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 and all cores")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--fast-paths", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    facts = cvp.machine()
    counts = sorted(set(args.threads or (1, facts["cores"])))
    records = measure(counts, args.rounds, args.batch, args.steps, args.fast_paths)
    result = {"machine": facts, "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
              "rows": summarize(records), "records": records}
    text = report(result)
    print(text)
    if args.out:
        cvp.save(args.out, f"cpu-fast-paths-{facts['cores']}core-{facts['date']}", result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
