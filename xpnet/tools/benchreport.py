"""Markdown tables and a speedup plot from the JSON of xpnet's benchmark suite.

    python -m xpnet.tools.benchreport RESULTS.json [RESULTS.json ...] [--compare BASELINE.json] [--out DIR]
    xpnet bench report RESULTS.json [...]

Each RESULTS.json is what one process of the timed suite writes
(``XPNET_BENCH=1 python -m pytest benchmarks --bench-library xpnet
--benchmark-json=RESULTS.json``, pytest-benchmark's format);
``benchmarks/suite.py`` writes one per library and round, alternating, and
this report from them all. A case's time is the median, over the files
that hold it, of each file's statistic. The ratios to PyTorch are of times
from different processes: where one file holds the times of both
libraries (one process, where their thread pools slow each other), the
report leaves those ratios out and says why.

The report has one table per family of groups (convolution, pooling, ...,
network), one row per layer, pass and batch size, with xpnet's CPU (NumPy)
and GPU (CuPy) times side by side, the GPU's speedup, the ratio of each to
PyTorch on the same device, achieved GFLOP/s and peak memory; then, per
layer and pass, the batch size from which the GPU wins. It writes
``report.md`` and ``speedup.png`` (GPU speedup against batch size; needs
matplotlib) into ``--out``, by default the folder of the first RESULTS.json.

Every time is one statistic of the timed rounds, the median unless
``--stat`` says otherwise, and every ratio is of that statistic.
``--compare`` adds, per benchmark found in both files, the old and new time
and their ratio. Matplotlib is needed for the picture only.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field, replace

from xpnet.fileio import atomic_write

from .args import Parser, positive_float

__all__ = ["add_arguments", "run", "main", "load_results", "Run", "merge_runs", "build_report", "compare_table", "crossovers", "gpu_targets", "plot_speedup"]

CPU, GPU, TORCH_CPU, TORCH_CUDA = "numpy", "cupy", "torch-cpu", "torch-cuda"
LIBRARY = {CPU: "xpnet", GPU: "xpnet", TORCH_CPU: "torch", TORCH_CUDA: "torch"}
LIBRARY_NAME = {"xpnet": "xpnet", "torch": "PyTorch"}
STATS = ("median", "min", "mean")
PASS_ORDER = ("forward", "backward", "train-step", "inference")
MIB = 1024.0 ** 2
DASH = "—"
HELP = "Markdown tables and a speedup plot from pytest-benchmark JSON"
DESCRIPTION = "Markdown tables and a GPU speedup plot from xpnet's pytest-benchmark JSON."


@dataclass(frozen=True)
class Result:
    """One benchmark of a result file: which case, which backend, how long."""

    name: str  # pytest's full name, the key for --compare
    layer: str
    family: str
    pass_: str
    batch: int
    backend: str
    seconds: float
    flops: int = 0
    im2col_bytes: int = 0
    peak_host_bytes: int | None = None
    peak_gpu_bytes: int | None = None

    @property
    def key(self):
        return (self.layer, self.pass_, self.batch)


# --- reading ----------------------------------------------------------------------------


def load_results(path):
    """The parsed JSON of ``path``; a ValueError that names the file if it is not pytest-benchmark's format."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark result file (no 'benchmarks' list)")
    return data


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_results(data, stat="median"):
    """One :class:`Result` per benchmark, from extra_info where present, else from the group and params."""
    results = []
    for bench in data["benchmarks"]:
        stats = bench.get("stats") or {}
        if stats.get(stat) is None:
            continue
        extra = bench.get("extra_info") or {}
        params = bench.get("params") or {}
        parts = [p.strip() for p in (bench.get("group") or "").split("|")]
        layer = extra.get("layer") or parts[0] or bench.get("name", "?")
        pass_ = extra.get("pass") or params.get("pass_") or (parts[1] if len(parts) > 1 else "")
        batch = extra.get("batch") or params.get("batch")
        if batch is None and len(parts) > 2 and parts[2].startswith("batch "):
            batch = parts[2][len("batch "):]
        backend = extra.get("backend") or params.get("backend") or "?"
        results.append(Result(
            name=bench.get("fullname") or bench.get("name", "?"),
            layer=layer,
            family=extra.get("family") or layer.split()[0],
            pass_=pass_,
            batch=_int(batch),
            backend=backend,
            seconds=float(stats[stat]),
            flops=_int(extra.get("flops")),
            im2col_bytes=_int(extra.get("im2col_bytes")),
            peak_host_bytes=extra.get("peak_host_bytes"),
            peak_gpu_bytes=extra.get("peak_gpu_bytes"),
        ))
    return results


