#!/usr/bin/env bash
# Everything the GPU half of benchmarks/results holds, in one run on a CUDA machine:
#
#     bash benchmarks/gpu_results.sh OUT [PART ...]
#
# PART is any of tests, example, bench, experiments, search, cpu-scaling (default: all of them). Needs CuPy,
# pytest and pytest-benchmark; PyTorch for the peers and for cpu-scaling, matplotlib for the pictures, Optuna
# for the search (each part that lacks one says so in its log). Runs from the source tree. Writes into OUT:
#   gpu_info.txt                     nvidia-smi, xpnet info, the commit
#   gpu_tests.log                    python -m pytest tests, with CuPy
#   example_gpu.log                  XPNET_DEVICE=gpu python examples/train_convnet.py
#   bench/, bench.log                the full benchmark suite, timed, each library in processes of its own
#                                    (benchmarks/suite.py, 3 rounds): xpnet-R.json, torch-R.json, their logs,
#                                    report.md (with the GPU targets) and speedup.png
#   experiments-{cpu,gpu}/, *.log    every experiment on each device, and experiments.md comparing their times
#   search-{cpu,gpu}/, *.log         the book's search (100 trials) on each device
#   cpu-scaling/, cpu-scaling.log    the host's cores: xpnet and PyTorch at 1, 2, 4, 8, 16 and all cores, each library
#                                    in processes of its own (benchmarks/thread_scaling.py, 3 rounds), with the
#                                    issue's CPU targets (DeepConvNet step within 2x of PyTorch at 16 threads)
#   status.txt                       the exit status and time of each part
# The script exits with status 1 if any part failed.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_results.sh OUT [tests|example|bench|experiments|search|cpu-scaling ...]}
shift
parts=${*:-tests example bench experiments search cpu-scaling}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
: > "$out/status.txt"

part() {  # part NAME COMMAND...: run it, note its exit status and time
    local name=$1 start=$SECONDS status
    shift
    "$@"
    status=$?
    echo "$name: exit $status after $((SECONDS - start)) s" >> "$out/status.txt"
}

to() {  # to FILE COMMAND...: the command's output, both streams, into FILE
    local file=$1
    shift
    "$@" > "$file" 2>&1
}

{ nvidia-smi; "$py" -m xpnet info; git rev-parse HEAD 2>/dev/null || echo "commit unknown (not a git checkout)"; } \
    > "$out/gpu_info.txt" 2>&1

for name in $parts; do
    case $name in
    tests)
        part tests to "$out/gpu_tests.log" "$py" -m pytest tests -q -p no:cacheprovider -rs ;;
    example)
        part example to "$out/example_gpu.log" env XPNET_DEVICE=gpu "$py" examples/train_convnet.py ;;
    bench)
        rm -rf "$out/bench"
        part bench to "$out/bench.log" "$py" benchmarks/suite.py --out "$out/bench" --rounds 3 \
            --benchmark-max-time=0.5 --benchmark-columns=median,iqr,rounds ;;
    experiments)
        if ! experiments=$("$py" -c "from xpnet.tools.experiments import EXPERIMENTS; print(*sorted(EXPERIMENTS))"); then
            echo "experiments: exit 1, they could not be listed" >> "$out/status.txt"
            continue
        fi
        rm -rf "$out"/experiments-cpu "$out"/experiments-gpu "$out"/experiments-*.log
        for device in cpu gpu; do
            for experiment in $experiments; do
                part "experiment $experiment on $device" to "$out/experiments-$device-$experiment.log" \
                    "$py" -m xpnet experiment "$experiment" --device "$device" --out "$out/experiments-$device"
            done
        done
        # shellcheck disable=SC2086  # one argument per experiment
        part "experiments table" "$py" - "$out" $experiments <<'PYTHON'
import json, sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
rows = ["| experiment | CPU s | GPU s | CPU ÷ GPU |", "| --- | ---: | ---: | ---: |"]
for name in names:
    seconds = []
    for device in ("cpu", "gpu"):
        path = out / f"experiments-{device}" / f"{name}.json"
        seconds.append(json.loads(path.read_text())["seconds"] if path.exists() else None)
    cpu, gpu = seconds
    cells = [f"{s:.1f}" if s is not None else "failed" for s in seconds]
    ratio = f"{cpu / gpu:.2f}×" if cpu is not None and gpu is not None else "—"
    rows.append(f"| {name} | {cells[0]} | {cells[1]} | {ratio} |")
(out / "experiments.md").write_text("Wall time of each experiment, the same command on each device.\n\n"
                                    + "\n".join(rows) + "\n")
print("\n".join(rows))
PYTHON
        ;;
    search)
        for device in cpu gpu; do
            rm -rf "$out/search-$device"
            part "search on $device" to "$out/search-$device.log" \
                "$py" -m xpnet search --device "$device" --quiet --out "$out/search-$device"
        done ;;
    cpu-scaling)
        rm -rf "$out/cpu-scaling"
        # the cores this process may use, as thread_scaling.py counts them (nproc follows OMP_NUM_THREADS)
        cores=$("$py" -c 'import os; print(len(os.sched_getaffinity(0)))') counts=""
        for n in 1 2 4 8 16; do  # 16: the many-core target's count
            ((n < cores)) && counts="$counts $n"
        done
        # shellcheck disable=SC2086  # one argument per count
        part cpu-scaling to "$out/cpu-scaling.log" "$py" benchmarks/thread_scaling.py \
            --threads $counts "$cores" --rounds 3 --out "$out/cpu-scaling" ;;
    *)
        echo "unknown part $name: choose from tests, example, bench, experiments, search, cpu-scaling" >&2
        exit 2 ;;
    esac
done
cat "$out/status.txt"
! grep -qv ": exit 0 after" "$out/status.txt"  # fails if any part did
