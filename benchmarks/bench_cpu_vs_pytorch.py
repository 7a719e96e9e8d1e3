"""Smoke tests of ``cpu_vs_pytorch.py`` and ``thread_scaling.py`` (the CPU comparisons): they run and write their
tables, each library timed in processes of its own."""

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TINY = ["--rounds", "1", "--steps", "1", "--batch", "2", "--memory-batch", "2"]
CASES = {"SimpleConvNet train", "SimpleConvNet inference", "DeepConvNet train", "DeepConvNet inference"}

pytestmark = [pytest.mark.skipif(find_spec("torch") is None, reason="the comparison needs PyTorch: pip install '.[torch]'"),
              pytest.mark.slow]  # each test runs both libraries in processes of their own


def run(script, *args):
    done = subprocess.run([sys.executable, str(HERE / script), *TINY, *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def test_the_cpu_comparison_runs_and_writes_its_tables(tmp_path):
    run("cpu_vs_pytorch.py", "--threads", "2", "--out", str(tmp_path))
    (json_file,) = tmp_path.glob("cpu-vs-pytorch-*core-2threads-*.json")
    result = json.loads(json_file.read_text())
    assert set(result["timings"]) == CASES
    for case in result["timings"].values():
        assert case["xpnet_ms"] > 0 and case["torch_ms"] > 0
        assert case["ratio"] == pytest.approx(case["xpnet_ms"] / case["torch_ms"])
    assert result["threads"] == 2 and "commit" in result["machine"]
    assert {r["library"] for r in result["records"]} == {"xpnet", "torch"}  # one process each, load recorded
    assert all("load" in r for r in result["records"])
    table = json_file.with_suffix(".md").read_text()
    assert table.startswith("CPU: ") and "| DeepConvNet train |" in table and "load average" in table


def test_the_thread_scaling_benchmark_times_each_count_and_checks_the_targets(tmp_path):
    run("thread_scaling.py", "--threads", "1", "2", "--out", str(tmp_path))
    (json_file,) = tmp_path.glob("thread-scaling-*core-*.json")
    result = json.loads(json_file.read_text())
    assert result["counts"] == [1, 2]
    for count in ("1", "2"):
        assert set(result["table"][count]) == CASES
    assert all(result["table"]["1"][case]["xpnet_speedup"] == 1.0 for case in CASES)
    assert len(result["targets"]) == 3 * len(CASES) + 1  # 1 thread, all cores, speedup; and memory
    for what, measured, wanted, met, spread in result["targets"][:-1]:  # one round: its figure is the measured one
        assert spread == pytest.approx([measured, measured]), what
    assert result["targets"][-1][4] is None  # the memory is measured once
    text = json_file.with_suffix(".md").read_text()
    assert "### Targets" in text and "| 2 |" in text and "rounds' middle half" in text
    if find_spec("matplotlib"):
        assert json_file.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

