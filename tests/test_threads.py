"""CPU threads: where the count comes from, the pool's promises (order, errors, BLAS at one thread, no deadlock
after fork or with nested pools), and results that do not depend on the thread count."""

import multiprocessing
import os
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import threads, util
from xpnet.layers import Affine, BatchNormalization, Convolution, Pooling, Relu
from xpnet.optimizer import get_optimizer
from xpnet.nets import MultiLayerNetExtend

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_count(monkeypatch):
    """Each test starts from the default count (no set_num_threads, no XPNET_NUM_THREADS) and leaves it so."""
    monkeypatch.delenv(threads.ENV, raising=False)
    threads.set_num_threads(None)
    yield
    monkeypatch.undo()  # the environment as it was, before the default is read again
    threads.set_num_threads(None)


# --- where the count comes from -------------------------------------------------------------------


def test_set_num_threads_sets_the_count_and_says_so():
    assert xpnet.set_num_threads(3) == 3
    assert xpnet.get_num_threads() == 3
    assert threads.num_threads_source() == "xpnet.set_num_threads(3)"
    xpnet.set_num_threads(None)
    assert threads.num_threads_source() != "xpnet.set_num_threads(3)"


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_set_num_threads_refuses_anything_but_a_positive_integer(bad):
    with pytest.raises((TypeError, ValueError), match="positive integer"):
        xpnet.set_num_threads(bad)


def test_the_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("XPNET_NUM_THREADS", "5")
    threads.set_num_threads(None)
    assert threads.get_num_threads() == 5 and threads.num_threads_source() == "XPNET_NUM_THREADS=5"
    xpnet.set_num_threads(2)  # the call wins over the environment
    assert threads.get_num_threads() == 2


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_a_bad_environment_value_is_an_error_that_names_the_variable_and_the_value(monkeypatch, bad):
    monkeypatch.setenv("XPNET_NUM_THREADS", bad)
    message = f"XPNET_NUM_THREADS must be a positive integer.*'{bad}'"
    with pytest.raises(ValueError, match=message):
        threads.set_num_threads(None)  # back to the default, which is read at once
    with pytest.raises(ValueError, match=message):
        threads.get_num_threads()


def test_the_default_is_the_cpu_affinity_without_a_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    threads.set_num_threads(None)
    assert threads.get_num_threads() == 3
    assert threads.num_threads_source() == "CPU affinity: 3 cores"


def test_a_cgroup_quota_below_the_affinity_caps_the_default_rounded_up(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    threads.set_num_threads(None)
    assert threads.get_num_threads() == 3
    assert threads.num_threads_source() == "cgroup CPU quota of 2.5 CPUs (CPU affinity: 16 cores)"
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 32.0)  # a quota above the affinity changes nothing
    threads.set_num_threads(None)
    assert threads.get_num_threads() == 16


def fake_proc(tmp_path, mountinfo, cgroup):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text(cgroup)
    return proc