@dataclass(frozen=True)
class Run:
    """One result file, from one process: the name it is reported by and its parsed JSON."""

    name: str
    data: dict


@dataclass
class Merged:
    """The results of several files, one per case and backend: the median over the files that hold it."""

    results: list
    files: dict = field(default_factory=dict)  # library -> names of the files (processes) that timed it
    one_process: list = field(default_factory=list)  # files that timed both libraries

    @property
    def ratios(self) -> bool:
        """Whether xpnet's and PyTorch's times came from different processes, so that their ratio is a result."""
        return not self.one_process


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median_low(values) if values else None


def merge_runs(runs, stat="median"):
    """:class:`Merged` results of ``runs`` (a list of :class:`Run`).

    Each benchmark's time is the median, over the files that hold it, of
    each file's ``stat`` (its peaks, the median-low of theirs); flops,
    shapes and names come from the first file. A file holding the times of
    both libraries is listed in ``one_process``.
    """
    by_name, files, one_process = {}, {}, []
    for run in runs:
        results = parse_results(run.data, stat)
        libraries = sorted({LIBRARY.get(r.backend, r.backend) for r in results})
        for library in libraries:
            files.setdefault(library, []).append(run.name)
        if {"xpnet", "torch"} <= set(libraries):
            one_process.append(run.name)
        for r in results:
            by_name.setdefault(r.name, []).append(r)
    merged = [replace(rs[0], seconds=statistics.median(r.seconds for r in rs),
                      peak_host_bytes=_median_or_none(r.peak_host_bytes for r in rs),
                      peak_gpu_bytes=_median_or_none(r.peak_gpu_bytes for r in rs))
              for rs in by_name.values()]
    return Merged(merged, files, one_process)


def _as_runs(data, name):
    """A list of :class:`Run` from one parsed file (a dict) or from runs already."""
    return [Run(name, data)] if isinstance(data, dict) else list(data)


# --- formatting -------------------------------------------------------------------------------


def fmt_ms(seconds):
    """Milliseconds to three significant digits, without exponents: 12.3, 0.0456, 1234."""
    if seconds is None:
        return DASH
    ms = seconds * 1e3
    if ms <= 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(ms)))
    return f"{ms:.{decimals}f}"


def fmt_ratio(num, den):
    if num is None or den is None or den <= 0:
        return DASH
    return f"{num / den:.2f}×"


def fmt_gflops(flops, seconds):
    if not flops or seconds is None or seconds <= 0:
        return DASH
    return f"{flops / seconds / 1e9:.1f}"


def fmt_mib(nbytes):
    if nbytes is None or nbytes == "":
        return DASH
    return f"{float(nbytes) / MIB:.1f}"


def _markdown_table(header, rows, text_columns=2):
    """A Markdown table, the first ``text_columns`` left-aligned and the rest (numbers) right-aligned.

    Columns with no value in any row (beyond the first three) are left out.
    """
    keep = [i for i in range(len(header)) if i < 3 or any(row[i] != DASH for row in rows)]
    lines = ["| " + " | ".join(header[i] for i in keep) + " |",
             "|" + "|".join("---" if i < text_columns else "---:" for i in keep) + "|"]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in rows]
    return "\n".join(lines)


