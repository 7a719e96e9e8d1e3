"""The figures of ``thread_scaling.py`` beside its targets: how far the rounds spread (no PyTorch needed)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import thread_scaling  # noqa: E402


def test_the_spread_of_a_target_is_the_middle_half_of_its_rounds():
    def record(library, threads, round_, ms):
        return {"library": library, "threads": threads, "round": round_, "ms": {"case": ms}}

    # xpnet's time at 1 and 2 threads and PyTorch's, in five rounds of a machine that drifts.
    times = {("xpnet", 1): [20, 22, 30, 21, 26], ("xpnet", 2): [12, 14, 15, 11, 13],
             ("torch", 1): [25, 24, 36, 26, 30], ("torch", 2): [15, 16, 24, 14, 20]}
    records = [record(lib, n, r, ms) for (lib, n), values in times.items() for r, ms in enumerate(values)]
    ratios = thread_scaling.ratio_by_round(records, "case", 2)
    assert ratios == pytest.approx([12 / 15, 14 / 16, 15 / 24, 11 / 14, 13 / 20])
    speedups = thread_scaling.speedup_ratio_by_round(records, "case", 1, 2)
    assert speedups == pytest.approx([(x1 / x2) / (t1 / t2) for x1, x2, t1, t2 in zip(*times.values())])
    assert speedups[2] == pytest.approx((30 / 15) / (36 / 24))  # 2x against 1.5x
    low, high = thread_scaling.middle_half(ratios)
    assert (low, high) == pytest.approx((13 / 20, 12 / 15))  # the 2nd and 4th of the five, sorted
    assert thread_scaling.middle_half([0.5]) == (0.5, 0.5)


def _run(tmp_path, name, commit, rounds, xpnet_ms, torch_ms, memory_ratio, batch=100):
    """A run's JSON as thread_scaling.py writes it: every case timed alike, ``xpnet_ms``/``torch_ms`` per
    thread count, round after round."""
    import cpu_vs_pytorch as cvp

    records = [{"library": lib, "threads": n, "round": r, "load": 0.5,
                "ms": {case: ms[n][r] for case in cvp.CASES}, "cpu_ms": {case: ms[n][r] for case in cvp.CASES}}
               for lib, ms in (("xpnet", xpnet_ms), ("torch", torch_ms)) for n in (1, 2) for r in range(rounds)]
    machine = {"cpu": "test CPU", "cores": 2, "numpy": "2", "blas": "blas", "torch": "2", "commit": commit,
               "date": "2026-01-01", "time": "12:00"}
    memory = {"batch": 256, "threads": 2, "xpnet_mib": 50 * memory_ratio, "torch_mib": 50.0, "ratio": memory_ratio}
    run = {"machine": machine, "batch": batch, "rounds": rounds, "steps": 15, "counts": [1, 2], "records": records,
           "memory": memory}
    path = tmp_path / f"{name}.json"
    path.write_text(__import__("json").dumps(run))
    return path


def test_combined_runs_report_the_medians_of_all_their_rounds_together(tmp_path):
    # A fast run where xpnet gains 2x from a second thread, and a slow one where it gains 1.25x; PyTorch 1.5x.
    fast = _run(tmp_path, "fast", "aaa", 3, {1: [20, 20, 20], 2: [10, 10, 10]}, {1: [30] * 3, 2: [20] * 3}, 0.5)
    slow = _run(tmp_path, "slow", "aaa", 2, {1: [25, 25], 2: [20, 20]}, {1: [30] * 2, 2: [20] * 2}, 0.7)
    result = thread_scaling.combine([fast, slow])
    assert result["rounds"] == 5
    assert sorted({r["round"] for r in result["records"]}) == [0, 1, 2, 3, 4]  # the second run's rounds follow
    case = next(iter(result["table"][2]))
    assert result["table"][1][case]["xpnet_ms"] == 20  # the median of 20, 20, 20, 25, 25
    assert result["table"][2][case]["xpnet_ms"] == 10
    assert result["machine"]["commit"] == "aaa"
    speedup = [t for t in result["targets"] if t[0].startswith(f"{case}, speedup")][0]
    assert speedup[1] == pytest.approx((20 / 10) / (30 / 20))
    assert result["memory"]["ratio"] == 0.5  # of two runs, the lower
    text = thread_scaling.report(result)
    assert "5 rounds of alternating processes from 2 runs (fast.json" in text


def test_only_runs_of_the_same_cases_combine(tmp_path):
    one = _run(tmp_path, "one", "aaa", 2, {1: [20, 20], 2: [10, 10]}, {1: [30] * 2, 2: [20] * 2}, 0.5)
    other = _run(tmp_path, "other", "bbb", 2, {1: [20, 20], 2: [10, 10]}, {1: [30] * 2, 2: [20] * 2}, 0.5, batch=20)
    with pytest.raises(SystemExit, match=r"other.json and .*one.json differ \(batch 20 against 100\); only runs"):
        thread_scaling.combine([one, other])


def test_a_combined_report_never_overwrites_one_of_its_runs(tmp_path):
    run = _run(tmp_path, "thread-scaling-2core-2026-01-01", "aaa", 2, {1: [20, 20], 2: [10, 10]},
               {1: [30] * 2, 2: [20] * 2}, 0.5)
    before = run.read_text()
    with pytest.raises(SystemExit, match="is one of the runs; name the result with --label"):
        thread_scaling.main(["--combine", str(run), "--out", str(tmp_path)])
    assert run.read_text() == before
    assert thread_scaling.main(["--combine", str(run), "--out", str(tmp_path), "--label", "combined"]) == 0
    assert (tmp_path / "thread-scaling-2core-2026-01-01-combined.md").exists()


def test_a_run_at_16_threads_reports_the_many_core_target_of_deepconvnets_step():
    from cpu_vs_pytorch import CASES

    def records(times):
        return [{"library": lib, "threads": n, "round": 0, "ms": {case: ms for case in CASES},
                 "cpu_ms": {case: ms for case in CASES}} for (lib, n), ms in times.items()]

    many_cores = records({("xpnet", 1): 100, ("torch", 1): 100, ("xpnet", 16): 20, ("torch", 16): 12})
    rows = thread_scaling.targets(thread_scaling.summarize(many_cores, [1, 16]), [1, 16], None, many_cores)
    many = [row for row in rows if row[0] == "DeepConvNet train, 16 threads, the many-core target: xpnet ÷ PyTorch"]
    assert len(many) == 1 and many[0][1:4] == (pytest.approx(20 / 12), "≤ 2.0", True)
    two_cores = records({("xpnet", 1): 9, ("torch", 1): 9, ("xpnet", 2): 5, ("torch", 2): 5})
    rows = thread_scaling.targets(thread_scaling.summarize(two_cores, [1, 2]), [1, 2], None, two_cores)
    assert not any("16 threads" in row[0] for row in rows)


def test_a_run_names_the_git_commit_it_measured_and_the_label_only_for_a_tree_outside_git(tmp_path, monkeypatch):
    import subprocess

    import cpu_vs_pytorch as cvp

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cvp.ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the source tree is not a git checkout")
    monkeypatch.setattr(cvp, "LABEL", "before-abc")
    monkeypatch.setattr(cvp, "SOURCE", cvp.ROOT)
    assert cvp.commit().startswith(head)  # a label names the files; the commit stays the checkout's
    monkeypatch.setattr(cvp, "SOURCE", tmp_path)  # a tree from git archive
    assert cvp.commit() == "before-abc"
    monkeypatch.setattr(cvp, "SOURCE", cvp.ROOT / "benchmarks")  # a folder inside another repository
    assert cvp.commit() == "before-abc"
