"""The book's chapter 5 to 8 scripts, in its style (tests/book_scripts), run unchanged through `xpnet book run`.

Each script runs as a subprocess, on every usable device (``XPNET_DEVICE``),
in a copy of its chapter folder, on real data through the documented
offline route: ``xpnet book run --mnist-t10k --data-dir ../shared/data/mnist``
(MNIST's 10,000 checksum-verified test images, split 8,000 for training and
2,000 for testing; the tests skip, saying why, where that folder is absent),
with an empty ``XPNET_DATA`` and no display, so that ``plt.show()`` writes PNG
files. The tests check what the scripts print and write.
"""

import os
import pickle
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from xpnet import backend
from xpnet.safe_pickle import load_params

pytestmark = pytest.mark.slow  # every test runs book-style scripts as processes: CI runs them with -m slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "book_scripts"
PNG = b"\x89PNG\r\n\x1a\n"
SEED = int(os.environ.get("XPNET_TEST_BOOK_SEED", "0"))  # every run seeded, so that a failure repeats; any seed passes


SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"  # the MNIST test files, on every developer machine and CI
HAVE_MNIST = all((SHARED_MNIST / name).exists() for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


@pytest.fixture(scope="session")
def book_data(tmp_path_factory):
    """An empty folder for XPNET_DATA: the runs read MNIST from SHARED_MNIST and write nothing to the user's cache."""
    return tmp_path_factory.mktemp("xpnet-data")


def book_script(chapter, script, weights=None):
    """Marks a test as checking the run of ``chapter/script`` (``weights``: the book pickle it loads, made first)."""
    def mark(test):
        test.book_script = (chapter, script, weights)
        return test

    return mark


def prepare(folder, chapter, weights):
    """A copy of tests/book_scripts/<chapter> in ``folder``, beside ../dataset/lena_gray.png and the weights."""
    shutil.copytree(SCRIPTS / chapter, folder / chapter)
    (folder / "dataset").mkdir()
    from PIL import Image

    ramp = np.add.outer(np.arange(40), np.arange(36)) * 3  # a 40x36 gray picture for apply_filter.py
    Image.fromarray(ramp.astype(np.uint8), mode="L").save(folder / "dataset" / "lena_gray.png")
    if weights is not None:
        shapes = SIMPLE_CONVNET if chapter == "ch07" else DEEP_CONVNET
        book_pickle(folder / chapter / weights, random_weights(shapes, np.random.default_rng(0)))
    return folder / chapter


def run_script(folder, script, book_data, device, *args):
    """`xpnet book run --seed SEED --mnist-t10k --data-dir SHARED_MNIST` on ``script`` from ``folder``, as a user
    would type it, without a display."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env.update(PYTHONPATH=str(ROOT), XPNET_DATA=str(book_data), XPNET_DEVICE=device,
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")  # small runs, side by side
    return subprocess.run([sys.executable, "-m", "xpnet", "book", "run", "--seed", str(SEED), "--mnist-t10k",
                           "--data-dir", str(SHARED_MNIST), script, *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def started_runs(request, book_data, tmp_path_factory):
    """Every selected script run, started at once on as many workers as there are cores: (device, script) -> future."""
    devices = {"numpy": "cpu", "cupy": "gpu:0"}
    wanted = set()
    for item in request.session.items:
        spec = getattr(getattr(item, "function", None), "book_script", None)
        xp = getattr(getattr(item, "callspec", None), "params", {}).get("xp")
        if spec is not None and xp in devices and (xp == "numpy" or backend.gpu_available()) and HAVE_MNIST:
            wanted.add((devices[xp], *spec))
    pool = ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0))))
    runs = {}
    for device, chapter, script, weights in sorted(wanted):
        folder = prepare(tmp_path_factory.mktemp(f"{device.replace(':', '')}-{chapter}"), chapter, weights)
        runs[(device, chapter, script)] = (pool.submit(run_script, folder, script, book_data, device), folder)
    yield runs
    pool.shutdown(wait=True)


@pytest.fixture
def book_run(request, device, started_runs):
    """The run of the test's script on its device: (result, the chapter folder it ran in)."""
    chapter, script, _ = request.function.book_script
    if not HAVE_MNIST:
        pytest.skip(f"no MNIST test files in {SHARED_MNIST} (the project's ../shared/data/mnist), which the "
                    f"book's scripts read through --mnist-t10k")
    future, folder = started_runs[(device, chapter, script)]
    result = future.result()
    assert result.returncode == 0, result.stdout + result.stderr
    return result, folder


def numbers_after(label, text):
    """Every number printed after ``label`` (e.g. 'W1:' or 'test acc:')."""
    return [float(v) for v in re.findall(re.escape(label) + r"\s*([-+0-9.e]+)", text)]


def figures(folder, script):
    written = sorted(folder.glob(f"{Path(script).stem}-figure*.png"))
    assert all(path.read_bytes()[:8] == PNG for path in written)
    return len(written)


def book_pickle(path, params):
    """Parameters pickled as the book's 2016 files are: protocol 3, NumPy 1.x's module names."""
    data = pickle.dumps({k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, protocol=3)
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def random_weights(shapes, rng):
    return {name: 0.3 * rng.standard_normal(shape) for name, shape in shapes.items()}


SIMPLE_CONVNET = {"W1": (6, 1, 5, 5), "b1": (6,), "W2": (864, 20), "b2": (20,), "W3": (20, 10), "b3": (10,)}
DEEP_CONVNET = {**{f"W{i}": (f, c, 3, 3) for i, (f, c) in enumerate([(4, 1), (4, 4), (4, 4), (4, 4), (8, 4), (8, 8)], 1)},
                **{f"b{i}": (f,) for i, f in enumerate([4, 4, 4, 4, 8, 8], 1)},
                "W7": (128, 20), "b7": (20,), "W8": (20, 10), "b8": (10,)}


# --- chapter 5 ------------------------------------------------------------------------------------


@book_script("ch05", "gradient_check.py")
def test_ch05_gradient_check(book_run):
    out = book_run[0].stdout
    diffs = [numbers_after(f"{key}:", out)[0] for key in ("W1", "b1", "W2", "b2")]
    assert max(diffs) < 1e-7, out  # the script's own float64 arrays: float64 layers


@book_script("ch05", "train_neuralnet.py")
def test_ch05_train_neuralnet(book_run):
    out = book_run[0].stdout
    last_train, last_test = (float(v) for v in out.strip().splitlines()[-1].split())
    # 200 steps on 1,000 real training images: about 0.88 on them and 0.78 to 0.83 on the 2,000 held out
    assert len(out.strip().splitlines()) == 20 and last_train > 0.85 and last_test > 0.7, out


# --- chapter 6 ------------------------------------------------------------------------------------


@book_script("ch06", "optimizer_compare_naive.py")
def test_ch06_optimizer_compare_naive_with_floats_as_parameters(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    for name in ("SGD", "Momentum", "AdaGrad", "Adam"):
        x, y = (float(v) for v in re.search(rf"{name}: \(([-0-9.e]+), ([-0-9.e]+)\)", out).groups())
        assert abs(x) < 7.0 and abs(y) < 2.0, (name, x, y)  # every optimizer moved the floats towards (0, 0)
    assert figures(folder, "optimizer_compare_naive.py") == 1


@book_script("ch06", "optimizer_compare_mnist.py")
def test_ch06_optimizer_compare_mnist_with_np_from_a_star_import(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    assert out.count("iteration:") == 4
    first = {name: numbers_after(f"{name}:", out)[0] for name in ("SGD", "Momentum", "AdaGrad", "Adam")}
    last = {name: numbers_after(f"{name}:", out)[-1] for name in first}
    assert all(last[name] < first[name] for name in first), out  # each optimizer lowered the loss
    assert max(last["Momentum"], last["AdaGrad"], last["Adam"]) < 0.8 * last["SGD"], out  # figure 6-9: SGD slowest
    assert figures(folder, "optimizer_compare_mnist.py") == 1


@book_script("ch06", "weight_init_compare.py")
def test_ch06_weight_init_compare_with_smooth_curve(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    assert numbers_after("He:", out)[0] < numbers_after("std=0.01:", out)[0], out
    assert figures(folder, "weight_init_compare.py") == 1


@book_script("ch06", "batch_norm_gradient_check.py")
def test_ch06_batch_norm_gradient_check(book_run):
    out = book_run[0].stdout
    keys = [f"{kind}{i}" for i in (1, 2) for kind in ("W", "b", "gamma", "beta")] + ["W3", "b3"]
    diffs = [numbers_after(f"{key}:", out)[0] for key in keys]
    assert max(diffs) < 1e-3, out  # float32 backpropagation against central differences taken in float64


@book_script("ch06", "batch_norm_test.py")
def test_ch06_batch_norm_test(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    assert out.count("epoch:") == 6 and figures(folder, "batch_norm_test.py") == 1


@book_script("ch06", "hyperparameter_optimization.py")
def test_ch06_hyperparameter_optimization_with_shuffle_dataset_and_the_trainer(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    accuracies = numbers_after("\nval acc:", "\n" + out)  # one line per trial, then the three best again
    assert len(accuracies) == 3 and "Best-3" in out and max(accuracies) > 0.3, out
    assert figures(folder, "hyperparameter_optimization.py") == 1


@book_script("ch06", "overfit_dropout.py")
def test_ch06_overfit_dropout(book_run):
    result, folder = book_run
    assert "epochs recorded: 5 5" in result.stdout
    assert "Final Test Accuracy" in result.stdout + result.stderr
    assert figures(folder, "overfit_dropout.py") == 1


@book_script("ch06", "overfit_weight_decay.py")
def test_ch06_overfit_weight_decay(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    accuracies = numbers_after("train acc:", out)
    assert len(accuracies) == 15 and accuracies[-1] >= accuracies[0] + 0.2, out  # it learns, slowly under decay
    assert figures(folder, "overfit_weight_decay.py") == 1


# --- chapter 7 ------------------------------------------------------------------------------------


@book_script("ch07", "gradient_check.py")
def test_ch07_gradient_check_with_a_column_of_labels(book_run):
    out = book_run[0].stdout
    diffs = [numbers_after(f"{key} ", out)[0] for key in ("W1", "b1", "W2", "b2", "W3", "b3")]
    # usually below 1e-10, but now and then a step of 1e-4 moves a maximum of the pooling or crosses a ReLU's
    # kink, in the book's code as here (up to 2e-3 in 40 runs): the numerical gradient, not backpropagation
    assert max(diffs) < 1e-2, out


@book_script("ch07", "train_convnet.py")
def test_ch07_train_convnet_saves_a_pickle_the_safe_loader_reads(book_run):
    result, folder = book_run
    assert "Saved Network Parameters!" in result.stdout
    final = numbers_after("test acc:", result.stdout + result.stderr)[-1]
    assert final > 0.5, result.stdout + result.stderr
    params = load_params(folder / "params.pkl")
    assert {k: v.shape for k, v in params.items()} == SIMPLE_CONVNET
    assert figures(folder, "train_convnet.py") == 1


@book_script("ch07", "visualize_filter.py", weights="params.pkl")
def test_ch07_visualize_filter(book_run):
    assert figures(book_run[1], "visualize_filter.py") == 2  # before and after loading the weights


@book_script("ch07", "apply_filter.py", weights="params.pkl")
def test_ch07_apply_filter_with_a_bias_of_zero(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    assert out.count("output (36, 32) float64") == 4, out  # the 40x36 picture, 5x5 filters, the weights' float64
    assert figures(folder, "apply_filter.py") == 1


# --- chapter 8 ------------------------------------------------------------------------------------


@book_script("ch08", "train_deepnet.py")
def test_ch08_train_deepnet(book_run):
    result, folder = book_run
    assert "Saved Network Parameters!" in result.stdout and "Final Test Accuracy" in result.stdout + result.stderr
    assert {k: v.shape for k, v in load_params(folder / "deep_convnet_params.pkl").items()} == DEEP_CONVNET


@book_script("ch08", "half_float_network.py", weights="deep_convnet_params.pkl")
def test_ch08_half_float_network(book_run):
    out = book_run[0].stdout
    full, half = (float(line) for line in out.splitlines() if re.fullmatch(r"[0-9.]+", line))
    assert abs(full - half) <= 0.02, out


@book_script("ch08", "misclassified_mnist.py", weights="deep_convnet_params.pkl")
def test_ch08_misclassified_mnist(book_run):
    (result, folder), out = book_run, book_run[0].stdout
    assert numbers_after("test accuracy:", out) and "misclassified result" in out
    assert figures(folder, "misclassified_mnist.py") == 1


# --- safety ---------------------------------------------------------------------------------------


def test_a_hostile_pickle_loaded_by_a_books_script_is_refused(book_data, tmp_path):
    folder = prepare(tmp_path, "ch07", None)
    marker = tmp_path / "ran"
    hostile = b"cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."  # os.system("touch ..."), protocol 0
    (folder / "params.pkl").write_bytes(hostile)
    result = run_script(folder, "visualize_filter.py", book_data, "cpu")
    assert result.returncode == 1
    assert "params.pkl: refused the global posix.system" in result.stderr
    assert not marker.exists()
