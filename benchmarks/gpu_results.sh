#!/usr/bin/env bash
# Everything the GPU half of benchmarks/results holds, in one run on a CUDA machine:
#
#     bash benchmarks/gpu_results.sh OUT [PART ...]
#
# PART is any of tests, example, bench, experiments, search (default: all of them). Needs CuPy, pytest and pytest-benchmark; PyTorch for the peers, matplotlib for the
# pictures, Optuna for the search (each part that lacks one says so in its log). Runs from the source
# tree. Writes into OUT:
#   gpu_info.txt                   nvidia-smi, xpnet info, the commit
#   gpu_tests.log                  python -m pytest tests, with CuPy
#   example_gpu.log                XPNET_DEVICE=gpu python examples/train_convnet.py
#   results.json, bench.log,       the full benchmark suite, timed, and its report (with the GPU targets)
#     report.md, speedup.png
#   experiments-{cpu,gpu}/         every experiment on each device, and experiments.md comparing their times
#   search-{cpu,gpu}.log           the book's search (100 trials) on each device
#   status.txt                     the exit status of each part
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_results.sh OUT [tests|example|bench|experiments|search ...]}
shift
parts=${*:-tests example bench experiments search}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
: > "$out/status.txt"

part() {  # part NAME COMMAND...: run it, note its exit status and time
    local name=$1 start=$SECONDS
    shift
    "$@"
    echo "$name: exit $? after $((SECONDS - start)) s" >> "$out/status.txt"
}

{ nvidia-smi; $py -m xpnet info; git rev-parse HEAD 2>/dev/null || echo "commit unknown (not a git checkout)"; } \
    > "$out/gpu_info.txt" 2>&1

for name in $parts; do
    case $name in
    tests)
        part tests bash -c "$py -m pytest tests -q -p no:cacheprovider -rs > '$out/gpu_tests.log' 2>&1" ;;
    example)
        part example bash -c "XPNET_DEVICE=gpu $py examples/train_convnet.py > '$out/example_gpu.log' 2>&1" ;;
    bench)
        part bench bash -c "XPNET_BENCH=1 $py -m pytest benchmarks -p no:xdist -p no:cacheprovider \
            --benchmark-max-time=0.5 --benchmark-columns=median,iqr,rounds \
            --benchmark-json='$out/results.json' > '$out/bench.log' 2>&1"
        part report $py -m xpnet.benchreport "$out/results.json" --out "$out" ;;
    experiments)
        for device in cpu gpu; do
            for experiment in $($py -c "from xpnet.experiments import EXPERIMENTS; print(*sorted(EXPERIMENTS))"); do
                part "experiment $experiment on $device" bash -c "$py -m xpnet experiment $experiment \
                    --device $device --out '$out/experiments-$device' >> '$out/experiments-$device.log' 2>&1"
            done
        done
        part "experiments table" $py - "$out" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = ["| experiment | CPU s | GPU s | CPU ÷ GPU |", "| --- | ---: | ---: | ---: |"]
for cpu_file in sorted((out / "experiments-cpu").glob("*.json")):
    gpu_file = out / "experiments-gpu" / cpu_file.name
    if not gpu_file.exists():
        continue
    cpu, gpu = (json.loads(f.read_text())["seconds"] for f in (cpu_file, gpu_file))
    rows.append(f"| {cpu_file.stem} | {cpu:.1f} | {gpu:.1f} | {cpu / gpu:.2f}× |")
(out / "experiments.md").write_text("Wall time of each experiment, the same command on each device.\n\n"
                                    + "\n".join(rows) + "\n")
print("\n".join(rows))
EOF
        ;;
    search)
        for device in cpu gpu; do
            part "search on $device" bash -c "$py -m xpnet search --device $device --quiet \
                --out '$out/search-$device' > '$out/search-$device.log' 2>&1"
        done ;;
    *)
        echo "unknown part $name: choose from tests, example, bench, experiments, search" >&2
        exit 2 ;;
    esac
done
cat "$out/status.txt"
