"""Smoke test of ``cpu_fast_paths.py``: it times a fast path on and off in processes of their own."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "cpu_fast_paths.py"


def run_benchmark(tmp_path, fast_path, batch, threads):
    """The result (JSON) and the table (Markdown) of one tiny run of the benchmark, for one fast path."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1", "--steps", "1", "--batch", str(batch),
                           "--threads", str(threads), "--fast-paths", fast_path, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (json_file,) = tmp_path.glob("cpu-fast-paths-*core-*.json")
    return json.loads(json_file.read_text()), json_file.with_suffix(".md").read_text()


def test_the_fast_path_benchmark_times_each_fast_path_on_and_off(tmp_path):
    result, table = run_benchmark(tmp_path, "first_layer_without_input_gradient", batch=2, threads=1)
    assert {(r["state"], r["fast_path"]) for r in result["records"]} == {
        ("on", "first_layer_without_input_gradient"), ("off", "first_layer_without_input_gradient")}
    assert [r["case"] for r in result["rows"]] == ["SimpleConvNet train", "DeepConvNet train"]
    assert all(r["gain"] == r["off_ms"] / r["on_ms"] and r["cpu_gain"] == r["off_cpu_ms"] / r["on_cpu_ms"]
               for r in result["rows"])
    assert "| first_layer_without_input_gradient | SimpleConvNet train | 1 |" in table


@pytest.mark.slow
def test_an_inference_fast_path_is_timed_on_inference(tmp_path):
    rows = run_benchmark(tmp_path, "inference_by_slices", batch=4, threads=2)[0]["rows"]
    assert [(r["fast_path"], r["case"], r["threads"]) for r in rows] == [
        ("inference_by_slices", "SimpleConvNet inference", 2), ("inference_by_slices", "DeepConvNet inference", 2)]
