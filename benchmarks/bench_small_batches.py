"""``small_batches.py``: xpnet at one thread and at all cores on the book's networks at small batches."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import small_batches  # noqa: E402


def test_the_summary_takes_the_median_over_rounds_and_the_speedup_between_the_two_counts():
    records = [{"threads": 1, "round": r, "ms": {"a train": ms}} for r, ms in enumerate([10.0, 12.0, 30.0])]
    records += [{"threads": 2, "round": r, "ms": {"a train": ms}} for r, ms in enumerate([8.0, 5.0, 6.0])]
    summary = small_batches.summarize(records, [1, 2])
    assert summary == {"a train": {"one_ms": 12.0, "all_ms": 6.0, "speedup": 2.0}}


@pytest.mark.slow  # processes of their own
def test_it_runs_each_thread_count_in_processes_of_its_own_and_writes_its_table(tmp_path):
    done = subprocess.run([sys.executable, str(HERE / "small_batches.py"), "--rounds", "2", "--steps", "1",
                           "--threads", "1", "2", "--cases", "SimpleConvNet, batch 10", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (json_file,) = tmp_path.glob("small-batches-*core-*.json")
    result = json.loads(json_file.read_text())
    assert [(r["threads"], r["round"]) for r in result["records"]] == [(1, 0), (2, 0), (2, 1), (1, 1)]  # alternating
    assert set(result["summary"]) == {"SimpleConvNet, batch 10 train", "SimpleConvNet, batch 10 inference"}
    for case in result["summary"].values():
        assert case["speedup"] == pytest.approx(case["one_ms"] / case["all_ms"])
    table = json_file.with_suffix(".md").read_text()
    assert table.startswith("CPU: ") and "| SimpleConvNet, batch 10 train |" in table and "load average" in table
