"""The two routes to every CPU core, prototyped on the convolution alone and measured before choosing.

    python benchmarks/prototype_cpu_routes.py [--threads 1 2] [--rounds 15] [--out FILE.json]

A convolution's forward pass (im2col, one product, the bias) and backward
pass (im2col again, dW, db, dx by col2im) at batch 100 on the shapes of the
book's networks, float32, channels-last images (N, H, W, C), by:

* ``numpy-pool``: route (a), NumPy in xpnet's thread pool over chunks of the
  batch, BLAS at one thread inside (``xpnet.threads.parallel_map``), columns
  in (fy, fx, c) order: a window is FH*FW runs of C contiguous values;
* ``numpy-pool-cfyfx``: the same, columns in the book's (c, fy, fx) order
  (the order of the GPU kernels): a strided copy per value;
* ``numba-parallel``: route (b), Numba ``@njit(parallel=True)`` kernels over the
  whole batch (``prange`` over images: im2col, col2im as a gather), one
  product over the whole batch with BLAS at N threads, (c, fy, fx) columns;
* ``numba-in-pool``: Numba ``@njit(nogil=True)`` kernels (serial) inside
  xpnet's thread pool over chunks, (c, fy, fx) columns.

Each variant runs in a process of its own, variants alternating round by
round; each figure is the median wall time over the rounds, and the CPU
time (all threads) beside it. The load average is recorded with every
round, since on a shared machine it says how much the figures mean.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SHAPES = {  # name: (C, H, W, FN, K, pad)
    "SimpleConvNet conv1 1->30 5x5": (1, 28, 28, 30, 5, 0),
    "DeepConvNet conv2 16->16 3x3": (16, 28, 28, 16, 3, 1),
    "DeepConvNet conv4 32->32 3x3 pad 2": (32, 14, 14, 32, 3, 2),
    "DeepConvNet conv6 64->64 3x3": (64, 7, 7, 64, 3, 1),
}
VARIANTS = ("numpy-pool", "numpy-pool-cfyfx", "numba-parallel", "numba-in-pool")
BATCH = 100
CHUNK_BYTES = 2 * 2**20  # the columns of one chunk, as xpnet's Convolution


def _numba_kernels(parallel):
    import numba
    import numpy as np

    loop = numba.prange if parallel else range
    options = dict(parallel=True) if parallel else dict(nogil=True)

    @numba.njit(cache=True, **options)
    def im2col(img, fh, fw, stride, oh, ow, col):
        """col (N*OH*OW, C*FH*FW), (c, fy, fx) order, from padded channels-last img (N, Hp, Wp, C)."""
        n, _, _, c = img.shape
        k = fh * fw
        for i in loop(n):
            tile = np.empty((k, c), img.dtype)
            for oy in range(oh):
                for ox in range(ow):
                    for fy in range(fh):
                        for fx in range(fw):
                            for ch in range(c):
                                tile[fy * fw + fx, ch] = img[i, oy * stride + fy, ox * stride + fx, ch]
                    r = (i * oh + oy) * ow + ox
                    for ch in range(c):
                        for j in range(k):
                            col[r, ch * k + j] = tile[j, ch]

    @numba.njit(cache=True, **options)
    def col2im(col, fh, fw, stride, oh, ow, img):
        """img (N, Hp, Wp, C) = the sum of each pixel's column entries: a gather, one pixel at a time."""
        n, hp, wp, c = img.shape
        k = fh * fw
        for i in loop(n):
            for y in range(hp):
                for x in range(wp):
                    for ch in range(c):
                        img[i, y, x, ch] = 0
                    for fy in range(fh):
                        ty = y - fy
                        if ty < 0 or ty % stride or ty // stride >= oh:
                            continue
                        for fx in range(fw):
                            tx = x - fx
                            if tx < 0 or tx % stride or tx // stride >= ow:
                                continue
                            r = (i * oh + ty // stride) * ow + tx // stride
                            for ch in range(c):
                                img[i, y, x, ch] += col[r, ch * k + fy * fw + fx]

    return im2col, col2im


def make_case(variant, shape, threads):
    """forward() and backward() callables for one variant on one shape."""
    import numpy as np
    from numpy.lib.stride_tricks import as_strided

    from xpnet import threads as xt

    xt.set_num_threads(threads)
    c, h, w, fn, k, pad = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, h + 2 * pad, w + 2 * pad, c), dtype=np.float32)  # padded, channels-last
    x[:, :pad], x[:, h + pad:], x[:, :, :pad], x[:, :, w + pad:] = 0, 0, 0, 0
    W = rng.standard_normal((fn, c, k, k), dtype=np.float32) * 0.1
    b = rng.standard_normal(fn, dtype=np.float32)
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    dout = rng.standard_normal((BATCH, oh, ow, fn), dtype=np.float32)
    out = np.empty((BATCH, oh, ow, fn), np.float32)
    dx = np.empty_like(x)
    cfyfx = variant != "numpy-pool"
    W_col = (W.reshape(fn, -1) if cfyfx else W.transpose(0, 2, 3, 1).reshape(fn, -1)).T  # (C*K*K, FN)
    per_example = oh * ow * c * k * k * 4
    chunks = xt.split(BATCH, max(threads, -(-BATCH * per_example // CHUNK_BYTES)))

    def windows(img):
        sn, sh, sw, sc = img.strides
        if cfyfx:
            return as_strided(img, (img.shape[0], oh, ow, c, k, k), (sn, sh, sw, sc, sh, sw))
        return as_strided(img, (img.shape[0], oh, ow, k, k, c), (sn, sh, sw, sh, sw, sc))

    if variant.startswith("numba"):
        im2col, col2im = _numba_kernels(parallel=variant == "numba-parallel")
    if variant == "numba-parallel":
        import numba

        numba.set_num_threads(threads)
        col = np.empty((BATCH * oh * ow, c * k * k), np.float32)
        dcol = np.empty_like(col)

        def forward():
            im2col(x, k, k, 1, oh, ow, col)
            np.matmul(col, W_col, out=out.reshape(-1, fn))
            out.reshape(-1, fn)[...] += b

        def backward():
            im2col(x, k, k, 1, oh, ow, col)
            d = dout.reshape(-1, fn)
            dW = d.T @ col
            db = d.sum(axis=0)
            np.matmul(d, W_col.T, out=dcol)
            col2im(dcol, k, k, 1, oh, ow, dx)
            return dW, db

        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")
        return forward, backward

    def gather(part, slot):
        col = scratch(slot, (part.stop - part.start) * oh * ow, c * k * k)
        if variant == "numba-in-pool":
            im2col(x[part], k, k, 1, oh, ow, col)
        else:
            col.reshape(windows(x[part]).shape)[...] = windows(x[part])
        return col

    def scatter(dcol, part):
        if variant == "numba-in-pool":
            col2im(dcol, k, k, 1, oh, ow, dx[part])
            return
        dx[part] = 0
        d6 = dcol.reshape(windows(x[part]).shape)
        for fy in range(k):
            for fx in range(k):
                pixels = dx[part, fy:fy + oh, fx:fx + ow]
                pixels += d6[:, :, :, :, fy, fx] if cfyfx else d6[:, :, :, fy, fx, :]

    def forward_part(part):
        col = gather(part, 0)
        rows = out[part].reshape(-1, fn)
        np.matmul(col, W_col, out=rows)
        rows += b

    def backward_part(part):
        col = gather(part, 0)
        d = dout[part].reshape(-1, fn)
        dW, db = d.T @ col, d.sum(axis=0)
        dcol = scratch(1, col.shape[0], col.shape[1])
        np.matmul(d, W_col.T, out=dcol)
        scatter(dcol, part)
        return dW, db

    def forward():
        xt.parallel_map(forward_part, chunks)

    def backward():
        parts = xt.parallel_map(backward_part, chunks)
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    return forward, backward


_buffers = None


def scratch(slot, rows, cols):
    """A per-thread reused buffer (xpnet's layers had one, ``util.scratch``, until it was measured not to pay)."""
    from xpnet.util import scratch as xpnet_scratch
    import numpy as np

    return xpnet_scratch(np, (rows, cols), np.float32, slot)


def child(variant, threads, rounds):
    """One process: every shape, ``rounds`` timed calls of each pass after two untimed ones."""
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    results = {}
    for name, shape in SHAPES.items():
        forward, backward = make_case(variant, shape, threads)
        for label, fn in (("forward", forward), ("backward", backward)):
            fn(), fn()
            walls, cpus = [], []
            for _ in range(rounds):
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            walls.sort(), cpus.sort()
            results[f"{name} {label}"] = {"wall_ms": walls[len(walls) // 2] * 1e3,
                                          "cpu_ms": cpus[len(cpus) // 2] * 1e3}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per pass in each process")
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant and thread count, alternating")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.rounds)))
        return 0
    runs = []
    for repeat in range(args.repeats):
        for threads in args.threads:
            for variant in args.variants:
                env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
                       "OPENBLAS_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
                load = os.getloadavg()[0]
                done = subprocess.run([sys.executable, __file__, "--child", variant, str(threads),
                                       "--rounds", str(args.rounds)], capture_output=True, text=True, env=env)
                if done.returncode:
                    raise SystemExit(f"{variant} at {threads} threads failed:\n{done.stderr}")
                runs.append({"variant": variant, "threads": threads, "repeat": repeat, "load_before": load,
                             "load_after": os.getloadavg()[0], "results": json.loads(done.stdout)})
                print(f"{variant:18s} {threads} threads, load {load:.2f}", file=sys.stderr)
    table = summarize(runs, args.variants, args.threads)
    print(table)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=1))
    return 0


def summarize(runs, variants, thread_counts):
    """Median over the repeats of each case's wall time (ms), and its CPU time, per variant and thread count."""
    import statistics

    cases = list(runs[0]["results"])
    header = "| case | " + " | ".join(f"{v} {t}T" for t in thread_counts for v in variants) + " |"
    lines = [header, "| --- |" + " ---: |" * (len(variants) * len(thread_counts))]
    for case in cases:
        cells = []
        for t in thread_counts:
            for v in variants:
                mine = [r["results"][case] for r in runs if r["variant"] == v and r["threads"] == t]
                wall = statistics.median(m["wall_ms"] for m in mine)
                cpu = statistics.median(m["cpu_ms"] for m in mine)
                cells.append(f"{wall:.2f} ({cpu:.2f})")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    loads = [r["load_before"] for r in runs]
    lines.append("")
    lines.append(f"wall ms (CPU ms of all threads), median of the processes; load average {min(loads):.2f} to "
                 f"{max(loads):.2f} during the run")
    return "\n".join(lines)


def machine():
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


if __name__ == "__main__":
    sys.exit(main())
