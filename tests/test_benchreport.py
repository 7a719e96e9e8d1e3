"""The benchmark report: tables, the GPU crossover batch, the plot and --compare, from synthetic results."""

import json
import re

import pytest

from xpnet.tools import benchreport

MS = 1e-3
MIB = 2 ** 20

# Medians in milliseconds, per layer and backend, for batches 1, 32, 128, 512.
BATCHES = (1, 32, 128, 512)
TIMES = {
    # the GPU wins from 128 on (speedups 0.25, 0.8, 4, 8)
    "conv A": {"numpy": (0.5, 4.0, 16.0, 64.0), "cupy": (2.0, 5.0, 4.0, 8.0),
               "torch-cpu": (0.25, 2.0, 8.0, 32.0), "torch-cuda": (1.0, 1.0, 2.0, 2.0)},
    # faster at 32, slower at 128, faster at 512: only 512 counts
    "conv B": {"numpy": (1.0, 2.0, 3.0, 8.0), "cupy": (2.0, 1.0, 4.0, 4.0)},
    # never faster
    "relu C": {"numpy": (0.1, 0.2, 0.3, 0.4), "cupy": (1.0, 1.0, 1.0, 1.0)},
}
FAMILY = {"conv A": "convolution", "conv B": "convolution", "relu C": "relu"}


def bench_entry(layer, backend, batch, seconds, pass_="forward", flops=0, **extra):
    """One benchmark as pytest-benchmark writes it (with the extra_info of xpnet's suite)."""
    name = f"test_x[{backend}-batch{batch}-{pass_}-{layer.replace(' ', '_')}]"
    return {
        "group": f"{layer} | {pass_} | batch {batch}",
        "name": name,
        "fullname": f"benchmarks/bench_layers.py::{name}",
        "params": {"backend": backend, "batch": batch, "pass_": pass_},
        "param": f"{backend}-batch{batch}-{pass_}",
        "extra_info": {"layer": layer, "family": FAMILY.get(layer, "network"), "pass": pass_, "batch": batch,
                       "backend": backend, "flops": flops, "dtype": "float32", **extra},
        "options": {"timer": "perf_counter", "min_rounds": 5},
        "stats": {"min": 0.9 * seconds, "max": 2 * seconds, "mean": 1.1 * seconds, "stddev": 0.1 * seconds,
                  "rounds": 10, "median": seconds, "iqr": 0.0, "q1": seconds, "q3": seconds,
                  "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": seconds,
                  "hd15iqr": seconds, "ops": 1 / seconds, "total": 10 * seconds, "iterations": 1},
    }


def synthetic_results(scale=None):
    """A result file; ``scale`` maps (layer, backend, batch) to a factor on the time (for --compare)."""
    benchmarks = []
    for layer, by_backend in TIMES.items():
        for backend, times in by_backend.items():
            for batch, ms in zip(BATCHES, times):
                factor = (scale or {}).get((layer, backend, batch), 1.0)
                extra = {}
                if layer == "conv A" and batch == 128:
                    extra = {"im2col_bytes": 8 * MIB, "flops": 2_000_000_000}
                    if backend == "numpy":
                        extra["peak_host_bytes"] = 3 * MIB
                    if backend in ("cupy", "torch-cuda"):
                        extra["peak_gpu_bytes"] = (5 if backend == "cupy" else 2) * MIB
                benchmarks.append(bench_entry(layer, backend, batch, ms * MS * factor, **extra))
    return {
        "machine_info": {"node": "test", "cpu": {"brand_raw": "Test CPU", "count": 2},
                         "xpnet": {"cpu_model": "Test CPU", "usable_cores": 2, "numpy": "2.0",
                                   "blas": {"name": "openblas", "version": "0.3", "threads": 2},
                                   "gpu_name": "Test GPU", "cupy": "14.2.0", "cuda_runtime": "13.0",
                                   "cuda_driver": "13.0", "cupy_tf32": False, "dtype": "float32",
                                   "torch": {"available": True, "version": "2.9", "threads": 2}}},
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "benchmarks": benchmarks,
        "datetime": "2026-01-01T00:00:00+00:00",
        "version": "5.2.3",
    }


TORCH_BACKENDS = ("torch-cpu", "torch-cuda")


def one_library(data, library, scale=1.0, load=None):
    """The part of a result file one process of ``library`` ("xpnet" or "torch") writes; times times ``scale``."""
    part = json.loads(json.dumps(data))
    keep = [b for b in part["benchmarks"] if (b["extra_info"]["backend"] in TORCH_BACKENDS) == (library == "torch")]
    for bench in keep:
        bench["stats"] = {k: v * scale if k in ("min", "max", "mean", "median") else v
                          for k, v in bench["stats"].items()}
    part["benchmarks"] = keep
    part["machine_info"]["xpnet"].update(bench_library=library, load_average=load)
    return part