def mkdirs(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_cgroup_v2_quota_is_the_tightest_cpu_max_on_the_path(tmp_path):
    fs = tmp_path / "cg2"
    leaf = mkdirs(fs / "job" / "task")
    (fs / "cpu.max").write_text("max 100000\n")
    (fs / "job" / "cpu.max").write_text("300000 100000\n")
    (leaf / "cpu.max").write_text("150000 100000\n")
    proc = fake_proc(tmp_path, f"30 23 0:26 / {fs} rw,nosuid - cgroup2 cgroup2 rw\n", "0::/job/task\n")
    assert threads.cgroup_cpu_limit(str(proc)) == 1.5
    (leaf / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(str(proc)) == 3.0


def test_cgroup_v1_quota_comes_from_cfs_quota_and_period(tmp_path):
    fs = tmp_path / "cpu"
    leaf = mkdirs(fs / "docker" / "abc")
    (leaf / "cpu.cfs_quota_us").write_text("50000\n")
    (leaf / "cpu.cfs_period_us").write_text("100000\n")
    (fs / "cpu.cfs_quota_us").write_text("-1\n")
    (fs / "cpu.cfs_period_us").write_text("100000\n")
    mountinfo = (f"32 31 0:29 / {fs} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
                 f"35 31 0:32 / {tmp_path / 'memory'} rw,relatime - cgroup cgroup rw,memory\n")
    proc = fake_proc(tmp_path, mountinfo, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    assert threads.cgroup_cpu_limit(str(proc)) == 0.5


def test_no_quota_or_no_cgroup_files_mean_no_limit(tmp_path):
    fs = mkdirs(tmp_path / "cg2")
    (fs / "cpu.max").write_text("max 100000\n")
    proc = fake_proc(tmp_path, f"30 23 0:26 / {fs} rw - cgroup2 cgroup2 rw\n", "0::/\n")
    assert threads.cgroup_cpu_limit(str(proc)) is None
    assert threads.cgroup_cpu_limit(str(tmp_path / "nowhere")) is None


def test_xpnet_info_shows_the_thread_count_and_where_it_came_from():
    env = {**os.environ, "XPNET_NUM_THREADS": "3", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "xpnet", "info"], capture_output=True, text=True, env=env).stdout
    line = next(line for line in out.splitlines() if line.startswith("threads"))
    assert "3 on the CPU (XPNET_NUM_THREADS=3)" in line and "BLAS" in line


# --- the pool ------------------------------------------------------------------------------------


def test_split_cuts_a_range_into_near_equal_contiguous_slices():
    assert threads.split(10, 3) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert threads.split(2, 4) == [slice(0, 1), slice(1, 2)]
    assert threads.split(0, 3) == [slice(0, 0)]


def test_parallel_map_returns_results_in_item_order():
    xpnet.set_num_threads(3)
    assert threads.parallel_map(lambda k: k * k, range(20)) == [k * k for k in range(20)]


def test_parallel_map_runs_items_at_the_same_time_on_several_threads():
    xpnet.set_num_threads(2)
    both = threading.Barrier(2, timeout=10)  # passes only if two items run at once

    def item(k):
        both.wait()
        return threading.get_ident()

    assert len(set(threads.parallel_map(item, range(2)))) == 2


def test_one_thread_runs_every_item_in_the_calling_thread():
    xpnet.set_num_threads(1)
    assert set(threads.parallel_map(lambda k: threading.get_ident(), range(5))) == {threading.get_ident()}


def test_an_error_in_any_item_reaches_the_caller():
    xpnet.set_num_threads(2)

    def item(k):
        if k == 3:
            raise ArithmeticError(f"item {k}")
        return k

    with pytest.raises(ArithmeticError, match="item 3"):
        threads.parallel_map(item, range(8))
    assert threads.parallel_map(lambda k: k, range(4)) == [0, 1, 2, 3]  # the pool still works


def blas_threads():
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_blas_runs_single_threaded_inside_parallel_work_and_gets_its_count_back_after():
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        xpnet.set_num_threads(2)
        inside = threads.parallel_map(lambda k: blas_threads(), range(4))
        assert all(counts == [1] * len(before) for counts in inside)
        assert blas_threads() == before


def test_a_networks_pass_holds_blas_at_one_thread_once_and_gives_its_count_back(monkeypatch):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    net = MultiLayerNetExtend(20, [6, 6], 10, use_batchnorm=True)
    x, t = rng.standard_normal((4, 20)).astype(np.float32), np.arange(4)
    xpnet.set_num_threads(2)
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        libs = threads._blas_limit._blas().lib_controllers
        counts = []
        for lib in libs:
            monkeypatch.setattr(lib, "set_num_threads", lambda n, set_=lib.set_num_threads: counts.append(n) or set_(n))
        net.gradient(x, t)  # a dozen parallel calls, layer by layer
        assert counts == [1] * len(libs) + before
        assert blas_threads() == before


class BlasSpy(np.ndarray):
    """An array that records the BLAS thread count of every matrix product it takes part in."""

    counts = []

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            BlasSpy.counts.append(blas_threads())
        plain = [a.view(np.ndarray) if isinstance(a, BlasSpy) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, BlasSpy) else a for a in kwargs["out"])
        return getattr(ufunc, method)(*plain, **kwargs)


@pytest.mark.parametrize("count", [1, 2])
def test_every_product_of_the_layers_runs_with_blas_at_one_thread(count):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    spy = lambda *shape: rng.standard_normal(shape).astype(np.float32).view(BlasSpy)  # noqa: E731
    xpnet.set_num_threads(count)
    BlasSpy.counts = []
    with threadpool_limits(2, user_api="blas"):  # outside xpnet's work BLAS may use 2 threads (and spin-wait)
        for layer, x in ((Affine(spy(12, 5), spy(5)), spy(3, 12)), (Affine(spy(300, 40), spy(40)), spy(200, 300)),
                         (Convolution(spy(4, 3, 3, 3), spy(4), pad=1), spy(5, 3, 6, 6))):
            out = layer.forward(x)
            layer.backward(np.ones(out.shape, np.float32).view(BlasSpy))
    assert BlasSpy.counts and all(set(counts) == {1} for counts in BlasSpy.counts), BlasSpy.counts


def test_a_parallel_call_inside_an_item_runs_serially_without_deadlock():
    xpnet.set_num_threads(2)

    def outer(k):
        return sum(threads.parallel_map(lambda j: j * k, range(4)))

    assert threads.parallel_map(outer, range(6)) == [6 * k for k in range(6)]


def test_callers_in_a_pool_of_the_users_own_all_finish():
    xpnet.set_num_threads(2)

    def caller(k):
        return threads.parallel_map(lambda j: j + k, range(16))

    with ThreadPoolExecutor(max_workers=6) as users:
        results = list(users.map(caller, range(12), timeout=60))
    assert results == [[j + k for j in range(16)] for k in range(12)]


def _work_in_child(queue):
    try:
        x = np.random.default_rng(0).standard_normal((64, 3, 12, 12)).astype(np.float32)
        conv = Convolution(np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32), pad=1)
        out = conv.forward(x)
        queue.put((threads.parallel_map(lambda k: k + 1, range(6)), float(out.sum())))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put(repr(exc))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_computes_in_parallel_while_the_parent_pool_is_busy():
    xpnet.set_num_threads(2)
    threads.parallel_map(lambda k: k, range(4))  # the parent's pool exists
    release = threading.Event()
    busy = threading.Thread(target=threads.parallel_map, args=(lambda k: release.wait(30), range(4)))
    busy.start()  # the parent's threads and locks are taken while it forks
    try:
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns on fork with threads
            child = context.Process(target=_work_in_child, args=(queue,))
            child.start()
        child.join(timeout=60)
        assert child.exitcode == 0, "the child hung or crashed"
        result = queue.get(timeout=5)
        assert not isinstance(result, str), result
        assert result[0] == [1, 2, 3, 4, 5, 6]
    finally:
        release.set()
        busy.join()