# --- the report ------------------------------------------------------------------------------


def _ordered(values, order=()):
    """Unique values in first-seen order, those named in ``order`` first."""
    seen = list(dict.fromkeys(values))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def _cases(results):
    """{(layer, pass, batch): {backend: Result}} and the order of families, layers and passes."""
    cases = {}
    for r in results:
        cases.setdefault(r.key, {})[r.backend] = r
    return cases


TABLE_HEADER = ("layer", "pass", "batch", "CPU ms", "GPU ms", "GPU speedup", "CPU ÷ torch CPU",
                "GPU ÷ torch CUDA", "CPU GFLOP/s", "GPU GFLOP/s", "im2col MiB", "CPU peak host MiB",
                "GPU peak MiB", "torch GPU peak MiB")


def _row(key, by_backend, ratios=True):
    """A table row; without ``ratios`` (both libraries timed in one process) the columns to PyTorch are empty."""
    layer, pass_, batch = key
    cpu, gpu = by_backend.get(CPU), by_backend.get(GPU)
    tcpu, tgpu = by_backend.get(TORCH_CPU), by_backend.get(TORCH_CUDA)

    def s(r):
        return r.seconds if r is not None else None

    some = cpu or gpu or tcpu or tgpu
    return [
        layer, pass_, str(batch),
        fmt_ms(s(cpu)), fmt_ms(s(gpu)),
        fmt_ratio(s(cpu), s(gpu)),
        fmt_ratio(s(cpu), s(tcpu)) if ratios else DASH,
        fmt_ratio(s(gpu), s(tgpu)) if ratios else DASH,
        fmt_gflops(cpu.flops, cpu.seconds) if cpu else DASH,
        fmt_gflops(gpu.flops, gpu.seconds) if gpu else DASH,
        fmt_mib(some.im2col_bytes) if some.im2col_bytes else DASH,
        fmt_mib(cpu.peak_host_bytes) if cpu else DASH,
        fmt_mib(gpu.peak_gpu_bytes) if gpu else DASH,
        fmt_mib(tgpu.peak_gpu_bytes) if tgpu else DASH,
    ]


def crossovers(results):
    """Per (layer, pass): the smallest batch from which the GPU is faster than the CPU at every larger batch.

    Returns {(layer, pass): (batch or None, [(batch, speedup), ...])}, with
    None when the GPU is not faster at the largest batch measured. Only
    batches with both a CPU (NumPy) and a GPU (CuPy) time count.
    """
    speedups = {}
    for key, by_backend in _cases(results).items():
        if CPU in by_backend and GPU in by_backend:
            layer, pass_, batch = key
            speedups.setdefault((layer, pass_), []).append(
                (batch, by_backend[CPU].seconds / by_backend[GPU].seconds))
    found = {}
    for case, points in speedups.items():
        points.sort()
        start = None
        for batch, speedup in reversed(points):
            if speedup <= 1.0:
                break
            start = batch
        found[case] = (start, points)
    return found


TARGET_BATCH = 256  # the batch at which the GPU targets are stated
TARGET_VS_TORCH = 2.0  # xpnet's GPU training step at most this many times PyTorch CUDA's
TARGET_SPEEDUP = 20.0  # DeepConvNet's GPU training step at least this many times faster than xpnet's CPU one


