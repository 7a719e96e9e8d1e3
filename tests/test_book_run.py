"""`xpnet book run` (a script as __main__, its argv and folder, the book's import names, all put back after)
and `xpnet convert` (the book's pickled weights as an .npz)."""

import os
import pickle
import random
import sys
import textwrap

import numpy as np
import pytest

from xpnet.checkpoint import load_params
from xpnet.tools.cli import main
from xpnet.tools.book import SHIM


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def script(tmp_path):
    """A script beside a module of its own, printing what the book's scripts rely on."""
    write(tmp_path / "chapter" / "neighbour.py", "GREETING = 'a module beside the script'\n")
    return write(tmp_path / "chapter" / "show_setup.py", """\
        import os, sys
        import common.layers
        from neighbour import GREETING
        print("name", __name__)
        print("argv", sys.argv[1:])
        print("layers from", os.path.dirname(common.layers.__file__))
        print("neighbour", GREETING)
        print("device", os.environ["XPNET_DEVICE"])
        """)


def test_a_script_runs_as_main_with_its_arguments_its_folder_and_the_books_packages(script, capsys):
    path_before, argv_before = list(sys.path), list(sys.argv)
    assert main(["book", "run", str(script), "--epochs", "3", "-v", "data.txt"]) == 0
    out = capsys.readouterr().out
    assert "name __main__" in out
    assert "argv ['--epochs', '3', '-v', 'data.txt']" in out
    assert f"layers from {SHIM / 'common'}" in out
    assert "neighbour a module beside the script" in out
    assert "device cpu" in out
    assert sys.path == path_before and sys.argv == argv_before  # put back, and the book's names forgotten
    assert not {"common", "common.layers", "neighbour"} & set(sys.modules)


def test_options_of_the_command_come_before_the_script(script, tmp_path, capsys):
    assert main(["book", "run", "--out", str(tmp_path / "figures"), str(script), "--out", "theirs"]) == 0
    assert "argv ['--out', 'theirs']" in capsys.readouterr().out


def test_the_scripts_exit_status_is_the_commands(tmp_path):
    assert main(["book", "run", str(write(tmp_path / "stop.py", "import sys\nsys.exit(3)\n"))]) == 3
    assert main(["book", "run", str(write(tmp_path / "done.py", "import sys\nsys.exit()\n"))]) == 0
    assert main(["book", "run", str(write(tmp_path / "said.py", "import sys\nsys.exit('no data')\n"))]) == 1


