"""xpnet and PyTorch at 1, 2, ... and all cores: training steps and inference, side by side, with a plot.

    python benchmarks/thread_scaling.py [--threads 1 2 ...] [--rounds 5] [--steps 15] [--out DIR]
    python benchmarks/thread_scaling.py --combine RUN.json RUN.json ... --label combined --out DIR

The measuring processes are those of ``cpu_vs_pytorch.py``: each library
in a process of its own, the two alternating round by round, at every
thread count in turn. Writes ``thread-scaling-<cores>core-<date>.json``,
``.md`` (the times, ratios and speedups, and the issue's targets: at all
cores and at 1 thread xpnet within 1.3x and 1.2x of PyTorch's time,
xpnet's speedup from 1 thread to all cores at least 90% of PyTorch's, the
peak memory of a DeepConvNet step within 1.5x, and where 16 threads are
measured, DeepConvNet's step there within 2x) and ``.png`` (time and
speedup against threads, one column per case; needs matplotlib).

The default thread counts are every count up to 8, then powers of two,
and always all the cores this process may use.

``--combine`` measures nothing: it reads the JSON of earlier runs of the
same cases and reports the figures of all their rounds taken together
(the medians over every round, and the middle half of them), which on a
machine that drifts from run to run settle where one run's do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_vs_pytorch as cvp  # noqa: E402


def default_counts(cores):
    counts = {n for n in range(1, min(cores, 8) + 1)} | {2**k for k in range(3, cores.bit_length()) if 2**k <= cores}
    return sorted(counts | {cores})


def summarize(records, counts):
    """Per thread count and case: both libraries' times, the ratio, and each library's speedup over 1 thread."""
    table = {}
    base = {lib: cvp.medians(records, lib, counts[0]) for lib in cvp.LIBRARIES}
    for n in counts:
        ms = {lib: cvp.medians(records, lib, n) for lib in cvp.LIBRARIES}
        cpu = {lib: cvp.medians(records, lib, n, "cpu_ms") for lib in cvp.LIBRARIES}
        table[n] = {case: {"xpnet_ms": ms["xpnet"][case], "torch_ms": ms["torch"][case],
                           "ratio": ms["xpnet"][case] / ms["torch"][case],
                           "xpnet_speedup": base["xpnet"][case] / ms["xpnet"][case],
                           "torch_speedup": base["torch"][case] / ms["torch"][case],
                           "xpnet_cpu_ms": cpu["xpnet"][case], "torch_cpu_ms": cpu["torch"][case]}
                    for case in ms["xpnet"]}
    return table


def _round_times(records, library, threads, case):
    """``{round: ms}`` of one library's processes at one thread count."""
    return {r["round"]: r["ms"][case] for r in records if r["library"] == library and r["threads"] == threads}


def middle_half(values):
    """The first and third quartiles of ``values``: where the middle half of the rounds lies."""
    if len(values) < 2:
        return values[0], values[0]
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[0], quartiles[2]


def ratio_by_round(records, case, threads):
    """xpnet's time ÷ PyTorch's at ``threads``, round by round (the two processes of each round)."""
    x, t = (_round_times(records, lib, threads, case) for lib in cvp.LIBRARIES)
    return [x[r] / t[r] for r in sorted(x) if r in t]


def speedup_ratio_by_round(records, case, first, last):
    """xpnet's speedup from ``first`` to ``last`` threads ÷ PyTorch's, round by round."""
    x1, t1, xn, tn = (_round_times(records, lib, n, case) for n in (first, last) for lib in cvp.LIBRARIES)
    rounds = sorted(set(x1) & set(t1) & set(xn) & set(tn))
    return [(x1[r] / xn[r]) / (t1[r] / tn[r]) for r in rounds]