def gpu_targets(results, ratios=True):
    """Rows (what, measured, target, met) for the GPU targets: each network's training step at batch 256.

    Per network: GPU time ÷ PyTorch CUDA's (≤ 2; not measured without
    ``ratios``, when both libraries were timed in one process); for
    DeepConvNet also the GPU's speedup over xpnet on the CPU (≥ 20); and the
    peak GPU memory of xpnet and PyTorch, reported. Empty when no training
    step at that batch has a GPU time.
    """
    rows = []
    for (layer, pass_, batch), by_backend in _cases(results).items():
        gpu = by_backend.get(GPU)
        if pass_ != "train-step" or batch != TARGET_BATCH or gpu is None:
            continue
        net, cpu, torch = layer.split()[0], by_backend.get(CPU), by_backend.get(TORCH_CUDA)
        torch_time = torch if ratios else None

        def verdict(ok):
            return DASH if ok is None else ("yes" if ok else "no")

        ratio = gpu.seconds / torch_time.seconds if torch_time else None
        rows.append([f"{net} training step, GPU ÷ PyTorch CUDA", fmt_ratio(gpu.seconds, torch_time and torch_time.seconds),
                     f"≤ {TARGET_VS_TORCH:g}", verdict(None if ratio is None else ratio <= TARGET_VS_TORCH)])
        if net == "DeepConvNet":
            speedup = cpu.seconds / gpu.seconds if cpu else None
            rows.append([f"{net} training step, GPU speedup over the CPU", fmt_ratio(cpu and cpu.seconds, gpu.seconds),
                         f"≥ {TARGET_SPEEDUP:g}", verdict(None if speedup is None else speedup >= TARGET_SPEEDUP)])
        memory = " against ".join(f"{fmt_mib(r.peak_gpu_bytes)} MiB" if r and r.peak_gpu_bytes else DASH
                                  for r in (gpu, torch))
        rows.append([f"{net} training step, peak GPU memory (xpnet against PyTorch)", memory, "reported", DASH])
    return sorted(rows, key=lambda row: row[0])


def _facts(run):
    return (run.data.get("machine_info") or {}).get("xpnet") or {}


def _process_lines(runs, merged, stat):
    """Which files (processes) timed each library, their load averages and commits, and why ratios are missing."""
    lines = []
    if len(runs) > 1:
        lines.append(f"- A case's time is the median, over the files that hold it, of each file's {stat}.")
    for library, names in sorted(merged.files.items(), key=lambda item: item[0] != "xpnet"):
        count = f"{len(names)} process" + ("es" if len(names) > 1 else "")
        lines.append(f"- {LIBRARY_NAME.get(library, library)}: {count} ({', '.join(names)})")
    threads = {"xpnet": {_facts(run).get("xpnet_threads") for run in runs if run.name in merged.files.get("xpnet", ())},
               "torch": {(_facts(run).get("torch") or {}).get("threads") for run in runs
                         if run.name in merged.files.get("torch", ())}}
    if threads["xpnet"] and threads["torch"] and threads["xpnet"] != threads["torch"]:
        lines.append(f"- CPU threads differ: xpnet {', '.join(map(str, sorted(threads['xpnet'], key=str)))}, PyTorch "
                     f"{', '.join(map(str, sorted(threads['torch'], key=str)))}: the ratios compare unequal thread counts")
    loads = [_facts(run).get("load_average") for run in runs]
    loads = [load for load in loads if load is not None]
    if loads:
        lines.append(f"- Load average (1 minute) when each process began: {min(loads):.2f} to {max(loads):.2f}")
    commits = list(dict.fromkeys(str((run.data.get("commit_info") or {}).get("id", ""))[:12] for run in runs))
    if len(commits) > 1:
        lines.append(f"- The files measured different commits: {', '.join(c or '?' for c in commits)}")
    if merged.one_process:
        lines.append(f"- No ratio to PyTorch: {', '.join(merged.one_process)} timed both libraries in one process, "
                     f"where their thread pools slow each other (time each alone: benchmarks/suite.py).")
    return lines


