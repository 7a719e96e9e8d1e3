"""Each library is timed in a process of its own: the guard of a timed run, --bench-library, and suite.py."""

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

import suite

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TINY = "batch1 and not batch128 and relu"  # forward and backward of ReLU at batch 1, on each backend
FEW_ROUNDS = ["--benchmark-min-rounds=1", "--benchmark-max-time=0.001"]


def run_pytest(*args, timed):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("XPNET_BENCH", None)
    if timed:
        env["XPNET_BENCH"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", str(HERE / "bench_layers.py"), "-p", "no:xdist",
                           "-p", "no:cacheprovider", "-k", TINY, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_rounds_alternate_the_libraries():
    assert suite.order(3) == [(1, "xpnet"), (1, "torch"), (2, "torch"), (2, "xpnet"), (3, "xpnet"), (3, "torch")]


def test_both_libraries_get_the_same_threads():
    env = suite.child_env(3)
    assert env["XPNET_BENCH"] == "1"
    assert {env[k] for k in ("XPNET_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} == {"3"}


def test_the_driver_chooses_the_json_and_the_library_itself(capsys):
    with pytest.raises(SystemExit):
        suite.parse_args(["--out", "x", "--benchmark-json=mine.json"])
    assert "chooses the library and the JSON" in capsys.readouterr().err
    args, extra = suite.parse_args(["--out", "x", "-k", "relu", "--benchmark-max-time=0.5"])
    assert args.keyword == "relu" and extra == ["--benchmark-max-time=0.5"]
    command = suite.pytest_command("torch", "x/torch-1.json", args.keyword, None, extra)
    assert command[1:3] == ["-m", "pytest"] and "-p" in command and "no:xdist" in command
    assert command[-6:] == ["--bench-library", "torch", "--benchmark-json=x/torch-1.json", "-k", "relu",
                            "--benchmark-max-time=0.5"]


@pytest.mark.slow  # pytest in processes of its own
def test_a_timed_run_of_both_libraries_in_one_process_stops_with_a_usage_error(tmp_path):
    done = run_pytest(f"--benchmark-json={tmp_path / 'both.json'}", *FEW_ROUNDS, timed=True)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "a timed run of xpnet (numpy, cupy) and PyTorch (torch-cpu, torch-cuda) in one process is not a result" \
        in done.stderr
    assert "benchmarks/suite.py" in done.stderr and "--bench-library" in done.stderr
    if (tmp_path / "both.json").exists():
        assert json.loads((tmp_path / "both.json").read_text())["benchmarks"] == []  # nothing was timed


@pytest.mark.slow
def test_a_timed_run_of_one_library_runs_and_skips_the_other_saying_why(tmp_path):
    done = run_pytest("--bench-library", "xpnet", f"--benchmark-json={tmp_path / 'xpnet.json'}", "-rs", *FEW_ROUNDS,
                      timed=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch-cpu case skipped: --bench-library xpnet times xpnet alone" in done.stdout
    result = json.loads((tmp_path / "xpnet.json").read_text())
    assert {b["extra_info"]["backend"] for b in result["benchmarks"]} == {"numpy"}
    assert {b["extra_info"]["pass"] for b in result["benchmarks"]} == {"forward", "backward"}
    assert all(b["stats"]["rounds"] >= 1 and b["stats"]["median"] > 0 for b in result["benchmarks"])
    facts = result["machine_info"]["xpnet"]
    assert facts["bench_library"] == "xpnet" and facts["torch"]["available"] is False  # PyTorch stayed out


@pytest.mark.slow
def test_a_smoke_run_still_runs_both_libraries_in_one_process():
    done = run_pytest("-rA", timed=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED benchmarks/bench_layers.py::test_layer[numpy-batch1-forward-relu]" in done.stdout
    if find_spec("torch"):
        assert "PASSED benchmarks/bench_layers.py::test_layer[torch-cpu-batch1-forward-relu]" in done.stdout


@pytest.mark.slow
def test_the_driver_times_each_library_in_processes_of_its_own_and_reports(tmp_path):
    done = subprocess.run([sys.executable, str(HERE / "suite.py"), "--out", str(tmp_path), "--rounds", "1",
                           "--threads", "1", "-k", TINY, *FEW_ROUNDS],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round 1/1: xpnet at 1 threads" in done.stderr and "round 1/1: torch at 1 threads" in done.stderr
    xpnet = json.loads((tmp_path / "xpnet-1.json").read_text())
    assert {b["extra_info"]["backend"] for b in xpnet["benchmarks"]} == {"numpy"}
    assert xpnet["machine_info"]["xpnet"]["xpnet_threads"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "- xpnet: 1 process (xpnet-1.json)" in report
    assert (tmp_path / "xpnet-1.log").exists() and (tmp_path / "torch-1.log").exists()
    if find_spec("torch"):
        torch = json.loads((tmp_path / "torch-1.json").read_text())
        assert {b["extra_info"]["backend"] for b in torch["benchmarks"]} == {"torch-cpu"}
        assert torch["machine_info"]["xpnet"]["torch"]["threads"] == 1
        assert "- PyTorch: 1 process (torch-1.json)" in report
        assert "| CPU ÷ torch CPU |" in report and "No ratio to PyTorch" not in report
    else:  # every PyTorch case skipped: pytest-benchmark writes no file, and the report has no PyTorch column
        torch_file = tmp_path / "torch-1.json"
        assert not torch_file.exists() or json.loads(torch_file.read_text())["benchmarks"] == []
        assert "| CPU ÷ torch CPU |" not in report  # the column, not the legend
