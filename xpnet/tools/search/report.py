"""What ``xpnet search`` shows: the best trials, the spread between repeats, and the picture.

A search of ``--repeats N`` is N studies; each entry below is ``(seed, study)``.
The files are written next to each other as STEM.png, STEM.json and STEM.csv,
each replaced atomically, so workers that finish together do not mix them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from xpnet.fileio import atomic_write

from ..plot import require_matplotlib
from ..table import format_table

__all__ = ["best_rows", "spread", "plot_search", "report", "describe_states"]


def _states(study):
    """How many trials are in each state, and of the failed ones how many diverged and how many were rerun.

    complete, pruned, failed (diverged: an outcome that counts; rerun: its
    worker died and a new trial reruns its values; surplus: started by a
    worker at the same instant as the study's last one, and stopped before
    training: it does not count), running (on a live
    worker), stale (running, but without a heartbeat for the grace period:
    the next worker to start a trial fails it), waiting (queued to rerun).
    """
    from .storage import RERUN_OF, stale_trials

    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    stale = len(stale_trials(study))
    reruns = {t.user_attrs[RERUN_OF] for t in trials if RERUN_OF in t.user_attrs}
    return {"complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "diverged": sum(t.state.name == "FAIL" and "diverged" in t.user_attrs for t in trials),
            "rerun": sum(t.state.name == "FAIL" and t.number in reruns for t in trials),
            "surplus": sum(t.state.name == "FAIL" and "surplus" in t.user_attrs for t in trials),
            "running": states.count("RUNNING") - stale, "stale": stale, "waiting": states.count("WAITING")}


def describe_states(counts):
    """The counts of :func:`_states` as one phrase."""
    failed = counts["failed"]
    others = failed - counts["diverged"] - counts["rerun"] - counts["surplus"]
    why = [f"{n} {what}" for n, what in ((counts["diverged"], "diverged"), (counts["rerun"], "rerun: worker lost"),
                                         (counts["surplus"], "surplus: started as the study filled"),
                                         (others, "interrupted or in error")) if n]
    text = (f"{counts['complete']} complete, {counts['pruned']} pruned, {failed} failed"
            + (f" ({', '.join(why)})" if why else "") + f", {counts['running']} running, {counts['stale']} stale")
    return text + (f", {counts['waiting']} waiting to rerun" if counts["waiting"] else "")


def _complete(study):
    """COMPLETE trials, best first (ties: the earlier trial)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return sorted(trials, key=lambda t: (-t.value, t.number))


def best_rows(study, searched, top=5):
    """The ``top`` best trials as dicts: rank, trial, val_acc, the searched values, seconds."""
    rows = []
    for rank, trial in enumerate(_complete(study)[:top], start=1):
        row = {"rank": rank, "trial": trial.number, "val_acc": trial.value}
        row.update({p.name: trial.params.get(p.name) for p in searched})
        row["seconds"] = round(trial.duration.total_seconds(), 2) if trial.duration else None
        rows.append(row)
    return rows


def spread(entries, searched):
    """How the best values of repeated searches vary: per repeat the best trial, then min, max, std.

    The std of a log-scaled parameter is that of its log10 (decades); std
    is the sample standard deviation (n - 1), 0 for a single repeat.
    """
    repeats = []
    for seed, study in entries:
        best = _complete(study)[:1]
        if best:
            row = {"seed": seed, "study": study.study_name, "trials": len(_complete(study)), "val_acc": best[0].value}
            row.update({p.name: best[0].params.get(p.name) for p in searched})
            repeats.append(row)
    summary = {}
    for name, log in [("val_acc", False)] + [(p.name, p.log) for p in searched]:
        values = np.array([r[name] for r in repeats if r[name] is not None], dtype=float)
        if len(values):
            scaled = np.log10(values) if log else values
            std = float(np.std(scaled, ddof=1)) if len(values) > 1 else 0.0
            summary[name] = {"min": float(values.min()), "max": float(values.max()), "std": std,
                             "std_of": "log10" if log else "value"}
    return {"repeats": repeats, "summary": summary}


def _columns(keys, headers, searched=()):
    """(key, header, format) of each column: accuracies with 4 decimals, seconds with 2, floats with 3 digits."""
    floats = {p.name for p in searched if not p.integer} | {"min", "max"}
    formats = {"val_acc": ".4f", "seconds": ".2f", **{name: ".3g" for name in floats}}
    return [(key, header, formats.get(key)) for key, header in zip(keys, headers)]