def _machine_lines(runs, stat):
    """The machine, from the first file; PyTorch's facts from the first file that ran it."""
    data = runs[0].data
    info = data.get("machine_info") or {}
    facts = info.get("xpnet") or {}
    cpu = info.get("cpu") or {}
    blas = facts.get("blas") or {}
    torch_facts = [_facts(run).get("torch") or {} for run in runs]
    torch = next((t for t in torch_facts if t.get("available")), torch_facts[0])
    lines = [f"- Times: the **{stat}** of the timed rounds, in milliseconds; every ratio is of {stat}s."]
    cpu_model = facts.get("cpu_model") or cpu.get("brand_raw")
    if cpu_model:
        cores = facts.get("usable_cores") or cpu.get("count")
        blas_text = ""
        if blas.get("name"):
            blas_text = f"; BLAS {blas.get('name')} {blas.get('version') or ''}".rstrip()
            if blas.get("threads"):
                blas_text += f", {blas['threads']} threads"
        xpnet_threads = f"; xpnet {facts['xpnet_threads']} threads" if facts.get("xpnet_threads") else ""
        lines.append(f"- CPU: {cpu_model}, {cores} cores{blas_text}; NumPy {facts.get('numpy', '?')}{xpnet_threads}")
    if facts.get("gpu_name"):
        tf32 = "on (CUPY_TF32=1)" if facts.get("cupy_tf32") else "off"
        lines.append(f"- GPU: {facts['gpu_name']}; CuPy {facts.get('cupy')}, CUDA runtime "
                     f"{facts.get('cuda_runtime')}, driver {facts.get('cuda_driver')}; TF32 {tf32}")
    elif facts.get("gpu_unavailable_reason"):
        lines.append(f"- GPU: none usable ({facts['gpu_unavailable_reason']})")
    if torch.get("available"):
        lines.append(f"- PyTorch {torch.get('version')}: {torch.get('threads')} CPU threads, CUDA "
                     f"{torch.get('cuda')}, cuDNN {torch.get('cudnn')}, TF32 "
                     f"{'on' if torch.get('matmul_allow_tf32') or torch.get('cudnn_allow_tf32') else 'off'}")
    elif torch:
        lines.append(f"- PyTorch: not measured ({torch.get('reason')})")
    if facts.get("dtype"):
        lines.append(f"- dtype: {facts['dtype']}")
    commit = data.get("commit_info") or {}
    if commit.get("id"):
        dirty = " (uncommitted changes)" if commit.get("dirty") else ""
        lines.append(f"- Commit {str(commit['id'])[:12]}{dirty}, {data.get('datetime', '')}")
    return lines


LEGEND = """Columns: **CPU ms** xpnet on NumPy; **GPU ms** xpnet on CuPy; **GPU speedup** CPU ms ÷ GPU ms
(above 1: the GPU is faster); **CPU ÷ torch CPU** and **GPU ÷ torch CUDA** xpnet's time ÷ PyTorch's time
for the same layer on the same device (above 1: xpnet is slower); **GFLOP/s** the FLOPs of the matrix products
(2·M·N·K each) per second, for convolutions, Affine layers and networks only; **im2col MiB** the im2col buffers
the pass uses; **peak** columns: the most memory one call had in use beyond what was allocated when it began
(host: NumPy's allocations seen by tracemalloc; GPU: CuPy's memory pool, or PyTorch's allocator). Columns with
no data in a table are left out."""


