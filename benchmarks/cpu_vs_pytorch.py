"""xpnet against PyTorch on the CPU: training step, inference and peak memory, as ratios, in one run.

    python benchmarks/cpu_vs_pytorch.py [--batch 100] [--memory-batch 256] [--threads 2] [--out DIR]

Both run float32 with the same number of threads (NumPy's BLAS through
threadpoolctl where installed, else OMP_NUM_THREADS set before import;
``torch.set_num_threads`` for PyTorch) on the same shapes: the book's
SimpleConvNet and DeepConvNet on 28x28 images. Timings interleave the two
libraries round by round, so a noisy neighbour slows both alike; each is
the median of ``--rounds`` rounds. Each timed call follows an untimed call
of the same library, as in a training loop: right after the other
library's call, its OpenMP or OpenBLAS threads still spin for a few
milliseconds and take a core (xpnet's DeepConvNet inference measured 20%
slower right after PyTorch's training step than 20 ms later). A training step is forward and backward
(the gradients); inference is a forward pass in evaluation mode. Peak
memory is the resident-set high-water mark of a training step (after a
warm-up step) above the size of the process before any step ran, with the
network and the data in place: what the step needs, caches included. Each
library is measured in a process of its own (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {("SimpleConvNet", "train"): 1.5, ("DeepConvNet", "train"): 2.0,
           ("SimpleConvNet", "inference"): 1.5, ("DeepConvNet", "inference"): 1.5}
MEMORY_TARGET = 2.0


def torch_models():
    import torch.nn as nn

    def simple():
        return nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                             nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))

    def deep():
        layers, channels = [], 1
        for i, (filters, pad) in enumerate([(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]):
            layers += [nn.Conv2d(channels, filters, 3, padding=pad), nn.ReLU()]
            channels = filters
            if i % 2:
                layers.append(nn.MaxPool2d(2, 2))
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(50, 10))

    return {"SimpleConvNet": simple, "DeepConvNet": deep}


def make_steps(name, batch, seed=0):
    """Four callables on the same data: xpnet and torch, training step and inference."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    import xpnet.nets

    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, batch)
    net = getattr(xpnet.nets, name)()
    model = torch_models()[name]()
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)

    def torch_train():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xt), tt).backward()

    def torch_infer():
        model.eval()
        with torch.no_grad():
            model(xt)

    return {("xpnet", "train"): lambda: net.gradient(x, t), ("torch", "train"): torch_train,
            ("xpnet", "inference"): lambda: net.predict(x), ("torch", "inference"): torch_infer}


def set_threads(threads):
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass  # OMP_NUM_THREADS/OPENBLAS_NUM_THREADS were set before NumPy was imported


def time_all(batch, rounds):
    import numpy as np

    results = {}
    for name in ("SimpleConvNet", "DeepConvNet"):
        steps = make_steps(name, batch)
        for fn in steps.values():
            fn()  # warm up
        samples = {key: [] for key in steps}
        for _ in range(rounds):
            for key, fn in steps.items():
                fn()  # untimed: the other library's worker threads may still be spinning
                start = time.perf_counter()
                fn()
                samples[key].append(time.perf_counter() - start)
        for kind in ("train", "inference"):
            xp_ms = float(np.median(samples[("xpnet", kind)]) * 1e3)
            torch_ms = float(np.median(samples[("torch", kind)]) * 1e3)
            results[f"{name} {kind}"] = {"xpnet_ms": xp_ms, "torch_ms": torch_ms, "ratio": xp_ms / torch_ms,
                                         "target": TARGETS[(name, kind)]}
    return results


def peak_step_bytes(library, batch):
    """Run in a child process: the peak resident set of a DeepConvNet training step above the idle process."""
    code = f"""
import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from cpu_vs_pytorch import make_steps, set_threads, _rss
set_threads({THREADS})
step = make_steps("DeepConvNet", {batch})[({library!r}, "train")]
before = _rss("VmRSS")  # the network and the data exist, no step has run
step()
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current size
step()
print(_rss("VmHWM") - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(THREADS))
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return int(out.stdout.strip())


def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _env(threads):
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


def machine():
    import numpy as np
    import torch

    import xpnet

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": THREADS, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "xpnet": xpnet.__version__,
            "commit": _commit(), "date": time.strftime("%Y-%m-%d")}


def _commit():
    """The git commit of the source tree measured, with "+changes" if it differs from it; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def report(result):
    lines = [f"CPU: {result['machine']['cpu']}, {result['machine']['cores']} cores, {THREADS} threads each; "
             f"NumPy {result['machine']['numpy']}, PyTorch {result['machine']['torch']}; float32, batch {result['batch']}; "
             f"commit {result['machine'].get('commit') or 'unknown'}",
             "", "| case | xpnet ms | PyTorch ms | ratio | target | met |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for case, r in result["timings"].items():
        met = "yes" if r["ratio"] <= r["target"] else "no"
        lines.append(f"| {case} | {r['xpnet_ms']:.1f} | {r['torch_ms']:.1f} | {r['ratio']:.2f} | ≤ {r['target']} | {met} |")
    m = result.get("memory")
    if m:
        met = "yes" if m["ratio"] <= MEMORY_TARGET else "no"
        lines.append(f"| DeepConvNet training step, peak memory at batch {m['batch']} | {m['xpnet_mib']:.0f} MiB | "
                     f"{m['torch_mib']:.0f} MiB | {m['ratio']:.2f} | ≤ {MEMORY_TARGET} | {met} |")
    return "\n".join(lines)


THREADS = 2


def main(argv=None):
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--memory-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None, help="folder for cpu-vs-pytorch-<cores>core-<date>.json and .md")
    args = parser.parse_args(argv)
    THREADS = args.threads
    set_threads(THREADS)
    result = {"machine": machine(), "batch": args.batch, "timings": time_all(args.batch, args.rounds)}
    if sys.platform.startswith("linux"):
        xp_bytes, torch_bytes = (peak_step_bytes(lib, args.memory_batch) for lib in ("xpnet", "torch"))
        result["memory"] = {"batch": args.memory_batch, "xpnet_mib": xp_bytes / 2**20, "torch_mib": torch_bytes / 2**20,
                            "ratio": xp_bytes / torch_bytes}
    text = report(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"cpu-vs-pytorch-{result['machine']['cores']}core-{result['machine']['date']}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        stem.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    for var, value in _env(int(os.environ.get("XPNET_BENCH_THREADS", "2"))).items():
        os.environ.setdefault(var, value)
    sys.exit(main())