def separate_processes(data):
    """``data`` as two files, each library timed in a process of its own."""
    return [benchreport.Run("xpnet-1.json", one_library(data, "xpnet")),
            benchreport.Run("torch-1.json", one_library(data, "torch"))]


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def table_row(report, layer, pass_, batch):
    """The cells of one table row of the report."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:3] == [layer, pass_, str(batch)]:
            return cells
    raise AssertionError(f"no row for {layer} {pass_} {batch} in:\n{report}")


def table_header(report, family):
    lines = report.splitlines()
    start = lines.index(f"## {family}")
    return [c.strip() for c in lines[start + 2].strip("|").split("|")]


def test_table_numbers():
    report = benchreport.build_report(separate_processes(synthetic_results()))
    header = table_header(report, "convolution")
    row = dict(zip(header, table_row(report, "conv A", "forward", 128)))
    assert row["CPU ms"] == "16.0"
    assert row["GPU ms"] == "4.00"
    assert row["GPU speedup"] == "4.00×"
    assert row["CPU ÷ torch CPU"] == "2.00×"  # 16 ms against 8 ms
    assert row["GPU ÷ torch CUDA"] == "2.00×"  # 4 ms against 2 ms
    assert row["CPU GFLOP/s"] == "125.0"  # 2 GFLOP in 16 ms
    assert row["GPU GFLOP/s"] == "500.0"
    assert row["im2col MiB"] == "8.0"
    assert row["CPU peak host MiB"] == "3.0"
    assert row["GPU peak MiB"] == "5.0"
    assert row["torch GPU peak MiB"] == "2.0"
    small = dict(zip(header, table_row(report, "conv A", "forward", 1)))
    assert small["CPU ms"] == "0.500" and small["GPU speedup"] == "0.25×"
    assert small["CPU GFLOP/s"] == "—"


def test_report_says_which_statistic_and_machine():
    report = benchreport.build_report(synthetic_results(), source="r.json")
    assert "**median**" in report
    assert "Test GPU" in report and "CuPy 14.2.0" in report and "TF32 off" in report
    min_report = benchreport.build_report(synthetic_results(), stat="min", source="r.json")
    assert "**min**" in min_report
    assert table_row(min_report, "conv A", "forward", 128)[3] == "14.4"  # min = 0.9 * median


def test_tables_per_family_and_empty_columns_dropped():
    report = benchreport.build_report(synthetic_results(), source="r.json")
    assert "## convolution" in report and "## relu" in report
    relu_header = table_header(report, "relu")
    assert "CPU ÷ torch CPU" not in relu_header  # no torch rows for relu
    assert relu_header[:6] == ["layer", "pass", "batch", "CPU ms", "GPU ms", "GPU speedup"]


def test_crossover_batch():
    results = benchreport.parse_results(synthetic_results())
    found = benchreport.crossovers(results)
    assert found[("conv A", "forward")][0] == 128
    assert found[("conv B", "forward")][0] == 512
    assert found[("relu C", "forward")][0] is None
    report = benchreport.build_report(synthetic_results(), source="r.json")
    section = report.split("## Where the GPU starts to win")[1]
    assert re.search(r"\| conv A \| forward \| from batch 128 \|", section)
    assert re.search(r"\| conv B \| forward \| from batch 512 \|", section)
    assert re.search(r"\| relu C \| forward \| not up to batch 512 \|", section)


def network_step(net, times_ms, peaks_mib=None, batch=256):
    """Training-step entries of one network: {backend: ms}, peaks {backend: MiB}."""
    return [bench_entry(f"{net} 1x28x28", backend, batch, ms * MS, pass_="train-step",
                        **({"peak_gpu_bytes": peaks_mib[backend] * MIB} if peaks_mib and backend in peaks_mib else {}))
            for backend, ms in times_ms.items()]


def test_the_gpu_targets_at_batch_256_are_stated_with_how_far_off_each_is():
    data = synthetic_results()
    data["benchmarks"] += network_step("DeepConvNet", {"numpy": 150.0, "cupy": 5.0, "torch-cuda": 3.0},
                                       {"cupy": 200, "torch-cuda": 150})
    data["benchmarks"] += network_step("SimpleConvNet", {"numpy": 60.0, "cupy": 2.2, "torch-cuda": 1.0})
    data["benchmarks"] += network_step("SimpleConvNet", {"numpy": 30.0, "cupy": 1.0, "torch-cuda": 1.0}, batch=128)
    rows = {row[0]: row[1:] for row in benchreport.gpu_targets(benchreport.parse_results(data))}
    assert rows == {
        "DeepConvNet training step, GPU ÷ PyTorch CUDA": ["1.67×", "≤ 2", "yes"],
        "DeepConvNet training step, GPU speedup over the CPU": ["30.00×", "≥ 20", "yes"],
        "DeepConvNet training step, peak GPU memory (xpnet against PyTorch)": ["200.0 MiB against 150.0 MiB",
                                                                               "reported", "—"],
        "SimpleConvNet training step, GPU ÷ PyTorch CUDA": ["2.20×", "≤ 2", "no"],
        "SimpleConvNet training step, peak GPU memory (xpnet against PyTorch)": ["— against —", "reported", "—"],
    }
    report = benchreport.build_report(separate_processes(data))
    assert "## The GPU targets (training step at batch 256)" in report
    assert "| SimpleConvNet training step, GPU ÷ PyTorch CUDA | 2.20× | ≤ 2 | no |" in report


def test_without_a_gpu_step_at_batch_256_the_report_says_so():
    assert "No training step at batch 256 has a GPU time in this file." in benchreport.build_report(synthetic_results())


def test_main_writes_report_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the speedup plot cannot be drawn")
    results = write(tmp_path / "results.json", synthetic_results())
    assert benchreport.main([str(results)]) == 0  # --out defaults to the JSON's folder
    report = (tmp_path / "report.md").read_text()
    png = tmp_path / "speedup.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![GPU speedup against batch size](speedup.png)" in report
    assert "report.md" in capsys.readouterr().out


def test_main_without_matplotlib(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    results = write(tmp_path / "results.json", synthetic_results())
    assert benchreport.main([str(results), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "speedup.png").exists()
    assert "matplotlib is not installed" in (tmp_path / "out" / "report.md").read_text()
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_compare(tmp_path, capsys):
    old = write(tmp_path / "old.json", synthetic_results())
    new = write(tmp_path / "new.json", synthetic_results(scale={("conv A", "numpy", 128): 2.0,
                                                                ("conv B", "cupy", 512): 0.5}))
    assert benchreport.main([str(new), "--compare", str(old), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Change: new.json against old.json" in report
    assert "2 slower" not in report and "1 slower and 1 faster" in report
    assert re.search(r"\| conv A \\\| forward \\\| batch 128 \| numpy \| 16\.0 \| 32\.0 \| 2\.00× \| slower \|", report)
    assert re.search(r"\| conv B \\\| forward \\\| batch 512 \| cupy \| 4\.00 \| 2\.00 \| 0\.50× \| faster \|", report)
    assert re.search(r"\| relu C \\\| forward \\\| batch 1 \| numpy \| 0\.100 \| 0\.100 \| 1\.00× \|  \|", report)
    assert "1 slower and 1 faster" in capsys.readouterr().out


def test_compare_counts_benchmarks_in_one_file_only():
    old = synthetic_results()
    new = synthetic_results()
    new["benchmarks"] = new["benchmarks"][1:]
    text = benchreport.compare_table(new, old)
    assert "Only in new: 0; only in old: 1." in text


def test_errors(tmp_path, capsys):
    assert benchreport.main([str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert benchreport.main([str(bad)]) == 2
    assert "not a pytest-benchmark result file" in capsys.readouterr().err
    smoke = write(tmp_path / "smoke.json", {"machine_info": {}, "benchmarks": []})
    assert benchreport.main([str(smoke)]) == 1
    assert "XPNET_BENCH=1" in capsys.readouterr().err


def test_group_and_params_suffice_without_extra_info():
    data = synthetic_results()
    for bench in data["benchmarks"]:
        bench["extra_info"] = {}
    results = benchreport.parse_results(data)
    assert {(r.layer, r.pass_, r.batch, r.backend) for r in results} >= {("conv A", "forward", 128, "cupy")}
    assert benchreport.crossovers(results)[("conv A", "forward")][0] == 128


def test_xpnet_bench_report_command(tmp_path):
    from xpnet.tools import cli

    results = write(tmp_path / "results.json", synthetic_results())
    assert cli.main(["bench", "report", str(results), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.md").exists()


# --- several files: each library timed in processes of its own -----------------------------------


def test_several_files_merge_to_the_median_of_each_case():
    data = synthetic_results()
    runs = [benchreport.Run(f"xpnet-{i}.json", one_library(data, "xpnet", scale, load))
            for i, scale, load in ((1, 1.0, 0.5), (2, 3.0, 1.5), (3, 2.0, 1.0))]
    runs += [benchreport.Run(f"torch-{i}.json", one_library(data, "torch", scale, 2.0))
             for i, scale in ((1, 1.0), (2, 1.5))]
    merged = benchreport.merge_runs(runs)
    assert merged.files == {"xpnet": ["xpnet-1.json", "xpnet-2.json", "xpnet-3.json"],
                            "torch": ["torch-1.json", "torch-2.json"]}
    assert merged.ratios and merged.one_process == []
    seconds = {(r.layer, r.backend, r.batch): r.seconds for r in merged.results}
    assert seconds[("conv A", "numpy", 128)] == pytest.approx(2 * 16.0 * MS)  # the median of 1x, 3x and 2x
    assert seconds[("conv A", "torch-cpu", 128)] == pytest.approx(1.25 * 8.0 * MS)  # of 1x and 1.5x
    assert len(merged.results) == len(benchreport.parse_results(data))  # one per case and backend

    report = benchreport.build_report(runs)
    row = dict(zip(table_header(report, "convolution"), table_row(report, "conv A", "forward", 128)))
    assert row["CPU ms"] == "32.0" and row["GPU ms"] == "8.00"
    assert row["CPU ÷ torch CPU"] == "3.20×"  # 32 ms against 10 ms, each from processes of its own
    assert row["GPU ÷ torch CUDA"] == "3.20×"  # 8 ms against 2.5 ms
    assert "- xpnet: 3 processes (xpnet-1.json, xpnet-2.json, xpnet-3.json)" in report
    assert "- PyTorch: 2 processes (torch-1.json, torch-2.json)" in report
    assert "median, over the files that hold it" in report
    assert "Load average (1 minute) when each process began: 0.50 to 2.00" in report
    assert "No ratio to PyTorch" not in report


def test_one_process_timing_both_libraries_gives_no_ratio_and_says_why():
    data = synthetic_results()
    data["benchmarks"] += network_step("DeepConvNet", {"numpy": 150.0, "cupy": 5.0, "torch-cuda": 3.0})
    report = benchreport.build_report(data, source="old.json")
    assert ("- No ratio to PyTorch: old.json timed both libraries in one process, where their thread pools "
            "slow each other (time each alone: benchmarks/suite.py).") in report
    header = table_header(report, "convolution")
    assert "CPU ÷ torch CPU" not in header and "GPU ÷ torch CUDA" not in header
    row = dict(zip(header, table_row(report, "conv A", "forward", 128)))
    assert row["CPU ms"] == "16.0" and row["GPU speedup"] == "4.00×"  # xpnet's own times stay
    assert "| DeepConvNet training step, GPU ÷ PyTorch CUDA | — | ≤ 2 | — |" in report
    assert "| DeepConvNet training step, GPU speedup over the CPU | 30.00× | ≥ 20 | yes |" in report
    assert not benchreport.merge_runs([benchreport.Run("old.json", data)]).ratios


def test_a_one_process_file_among_separate_ones_still_refuses_the_ratios():
    data = synthetic_results()
    runs = separate_processes(data) + [benchreport.Run("both.json", data)]
    merged = benchreport.merge_runs(runs)
    assert merged.one_process == ["both.json"] and not merged.ratios
    assert merged.files["xpnet"] == ["xpnet-1.json", "both.json"]
    report = benchreport.build_report(runs)
    assert "CPU ÷ torch CPU" not in table_header(report, "convolution")
    assert "No ratio to PyTorch: both.json timed both libraries in one process" in report


def test_main_takes_several_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # the picture is tested above
    data = synthetic_results()
    paths = [write(tmp_path / "xpnet-1.json", one_library(data, "xpnet")),
             write(tmp_path / "torch-1.json", one_library(data, "torch")),
             write(tmp_path / "torch-2.json", one_library(data, "torch", 3.0)),
             write(tmp_path / "xpnet-2.json", one_library(data, "xpnet", 3.0))]
    assert benchreport.main([str(p) for p in paths] + ["--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# xpnet benchmarks: 4 result files")
    assert "- xpnet: 2 processes (xpnet-1.json, xpnet-2.json)" in report
    assert "- PyTorch: 2 processes (torch-1.json, torch-2.json)" in report
    assert dict(zip(table_header(report, "convolution"), table_row(report, "conv A", "forward", 128)))[
        "CPU ÷ torch CPU"] == "2.00×"  # 32 ms against 16 ms: both medians of 1x and 3x
    assert "from 4 files" in capsys.readouterr().out


def test_the_report_warns_when_the_libraries_ran_at_different_thread_counts():
    data = synthetic_results()
    data["machine_info"]["xpnet"]["xpnet_threads"] = 2
    runs = separate_processes(data)
    assert "threads differ" not in benchreport.build_report(runs)
    runs[1].data["machine_info"]["xpnet"]["torch"]["threads"] = 1
    assert ("- CPU threads differ: xpnet 2, PyTorch 1: the ratios compare unequal thread counts"
            in benchreport.build_report(runs))