def targets(table, counts, memory, records):
    """The issue's targets: (what, measured, wanted, met, middle half of the rounds or None).

    The measured figure is that of the medians over rounds; the middle half
    is the same figure computed round by round, so that a reader sees how far
    the machine moved the figure between rounds.
    """
    rows = []
    first, last = counts[0], counts[-1]
    for case in cvp.CASES:
        if first == 1:
            r = table[1][case]["ratio"]
            rows.append((f"{case}, 1 thread: xpnet ÷ PyTorch", r, f"≤ {cvp.TIME_TARGETS['1 thread']}",
                         r <= cvp.TIME_TARGETS["1 thread"], middle_half(ratio_by_round(records, case, 1))))
        if last > first:
            r = table[last][case]["ratio"]
            rows.append((f"{case}, {last} threads: xpnet ÷ PyTorch", r, f"≤ {cvp.TIME_TARGETS['all cores']}",
                         r <= cvp.TIME_TARGETS["all cores"], middle_half(ratio_by_round(records, case, last))))
            s = table[last][case]
            rows.append((f"{case}, speedup {first} → {last} threads: xpnet {s['xpnet_speedup']:.2f}x, PyTorch "
                         f"{s['torch_speedup']:.2f}x; xpnet's ÷ PyTorch's", s["xpnet_speedup"] / s["torch_speedup"],
                         f"≥ {cvp.SPEEDUP_TARGET}", s["xpnet_speedup"] / s["torch_speedup"] >= cvp.SPEEDUP_TARGET,
                         middle_half(speedup_ratio_by_round(records, case, first, last))))
    case, many, limit = cvp.MANY_CORE_TARGET
    if many in table and many > 2:
        r = table[many][case]["ratio"]
        rows.append((f"{case}, {many} threads, the many-core target: xpnet ÷ PyTorch", r, f"≤ {limit}", r <= limit,
                     middle_half(ratio_by_round(records, case, many))))
    if memory:
        rows.append((f"DeepConvNet step at batch {memory['batch']}, {memory['threads']} threads: peak memory "
                     f"{memory['xpnet_mib']:.0f} MiB ÷ {memory['torch_mib']:.0f} MiB", memory["ratio"],
                     f"≤ {cvp.MEMORY_TARGET}", memory["ratio"] <= cvp.MEMORY_TARGET, None))
    return rows


SPREAD_NOTE = ("Rounds' middle half: the first and third quartiles of the same figure computed round by round "
               "(each library's processes of that round). Where this range straddles the wanted value, the "
               "machine's drift from round to round is as large as the distance to the target, and another run "
               "can read the other way.")