def plot_search(entries, space, path, dataset=""):
    """Validation accuracy against the searched hyperparameters: one panel per study, best marked.

    Two or more searched: the first two on the axes (log axes for log
    ranges), color the accuracy, like the book's picture of the search.
    One searched: accuracy against it. Pruned trials are grey dots, failed
    (diverged) ones grey crosses.
    """
    plt = require_matplotlib()
    searched = [p for p in space.values() if p.searched]
    x_param, y_param = searched[0], (searched[1] if len(searched) > 1 else None)
    values = [t.value for _, study in entries for t in _complete(study)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    columns = min(len(entries), 3)
    rows = math.ceil(len(entries) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns + 1.2, 4.2 * rows), squeeze=False,
                             layout="constrained")
    scatter = None
    for ax, (seed, study) in zip(axes.flat, entries):
        complete = _complete(study)
        others = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("PRUNED", "FAIL")
                  and x_param.name in t.params and (y_param is None or y_param.name in t.params)]

        def coordinates(trials):
            xs = [t.params[x_param.name] for t in trials]
            ys = [t.params[y_param.name] if y_param else (t.value if t.value is not None else 0.0) for t in trials]
            return xs, ys

        for state, marker, label in (("PRUNED", ".", "pruned"), ("FAIL", "x", "failed (diverged)")):
            chosen = [t for t in others if t.state.name == state]
            if chosen:
                ax.scatter(*coordinates(chosen), marker=marker, color="0.6", s=25, label=label, zorder=1)
        if complete:
            xs, ys = coordinates(complete)
            scatter = ax.scatter(xs, ys, c=[t.value for t in complete], cmap="viridis", vmin=low, vmax=high,
                                 s=32, edgecolors="none", zorder=2)
            bx, by = coordinates(complete[:1])
            ax.scatter(bx, by, marker="*", s=320, facecolors="none", edgecolors="red", linewidths=1.6, zorder=3,
                       label=f"best: {complete[0].value:.3f} (trial {complete[0].number})")
            ax.legend(loc="lower left", fontsize=8, framealpha=0.85, markerscale=0.6)
        ax.set_xlabel(x_param.name)
        ax.set_ylabel(y_param.name if y_param else "validation accuracy")
        if x_param.log:
            ax.set_xscale("log")
        if y_param is not None and y_param.log:
            ax.set_yscale("log")
        ax.set_title(f"{study.study_name}: {len(complete)} complete trials", fontsize=10)
        ax.grid(alpha=0.3, lw=0.5)
    for ax in list(axes.flat)[len(entries):]:
        ax.set_visible(False)
    if scatter is not None:
        fig.colorbar(scatter, ax=axes.ravel().tolist(), label="validation accuracy (final epoch)")
    fig.suptitle(f"xpnet search on {dataset}: validation held out from the training set" if dataset else
                 "xpnet search: validation held out from the training set")
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def report(entries, space, stem, top=5, dataset=""):
    """Print the best trials of each study (and the spread, for repeats); write STEM.png, .json and .csv."""
    searched = [p for p in space.values() if p.searched]
    names = [p.name for p in searched]
    tables, csv_rows = [], []
    for seed, study in entries:
        counts = _states(study)
        rows = best_rows(study, searched, top)
        print(f"\n{study.study_name}: {describe_states(counts)}; the best {len(rows)}:")
        print(format_table(_columns(["rank", "trial", "val_acc", *names, "seconds"],
                                    ["rank", "trial", "val acc", *names, "seconds"], searched), rows))
        tables.append({"study": study.study_name, "seed": seed, "settings": study.user_attrs.get("xpnet"),
                       "trials": counts, "best": rows})
        csv_rows += [{"study": study.study_name, **row} for row in rows]
    result = {"dataset": dataset, "space": [str(p) for p in space.values()], "studies": tables}
    if len(entries) > 1:
        result["spread"] = found = spread(entries, searched)
        print(f"\nthe best trial of each of {len(entries)} repeats:")
        print(format_table(_columns(["seed", "study", "trials", "val_acc", *names],
                                    ["seed", "study", "trials", "best val acc", *names], searched), found["repeats"]))
        lines = [{"what": name.replace("val_acc", "best val acc"), **stats, "std": f"{stats['std']:.3g}" + (" (log10)" if stats["std_of"] == "log10"
                                                                          else "")}
                 for name, stats in found["summary"].items()]
        print("\nspread between repeats:")
        print(format_table(_columns(["what", "min", "max", "std"], ["", "min", "max", "std"]), lines))
    stem = Path(stem)
    png, json_path, csv_path = (stem.with_name(stem.name + ext) for ext in (".png", ".json", ".csv"))
    plot_search(entries, space, png, dataset)
    with atomic_write(json_path, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")
    columns = ["study", "rank", "trial", "val_acc", *names, "seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows)
    with atomic_write(csv_path, "w") as f:
        f.write(buffer.getvalue())
    print(f"\npicture: {png}\ntable: {json_path}, {csv_path}")
    return result