def build_report(data, stat="median", source="results", png_note=None):
    """The Markdown report (without the --compare section) of one result file, a dict named ``source``, or of
    several: a list of :class:`Run`, merged by :func:`merge_runs`."""
    runs = _as_runs(data, source)
    merged = merge_runs(runs, stat)
    results = merged.results
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} result files"
    out = [f"# xpnet benchmarks: {title}", ""]
    out += _machine_lines(runs, stat)
    out += _process_lines(runs, merged, stat)
    out += ["", LEGEND, ""]
    cases = _cases(results)
    families = _ordered(r.family for r in results)
    layers = _ordered(r.layer for r in results)
    passes = _ordered((r.pass_ for r in results), PASS_ORDER)
    for family in families:
        keys = [k for k in cases if next(iter(cases[k].values())).family == family]
        keys.sort(key=lambda k: (layers.index(k[0]), passes.index(k[1]), k[2]))
        out += [f"## {family}", "", _markdown_table(TABLE_HEADER, [_row(k, cases[k], merged.ratios) for k in keys]), ""]

    targets = gpu_targets(results, merged.ratios)
    out += [f"## The GPU targets (training step at batch {TARGET_BATCH})", ""]
    if targets:
        out += [_markdown_table(("what", "measured", "target", "met"), targets, text_columns=4), ""]
    else:
        out += [f"No training step at batch {TARGET_BATCH} has a GPU time in this file.", ""]

    found = crossovers(results)
    out += ["## Where the GPU starts to win", ""]
    if not found:
        out += ["No batch size has both a CPU and a GPU time in this file.", ""]
    else:
        rows = []
        for (layer, pass_), (start, points) in sorted(
                found.items(), key=lambda item: (layers.index(item[0][0]), passes.index(item[0][1]))):
            largest = points[-1][0]
            if start is None:
                verdict = f"not up to batch {largest}"
            elif start == points[0][0]:
                verdict = f"from batch {start} (every batch measured)"
            else:
                verdict = f"from batch {start}"
            curve = ", ".join(f"{b}: {s:.2f}×" for b, s in points)
            rows.append([layer, pass_, verdict, curve])
        out += [_markdown_table(("layer", "pass", "GPU faster", "speedup by batch"), rows, text_columns=4), ""]
        out += [("The GPU wins from the smallest batch at which it is faster than the CPU at that batch and every "
                 "larger one measured."), ""]
    if png_note:
        out += [png_note, ""]
    return "\n".join(out)


def compare_table(new_data, old_data, stat="median", threshold=0.10, new_name="new", old_name="old"):
    """Markdown: for each benchmark in both, old and new time and new ÷ old; plus a summary line.

    ``new_data`` is one parsed file or a list of :class:`Run` (merged)."""
    new = {r.name: r for r in merge_runs(_as_runs(new_data, new_name), stat).results}
    old = {r.name: r for r in parse_results(old_data, stat)}
    rows, slower, faster = [], 0, 0
    for name, r in new.items():
        if name not in old:
            continue
        ratio = r.seconds / old[name].seconds if old[name].seconds > 0 else float("inf")
        if ratio > 1.0 + threshold:
            change, slower = "slower", slower + 1
        elif ratio < 1.0 - threshold:
            change, faster = "faster", faster + 1
        else:
            change = ""
        rows.append([f"{r.layer} \\| {r.pass_} \\| batch {r.batch}", r.backend, fmt_ms(old[name].seconds),
                     fmt_ms(r.seconds), f"{ratio:.2f}×", change])
    lines = [f"## Change: {new_name} against {old_name}", "",
             (f"{len(rows)} benchmarks in both files ({stat}s; new ÷ old above 1 means slower): {slower} slower "
              f"and {faster} faster by more than {threshold:.0%}.")]
    only_new = sorted(set(new) - set(old))
    only_old = sorted(set(old) - set(new))
    if only_new or only_old:
        lines.append(f"Only in {new_name}: {len(only_new)}; only in {old_name}: {len(only_old)}.")
    lines.append("")
    if rows:
        lines.append(_markdown_table(("benchmark", "backend", "old ms", "new ms", "new ÷ old", "change"), rows))
        lines.append("")
    return "\n".join(lines)


# --- the picture --------------------------------------------------------------------------------