def combine(paths):
    """One result from the JSON of several runs of the same cases: all their rounds (renumbered run after run),
    the medians and targets over all of them, and the memory figure of the run with the median ratio."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    first = runs[0]

    def cases(run):
        m = run["machine"]
        return {"CPU": f"{m['cpu']}, {m['cores']} cores", "batch": run["batch"], "threads": run["counts"],
                "calls per process": run["steps"], "cases": sorted({c for r in run["records"] for c in r["ms"]})}

    for path, run in zip(paths[1:], runs[1:]):
        differ = [f"{what} {theirs} against {ours}" for (what, ours), theirs in
                  zip(cases(first).items(), cases(run).values()) if ours != theirs]
        if differ:
            raise SystemExit(f"--combine: {path} and {paths[0]} differ ({'; '.join(differ)}); only runs of the "
                             f"same cases on one machine combine")
    records, rounds = [], 0
    for run in runs:
        records += [{**record, "round": record["round"] + rounds} for record in run["records"]]
        rounds += run["rounds"]
    memories = sorted((run["memory"] for run in runs if run.get("memory")), key=lambda m: m["ratio"])
    memory = memories[(len(memories) - 1) // 2] if memories else None  # of an even count, the lower middle
    commits = dict.fromkeys(run["machine"].get("commit") or "unknown" for run in runs)
    machine = {**first["machine"], "commit": ", ".join(commits)}
    table = summarize(records, first["counts"])
    return {"machine": machine, "batch": first["batch"], "rounds": rounds, "steps": first["steps"],
            "counts": first["counts"], "table": table, "memory": memory,
            "targets": targets(table, first["counts"], memory, records), "records": records,
            "runs": [f"{Path(path).name} ({run['machine']['date']} {run['machine']['time']}, {run['rounds']} rounds)"
                     for path, run in zip(paths, runs)]}


def report(result):
    m, table = result["machine"], result["table"]
    runs = f" from {len(result['runs'])} runs ({'; '.join(result['runs'])})" if result.get("runs") else ""
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores; NumPy {m['numpy']} ({m['blas']}), PyTorch {m['torch']}; "
             f"float32, batch {result['batch']}; commit {m.get('commit') or 'unknown'}; {m['date']} {m['time']}; "
             f"{result['rounds']} rounds of alternating processes{runs}, {cvp.load_range(result['records'])}", ""]
    for case in cvp.CASES:
        lines += [f"### {case}", "", "| threads | xpnet ms | PyTorch ms | ratio | xpnet speedup | PyTorch speedup "
                                     "| xpnet CPU ms | PyTorch CPU ms |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for n, cases in table.items():
            r = cases[case]
            lines.append(f"| {n} | {r['xpnet_ms']:.1f} | {r['torch_ms']:.1f} | {r['ratio']:.2f} | "
                         f"{r['xpnet_speedup']:.2f} | {r['torch_speedup']:.2f} | {r['xpnet_cpu_ms']:.1f} | "
                         f"{r['torch_cpu_ms']:.1f} |")
        lines.append("")
    lines += ["### Targets", "", "| target | measured | rounds' middle half | wanted | met |",
              "| --- | ---: | ---: | ---: | --- |"]
    for what, value, wanted, met, spread in result["targets"]:
        middle = "" if spread is None else f"{spread[0]:.2f} to {spread[1]:.2f}"
        lines.append(f"| {what} | {value:.2f} | {middle} | {wanted} | {'yes' if met else 'no'} |")
    lines += ["", cvp.CPU_TIME_NOTE, "", SPREAD_NOTE]
    return "\n".join(lines)


def plot(result, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = result["table"]
    counts = list(table)
    fig, axes = plt.subplots(2, len(cvp.CASES), figsize=(4 * len(cvp.CASES), 7), squeeze=False)
    for col, case in enumerate(cvp.CASES):
        top, bottom = axes[0][col], axes[1][col]
        for lib, style in (("xpnet", "o-"), ("torch", "s--")):
            label = "PyTorch" if lib == "torch" else lib
            top.plot(counts, [table[n][case][f"{lib}_ms"] for n in counts], style, label=label)
            bottom.plot(counts, [table[n][case][f"{lib}_speedup"] for n in counts], style, label=label)
        bottom.plot(counts, [n / counts[0] for n in counts], ":", color="gray", label="linear")
        top.set_title(case)
        top.set_ylabel("ms (median)")
        top.set_ylim(bottom=0)
        bottom.set_ylabel(f"speedup over {counts[0]} thread{'s' if counts[0] > 1 else ''}")
        bottom.set_xlabel("threads")
        for ax in (top, bottom):
            ax.set_xticks(counts)
            ax.grid(alpha=0.3)
            ax.legend()
    m = result["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cores']} cores, batch {result['batch']}, commit {m.get('commit')}, "
                 f"{cvp.load_range(result['records'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts (default: 1..8, powers of two, all)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--memory-batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="processes per library and thread count, alternating")
    parser.add_argument("--steps", type=int, default=15, help="timed calls of each case in each process")
    parser.add_argument("--out", type=Path, default=None, help="folder for thread-scaling-<cores>core-<date>.*")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="RUN.json",
                        help="measure nothing: report the rounds of these earlier runs taken together")
    cvp.add_source_options(parser)
    args = parser.parse_args(argv)
    if args.combine:
        measuring = [f"--{name}" for name in ("threads", "source") if getattr(args, name)]
        if measuring:
            parser.error(f"--combine measures nothing, so {' and '.join(measuring)} would be ignored")
        result = combine(args.combine)
        facts = result["machine"]
    else:
        cvp.use_source(args)
        facts = cvp.machine()
        counts = sorted(set(args.threads or default_counts(facts["cores"])))
        records = cvp.measure(counts, args.rounds, args.batch, args.steps)
        memory = cvp.memory(counts[-1], args.memory_batch)
        table = summarize(records, counts)
        result = {"machine": facts, "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
                  "counts": counts, "table": table, "memory": memory,
                  "targets": targets(table, counts, memory, records), "records": records}
    text = report(result)
    print(text)
    if args.out:
        stem = f"thread-scaling-{facts['cores']}core-{facts['date']}" + (f"-{args.label}" if args.label else "")
        if any(Path(path).resolve() == (args.out / f"{stem}.json").resolve() for path in args.combine or ()):
            raise SystemExit(f"--combine: {args.out / stem}.json is one of the runs; name the result with --label")
        cvp.save(args.out, stem, result, text)
        if plot(result, args.out / f"{stem}.png"):
            print(f"plot: {args.out / f'{stem}.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