# --- results independent of the thread count ------------------------------------------------------


@pytest.fixture
def many_slices(monkeypatch):
    """Slices of every layer small enough that even these small tests cut the batch into many."""
    monkeypatch.setattr(util, "SERIAL_BYTES", 0)
    monkeypatch.setattr(util, "PART_BYTES", 4096)
    monkeypatch.setattr(util, "ROWS_MIN_BYTES", 256)
    monkeypatch.setitem(Convolution.col_bytes, "cpu", 8192)
    monkeypatch.setattr(Pooling, "part_bytes", 4096)


def close_across_thread_counts(a, b):
    """Equal but for float reassociation: rtol 1e-5; an element that cancels to nearly zero is compared against
    the array's scale, since it carries the rounding of the large terms it summed (differences measured: 1e-7)."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))


def run_layers(rng, batch=13):
    x = rng.standard_normal((batch, 4, 9, 8)).astype(np.float32)
    results = {}
    for name, layer in {"conv gather": Convolution(rng.standard_normal((5, 4, 3, 3)).astype(np.float32),
                                                   rng.standard_normal(5).astype(np.float32), pad=1),
                        "conv wide pad": Convolution(rng.standard_normal((5, 4, 3, 3)).astype(np.float32),
                                                     rng.standard_normal(5).astype(np.float32), pad=2),
                        "conv by filter row": Convolution(rng.standard_normal((8, 4, 3, 9)).astype(np.float32),
                                                          rng.standard_normal(8).astype(np.float32), pad=2),
                        "conv by filter row, dx scattered": Convolution(
                            rng.standard_normal((12, 4, 3, 9)).astype(np.float32),
                            rng.standard_normal(12).astype(np.float32), pad=1),
                        "conv scatter": Convolution(rng.standard_normal((9, 4, 3, 3)).astype(np.float32),
                                                    rng.standard_normal(9).astype(np.float32), stride=2, pad=1),
                        "max pool": Pooling(2, 2, stride=2), "avg pool": Pooling(3, 3, stride=2, pad=1, mode="avg"),
                        "relu": Relu(), "affine": Affine(rng.standard_normal((4 * 9 * 8, 6)).astype(np.float32),
                                                         rng.standard_normal(6).astype(np.float32)),
                        "batch norm": BatchNormalization(rng.standard_normal(4).astype(np.float32),
                                                         rng.standard_normal(4).astype(np.float32))}.items():
        out = layer.forward(x)
        dx = layer.backward(np.asarray(np.cos(np.arange(out.size)).reshape(out.shape), dtype=np.float32))
        results[name] = [np.array(a) for a in (out, dx, getattr(layer, "dW", None), getattr(layer, "db", None))
                         if a is not None]
    return results


def test_layers_give_the_same_results_at_any_thread_count(many_slices):
    by_count = {}
    for count in (1, 2, 3):
        xpnet.set_num_threads(count)
        by_count[count] = run_layers(np.random.default_rng(7))
    for count in (2, 3):
        for name, arrays in by_count[count].items():
            for got, want in zip(arrays, by_count[1][name]):
                close_across_thread_counts(got, want)


def test_softmax_with_loss_in_slices_of_rows_agrees_across_thread_counts(many_slices):
    from xpnet.layers import SoftmaxWithLoss

    rng = np.random.default_rng(5)
    x, t = (rng.standard_normal((300, 40)) * 4).astype(np.float32), rng.integers(0, 40, 300)
    results = {}
    for count in (1, 2, 3):
        xpnet.set_num_threads(count)
        layer = SoftmaxWithLoss()
        results[count] = (float(layer.forward(x, t)), layer.backward(2.0))
    for count in (2, 3):
        assert results[count][0] == pytest.approx(results[1][0], rel=1e-6)
        close_across_thread_counts(results[count][1], results[1][1])
    assert results[1][1].dtype == np.float32
    log_y = x - x.max(axis=1, keepdims=True)
    log_y = log_y - np.log(np.exp(log_y).sum(axis=1, keepdims=True))
    assert results[3][0] == pytest.approx(-log_y[np.arange(300), t].mean(), rel=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_a_batch_smaller_than_the_thread_count_gives_the_same_results(many_slices, batch):
    by_count = {}
    for count in (1, 3):
        xpnet.set_num_threads(count)
        by_count[count] = run_layers(np.random.default_rng(7), batch)
    for name, arrays in by_count[3].items():
        for got, want in zip(arrays, by_count[1][name]):
            close_across_thread_counts(got, want)


def test_a_batch_smaller_than_the_thread_count_is_cut_into_runs_of_rows_worth_a_thread():
    xpnet.set_num_threads(4)
    big = 2**23  # parts so large that only the thread count cuts
    assert util.row_parts(np, 1, 28, 2**17, big) == [(slice(0, 1), k, 4) for k in range(4)]
    assert util.row_parts(np, 2, 28, 2**17, big) == [(slice(i, i + 1), k, 2) for i in range(2) for k in range(2)]
    assert util.row_parts(np, 8, 28, 2**17, big) == [(part, 0, 1) for part in threads.split(8, 4)]  # whole images
    # 3.5 runs of ROWS_MIN_BYTES: three threads, not four
    assert util.row_parts(np, 1, 28, util.ROWS_MIN_BYTES // 8, big) == [(slice(0, 1), k, 3) for k in range(3)]
    assert util.row_parts(np, 1, 28, 2**12, big) == [(slice(0, 1), 0, 1)]  # too little to wake a thread for
    assert [util.rows_of(28, k, 4) for k in range(4)] == [slice(0, 7), slice(7, 14), slice(14, 21), slice(21, 28)]
    assert util.rows_of(3, 3, 4) == slice(3, 3)  # fewer rows than runs: the last runs are empty


def test_an_image_larger_than_a_part_is_cut_into_rows_whatever_the_batch():
    xpnet.set_num_threads(2)
    items = util.row_parts(np, 4, 100, 2**15, part_bytes=2**20)  # 3.2 MB of columns per image
    assert items == [(slice(i, i + 1), k, 4) for i in range(4) for k in range(4)]


def test_one_large_image_is_worked_on_by_every_thread(monkeypatch):
    xpnet.set_num_threads(2)
    sizes = []
    parallel_map = threads.parallel_map

    def counting(fn, items, workers=None):
        items = list(items)
        sizes.append(min(len(items), workers or len(items)))
        return parallel_map(fn, items, workers)

    monkeypatch.setattr(threads, "parallel_map", counting)
    rng = np.random.default_rng(0)
    conv = Convolution(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), np.zeros(16, np.float32), pad=1)
    x = rng.standard_normal((1, 16, 256, 256)).astype(np.float32)  # 4 MiB: a ReLU over it is worth two threads
    out = conv.forward(x)
    conv.backward(np.ones(out.shape, np.float32))
    Pooling(2, 2).forward(out)
    Relu().forward(out)
    assert len(sizes) == 4 and min(sizes) >= 2, sizes


def test_map_elements_cuts_the_flat_elements_and_falls_back_for_other_layouts(monkeypatch):
    monkeypatch.setattr(util, "PART_BYTES", 4096)
    monkeypatch.setattr(util, "SERIAL_BYTES", 0)
    xpnet.set_num_threads(3)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 3, 50, 40)).astype(np.float32), rng.standard_normal((1, 3, 50, 40)).astype(np.float32)
    out = util.map_elements(lambda out, a, b: np.multiply(a, b, out=out), np.empty_like(a), a, b)
    np.testing.assert_array_equal(out, a * b)
    strided = a.transpose(0, 2, 3, 1)  # not C-contiguous: cut over the batch instead
    out = util.map_elements(lambda out, a: np.negative(a, out=out), np.empty_like(strided), strided)
    np.testing.assert_array_equal(out, -strided)


def network_gradients(name, count, x, t):
    xpnet.set_num_threads(count)
    xpnet.seed(3)  # the same weights and dropout masks every time
    net = getattr(xpnet.nets, name)()
    return {k: v.copy() for k, v in net.gradient(x, t).items()}


@pytest.mark.parametrize("name", ["SimpleConvNet", "DeepConvNet"])
def test_network_gradients_agree_across_thread_counts_and_repeat_exactly_at_one(name):
    import xpnet.nets  # noqa: F401

    rng = np.random.default_rng(0)
    x, t = rng.random((60, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 60)
    one = network_gradients(name, 1, x, t)
    for count in (2, 3):
        first, again = network_gradients(name, count, x, t), network_gradients(name, count, x, t)
        for key in one:
            np.testing.assert_array_equal(first[key], again[key], err_msg=f"{key}: not deterministic at {count}")
            close_across_thread_counts(first[key], one[key])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_optimizer_updates_in_slices_equal_the_update_of_the_whole(name, monkeypatch):
    rng = np.random.default_rng(1)
    start = rng.standard_normal((300, 70)).astype(np.float32)
    grads = [rng.standard_normal(start.shape).astype(np.float32) for _ in range(3)]
    results = []
    for count, serial_bytes in ((1, 2**40), (3, 0)):  # the whole array at once, then many slices on 3 threads
        monkeypatch.setattr(util, "SERIAL_BYTES", serial_bytes)
        monkeypatch.setattr(util, "PART_BYTES", 4096)
        xpnet.set_num_threads(count)
        params, optimizer = {"W": start.copy()}, get_optimizer(name, lr=0.1)
        for g in grads:
            optimizer.update(params, {"W": g})
        results.append(params["W"])
    np.testing.assert_array_equal(results[0], results[1])  # elementwise: no reassociation at all


def test_work_takes_only_as_many_threads_as_it_is_worth(monkeypatch):
    xpnet.set_num_threads(4)
    mib = 2**20 // 128  # bytes per example of a MiB over a batch of 128
    assert util.batch_parts(np, 128, 3 * mib) == [slice(0, 128)]  # 3 MiB of operands: one part, one thread
    assert len(util.batch_parts(np, 128, 16 * mib)) == 4  # 16 MiB: a part of PART_BYTES (4 MiB) per thread
    assert len(util.batch_parts(np, 128, 40 * mib)) == 12  # 40 MiB: parts of at most 4 MiB, 3 a thread
    monkeypatch.setattr(util, "PART_BYTES", 2**20)
    small = util.batch_parts(np, 128, 3 * mib)  # parts of at most PART_BYTES, still on one thread
    assert small.workers == 1 and len(small) == 3
    assert util.batch_parts(np, 128, 8 * mib).workers == 4  # 8 MiB: every thread, 2 MiB each
    assert util.batch_parts(np, 128, 5 * mib).workers == 2
    products = 2**24 // 128  # 16 MFLOP over the batch
    assert util.batch_parts(np, 128, 400, flops_per_example=products).workers == 1  # products: 16 MFLOP a thread
    assert util.batch_parts(np, 128, 400, flops_per_example=3 * products).workers == 3
    callers = util.map_parts(np, lambda part: threading.get_ident(), small)
    assert set(callers) == {threading.get_ident()}  # the caller, alone


def test_a_small_optimizer_update_wakes_no_thread(monkeypatch):
    xpnet.set_num_threads(2)
    calls = []
    monkeypatch.setattr(threads, "parallel_map", lambda fn, items, workers=None: calls.append(items))
    params = {"W": np.ones((100, 100), np.float32), "b": np.zeros(100, np.float32)}
    get_optimizer("adam", lr=0.1).update(params, {key: np.ones_like(value) for key, value in params.items()})
    assert calls == [] and np.all(params["W"] < 1)


def test_an_optimizer_updates_every_parameter_in_one_parallel_call(monkeypatch):
    monkeypatch.setattr(util, "SERIAL_BYTES", 0)
    xpnet.set_num_threads(2)
    sizes = []
    parallel_map = threads.parallel_map
    monkeypatch.setattr(threads, "parallel_map",
                        lambda fn, items, workers=None: sizes.append(len(items)) or parallel_map(fn, items, workers))
    rng = np.random.default_rng(2)
    params = {"W1": rng.standard_normal((400, 300)).astype(np.float32), "b1": np.zeros(300, np.float32),
              "W2": rng.standard_normal((300, 10)).astype(np.float32).T}  # a transposed view: updated whole
    grads = {key: np.ones_like(value) for key, value in params.items()}
    before = {key: value.copy() for key, value in params.items()}
    get_optimizer("adam", lr=0.1).update(params, grads)
    assert len(sizes) == 1 and sizes[0] >= 4  # W1 in slices for both threads, b1, W2
    for key in params:
        assert np.all(params[key] < before[key])  # every parameter moved against its gradient