def test_an_error_in_the_script_prints_its_traceback_and_fails(tmp_path, capsys):
    assert main(["book", "run", str(write(tmp_path / "broken.py", "1 / 0\n"))]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "broken.py" in err


def test_a_missing_script_is_one_line(tmp_path, capsys):
    assert main(["book", "run", str(tmp_path / "nowhere.py")]) == 1
    assert capsys.readouterr().err.strip() == f"xpnet book: error: no script {tmp_path / 'nowhere.py'}"


def test_missing_mnist_is_one_line_that_names_the_offline_substitute(tmp_path, monkeypatch, capsys):
    from xpnet.datasets import mnist

    def offline(url, dest):
        raise OSError("Name or service not known")

    monkeypatch.setattr(mnist, "_fetch", offline)
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "data"))
    script = write(tmp_path / "ch05" / "load.py", "from dataset.mnist import load_mnist\nload_mnist()\n")
    assert main(["book", "run", str(script)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("xpnet book run: ") and "missing train-images-idx3-ubyte.gz" in line
    assert line.endswith("offline, --mnist-t10k uses MNIST's 10,000 test images instead")


def test_show_writes_each_figure_to_a_file_and_closes_it(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    script = write(tmp_path / "plots.py", """\
        import matplotlib.pyplot as plt
        plt.plot([1, 2, 3]); plt.show()
        plt.figure(); plt.plot([3, 1]); plt.figure(); plt.plot([0, 1]); plt.show()
        print("open after show:", len(plt.get_fignums()))
        """)
    assert main(["book", "run", "--out", str(tmp_path / "out"), str(script)]) == 0
    out, err = capsys.readouterr()
    assert "open after show: 0" in out
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["plots-figure1.png", "plots-figure2.png", "plots-figure3.png"]
    assert all((tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG" for name in written)
    assert f"figure written to {tmp_path / 'out' / 'plots-figure3.png'}" in err


def test_pickle_load_in_a_script_is_the_safe_one_and_trust_pickles_lets_the_file_decide(tmp_path, capsys):
    from collections import OrderedDict

    (tmp_path / "ordered.pkl").write_bytes(pickle.dumps(OrderedDict(W=np.ones(2))))
    script = write(tmp_path / "load.py", """\
        import pickle, sys
        with open(sys.argv[1], 'rb') as f:
            print(type(pickle.load(f)).__name__)
        """)
    assert main(["book", "run", str(script), str(tmp_path / "ordered.pkl")]) == 1
    assert "refused the global collections.OrderedDict" in capsys.readouterr().err
    assert main(["book", "run", "--trust-pickles", str(script), str(tmp_path / "ordered.pkl")]) == 0
    assert "OrderedDict" in capsys.readouterr().out
    assert pickle.load.__module__ in ("_pickle", "pickle")  # put back


def test_the_t10k_option_reaches_load_mnist(tmp_path, capsys):
    script = write(tmp_path / "load.py", "from dataset.mnist import load_mnist\nload_mnist()\n")
    assert main(["book", "run", "--mnist-t10k", "--data-dir", str(tmp_path), str(script)]) == 1
    err = capsys.readouterr().err
    assert f"XPNET_BOOK_MNIST=t10k:{tmp_path}: in place of MNIST" in err and "is missing" in err
    assert "XPNET_BOOK_MNIST" not in os.environ


def test_a_seed_repeats_the_scripts_draws_and_the_networks_weights_and_is_put_back_after(tmp_path, capsys):
    script = write(tmp_path / "draws.py", """\
        import random
        import numpy as np
        from common.multi_layer_net import MultiLayerNet
        net = MultiLayerNet(input_size=4, hidden_size_list=[3], output_size=2)
        print(np.random.choice(1000, 3), random.random(), net.params["W1"][0, 0])
        """)
    before = np.random.get_state()[1].copy(), random.getstate()

    def draws(*options):
        assert main(["book", "run", *options, str(script)]) == 0
        return capsys.readouterr().out

    assert draws("--seed", "7") == draws("--seed", "7")
    assert draws("--seed", "7") != draws("--seed", "8")
    assert (np.random.get_state()[1] == before[0]).all() and random.getstate() == before[1]
    assert draws() != draws()  # unseeded, as the book's scripts are


def test_blas_stays_at_one_thread_for_the_script_and_gets_its_count_back_after(tmp_path, capsys):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl sets BLAS's thread count")
    script = write(tmp_path / "blas.py", """\
        from threadpoolctl import threadpool_info
        print("blas threads", sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}))
        """)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        if not before or before == [1]:
            pytest.skip("NumPy's BLAS is not one threadpoolctl can see, or it would not take two threads")
        assert main(["book", "run", str(script)]) == 0
        assert "blas threads [1]" in capsys.readouterr().out
        after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


def test_a_seed_numpy_cannot_take_is_refused_in_one_line(script, capsys):
    assert main(["book", "run", "--seed", str(2**32), str(script)]) == 2
    assert "--seed: must be below 2**32" in capsys.readouterr().err


def test_asking_for_a_gpu_that_is_not_there_is_one_line(script, capsys):
    from xpnet import backend

    if backend.gpu_available():
        pytest.skip("a GPU is usable here")
    assert main(["book", "run", "--device", "gpu", str(script)]) == 1
    assert "the GPU was asked for but cannot be used" in capsys.readouterr().err


# --- xpnet convert -------------------------------------------------------------------------------


def book_deep_convnet_weights(rng):
    shapes = {"W1": (16, 1, 3, 3), "W2": (16, 16, 3, 3), "W3": (32, 16, 3, 3), "W4": (32, 32, 3, 3),
              "W5": (64, 32, 3, 3), "W6": (64, 64, 3, 3), "W7": (1024, 50), "W8": (50, 10)}
    weights = {}
    for name, shape in shapes.items():
        weights[name] = rng.standard_normal(shape)
        weights["b" + name[1:]] = rng.standard_normal(shape[0] if len(shape) == 4 else shape[1])  # one per output
    return weights


def test_convert_writes_the_books_deep_convnet_weights_for_xpnets_dropout(tmp_path, rng, capsys):
    weights = book_deep_convnet_weights(rng)
    (tmp_path / "deep_convnet_params.pkl").write_bytes(pickle.dumps(weights, protocol=4))
    assert main(["convert", str(tmp_path / "deep_convnet_params.pkl"), str(tmp_path / "deep.npz")]) == 0
    assert "the book's DeepConvNet: W8 scaled by 0.25 and b8 by 0.5" in capsys.readouterr().out
    converted = load_params(tmp_path / "deep.npz")
    np.testing.assert_array_equal(converted["W8"], 0.25 * weights["W8"])
    np.testing.assert_array_equal(converted["b8"], 0.5 * weights["b8"])
    np.testing.assert_array_equal(converted["W7"], weights["W7"])
    assert converted["W1"].dtype == np.float64

    from xpnet.nets import DeepConvNet

    by_npz, by_pickle = DeepConvNet(), DeepConvNet()
    by_npz.load_params(tmp_path / "deep.npz")
    by_pickle.load_params(tmp_path / "deep_convnet_params.pkl")
    x = rng.random((2, 1, 28, 28))
    np.testing.assert_array_equal(by_npz.predict(x), by_pickle.predict(x))


def test_convert_copies_other_weights_as_they_are_and_model_none_forces_it(tmp_path, rng, capsys):
    simple = {"W1": rng.standard_normal((30, 1, 5, 5)), "b1": np.zeros(30)}
    (tmp_path / "params.pkl").write_bytes(pickle.dumps(simple))
    assert main(["convert", str(tmp_path / "params.pkl"), str(tmp_path / "params.npz")]) == 0
    assert "copied as they are" in capsys.readouterr().out
    np.testing.assert_array_equal(load_params(tmp_path / "params.npz")["W1"], simple["W1"])
    (tmp_path / "deep.pkl").write_bytes(pickle.dumps(book_deep_convnet_weights(rng)))
    assert main(["convert", "--model", "none", str(tmp_path / "deep.pkl"), str(tmp_path / "deep.npz")]) == 0
    assert "copied as they are" in capsys.readouterr().out


def test_convert_refuses_a_hostile_pickle_in_one_line(tmp_path, capsys):
    (tmp_path / "params.pkl").write_bytes(b"cposix\nsystem\n(Vtrue\ntR.")
    assert main(["convert", str(tmp_path / "params.pkl"), str(tmp_path / "params.npz")]) == 1
    assert "xpnet convert: error:" in capsys.readouterr().err and not (tmp_path / "params.npz").exists()