def plot_speedup(results, path):
    """Draw GPU speedup against batch size, one panel per family; returns a note for the report.

    Raises ImportError when matplotlib is missing.
    """
    found = crossovers(results)
    if not found:
        return "No speedup plot: no batch size has both a CPU and a GPU time."
    import matplotlib  # here, not at the top: matplotlib is optional, and the report is written without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    family_of = {(r.layer, r.pass_): r.family for r in results}
    families = _ordered(family_of[case] for case in found)
    ncols = min(3, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 5.5 * nrows), squeeze=False, layout="constrained")
    times = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×")
    for ax, family in zip(axes.flat, families):
        cases = [case for case in found if family_of[case] == family]
        layers = _ordered(layer for layer, _ in cases)
        colors = plt.get_cmap("tab10" if len(layers) <= 10 else "tab20")
        batches = set()
        for layer, pass_ in cases:
            points = found[(layer, pass_)][1]
            batches.update(b for b, _ in points)
            style = "--" if pass_ in ("backward", "inference") else "-"
            ax.plot([b for b, _ in points], [s for _, s in points], style, marker="o", markersize=3,
                    color=colors(layers.index(layer)), label=f"{layer} {pass_}")
        ax.axhline(1.0, color="gray", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(times)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(family)
        ax.set_xlabel("batch size")
        ax.set_ylabel("GPU speedup (CPU time ÷ GPU time)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle("GPU speedup against batch size (solid: forward or training step; dashed: backward or inference)")
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return f"![GPU speedup against batch size]({os.path.basename(path)})"


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument("results", metavar="RESULTS.json", nargs="+",
                        help="written by pytest --benchmark-json, one per process (a case's time: the median over them)")
    parser.add_argument("--compare", metavar="BASELINE.json", help="show each benchmark's change from this file")
    parser.add_argument("--out", metavar="DIR",
                        help="where report.md and speedup.png go (default: next to the first RESULTS.json)")
    parser.add_argument("--stat", choices=STATS, default="median", help="the statistic of the rounds")
    parser.add_argument("--threshold", type=positive_float, default=10.0,
                        help="percent change that --compare calls slower or faster")


def main(argv=None, prog="python -m xpnet.tools.benchreport"):
    """``python -m xpnet.tools.benchreport``: the same as ``xpnet bench report``; returns the exit status."""
    parser = Parser(prog=prog, description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), prog)


def run(args, prog="xpnet bench report"):
    """Write report.md (and speedup.png where matplotlib is installed); returns the exit status."""
    paths = [args.results] if isinstance(args.results, str) else list(args.results)
    try:
        runs = [Run(os.path.basename(path), load_results(path)) for path in paths]
        baseline = load_results(args.compare) if args.compare else None
    except (OSError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if len({run.name for run in runs}) < len(runs):
        runs = [Run(path, run.data) for path, run in zip(paths, runs)]  # the same name in two folders
    results = merge_runs(runs, args.stat).results
    if not results:
        print(f"{prog}: error: {', '.join(paths)} hold{'s' if len(paths) == 1 else ''} no timed benchmarks "
              f"(a smoke run, with timing disabled, records none: run with XPNET_BENCH=1)", file=sys.stderr)
        return 1
    out_dir = args.out or os.path.dirname(os.path.abspath(paths[0]))
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, "speedup.png")
    try:
        png_note = plot_speedup(results, png)
    except ImportError:
        png_note = "No speedup plot: matplotlib is not installed (pip install matplotlib)."
        print(f"{prog}: {png_note}", file=sys.stderr)
    report = build_report(runs, args.stat, png_note=png_note)
    if baseline is not None:
        new_name = runs[0].name if len(runs) == 1 else f"{len(runs)} files"
        comparison = compare_table(runs, baseline, args.stat, args.threshold / 100.0,
                                   new_name, os.path.basename(args.compare))
        report += "\n" + comparison
        print(comparison)
    path = os.path.join(out_dir, "report.md")
    with atomic_write(path, "w") as fh:
        fh.write(report)
    print(f"wrote {path} ({len(results)} benchmarks from {len(runs)} file{'s' if len(runs) > 1 else ''}, {args.stat}s)"
          + (f" and {png}" if os.path.exists(png) and png_note.startswith("![") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
