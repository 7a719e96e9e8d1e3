"""Smoke test of ``cpu_vs_pytorch.py`` (the CPU-speed comparison): it runs and writes its tables."""

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "cpu_vs_pytorch.py"


@pytest.mark.slow
@pytest.mark.skipif(find_spec("torch") is None, reason="the comparison needs PyTorch: pip install '.[torch]'")
def test_the_cpu_comparison_runs_and_writes_its_tables(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1", "--batch", "2", "--memory-batch", "2",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (json_file,) = tmp_path.glob("cpu-vs-pytorch-*core-*.json")
    result = json.loads(json_file.read_text())
    assert set(result["timings"]) == {"SimpleConvNet train", "SimpleConvNet inference", "DeepConvNet train",
                                      "DeepConvNet inference"}
    for case in result["timings"].values():
        assert case["xpnet_ms"] > 0 and case["torch_ms"] > 0
        assert case["ratio"] == pytest.approx(case["xpnet_ms"] / case["torch_ms"])
    assert result["machine"]["threads"] == 2 and "commit" in result["machine"]
    table = json_file.with_suffix(".md").read_text()
    assert table.startswith("CPU: ") and "| DeepConvNet train |" in table
