"""The command line: training runs, checkpoints, plots, info, and one-line errors."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import backend
from xpnet.optimizer import OPTIMIZERS
from xpnet.recipes import DATASETS, MODELS
from xpnet.tools import args
from xpnet.tools.cli import build_parser, main
from xpnet.tools.cli.train import default_lr

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "xpnet", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_the_default_training_run_reaches_97_percent_on_the_embedded_digits(capsys):
    assert main(["train", "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    accuracy = float(line.split()[2])
    assert accuracy >= 0.97, line


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason=f"no MNIST test files in {SHARED_MNIST}")
def test_training_on_8000_real_mnist_images_reaches_96_percent_on_the_other_2000(capsys):
    assert main(["train", "--dataset", "mnist-t10k", "--data-dir", str(SHARED_MNIST), "--epochs", "4", "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(line.split()[2]) >= 0.96, line


def test_save_resume_and_plot(tmp_path, capsys):
    ckpt, png = tmp_path / "run.npz", tmp_path / "curves.png"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--save", str(ckpt), "--quiet"]) == 0
    assert ckpt.exists()
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    assert main(["train", "--model", "mlp", "--epochs", "3", "--resume", str(ckpt), "--plot", str(png), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "after 3 epochs" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_trains_with_the_checkpoints_learning_rate_unless_lr_is_given(tmp_path, capsys):
    ckpt = tmp_path / "run.npz"
    assert main(["train", "--model", "mlp", "--epochs", "1", "--lr", "0.003", "--save", str(ckpt), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "mlp", "--epochs", "2", "--resume", str(ckpt)]) == 0
    assert "adam lr=0.003," in capsys.readouterr().out
    assert main(["train", "--model", "mlp", "--epochs", "3", "--resume", str(ckpt), "--lr", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "adam lr=0.05," in out and "after 3 epochs" in out


def test_resume_from_a_checkpoint_without_optimizer_state_uses_the_default_learning_rate(tmp_path, capsys):
    from xpnet.checkpoint import save_checkpoint
    from xpnet.recipes import build_network, load_dataset

    (x, _), _ = load_dataset("digits")
    ckpt = tmp_path / "weights.npz"
    save_checkpoint(ckpt, build_network("mlp", x.shape[1:]).state(), epoch=1)
    assert main(["train", "--model", "mlp", "--epochs", "2", "--resume", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "adam lr=0.001," in out and "after 2 epochs" in out


def test_resuming_with_another_model_names_the_mismatch(tmp_path):
    ckpt = tmp_path / "mlp.npz"
    assert main(["train", "--model", "mlp", "--epochs", "1", "--save", str(ckpt), "--quiet"]) == 0
    result = run_cli("train", "--model", "simple_convnet", "--resume", str(ckpt), "--quiet")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "the checkpoint holds a mlp" in result.stderr and "--model mlp" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0"], "--epochs: must be a positive integer, got 0"),
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--lr", "-1"], "--lr: must be positive"),
    (["train", "--device", "tpu"], "argument --device: must be one of cpu, gpu, gpu:N, auto, got 'tpu'"),
    (["train", "--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    (["train", "--epochs", "abc"], "argument --epochs: must be a positive integer, got 'abc'"),
    (["train", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["train", "--resume", "/nonexistent/ckpt.npz", "--quiet"], "/nonexistent/ckpt.npz"),
    (["bench", "compare"], "invalid choice"),
])
def test_mistakes_get_one_line_and_a_nonzero_exit(args, message, capsys):
    assert main(args) != 0  # main catches what it reports: anything else would raise here
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_asking_for_a_gpu_without_one_is_one_clear_line():
    import xpnet

    if xpnet.gpu_available():
        pytest.skip("a GPU is usable here")
    result = run_cli("train", "--device", "gpu", "--epochs", "1")
    assert result.returncode == 1
    assert "the GPU was asked for but cannot be used" in result.stderr and "--device cpu" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_is_one_line_that_names_the_files_and_their_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path))  # an empty cache, never ~/.cache
    code = ("import sys\n"
            "from xpnet.datasets import mnist\n"
            "def offline(url, dest):\n"
            "    raise OSError('Name or service not known')  # what urlopen raises on a machine without a network\n"
            "mnist._fetch = offline\n"
            "from xpnet.tools.cli import main\n"
            "sys.exit(main(['train', '--dataset', 'mnist', '--quiet']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("xpnet train: error: mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                           "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in " + str(tmp_path / "mnist"))
    assert "Name or service not known" in line and "XPNET_DATA" in line and "connect to the internet" in line


def test_info_names_the_versions_and_why_the_gpu_is_unusable():
    result = run_cli("info")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert f"xpnet        {xpnet.__version__}" in lines
    assert f"numpy        {np.__version__}" in lines
    assert "devices      cpu" in lines
    cupy_line = next(line for line in lines if line.startswith("cupy "))
    version, reason = backend.library_versions()["cupy"], backend.gpu_unavailable_reason()
    if version:
        assert version in cupy_line
    else:
        assert cupy_line == "cupy         not available"
    if reason:
        assert f"gpu          unusable: {reason}" in lines
    else:
        assert "gpu:0" in result.stdout


def test_info_names_an_installed_cupy_when_no_gpu_is_usable(fake_cupy, capsys):
    fake_cupy(is_available=lambda: False)  # installed, but no driver or device
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ("cupy         14.0.0 (installed; no usable GPU: "
            "CuPy is installed but sees no usable CUDA device or driver)") in lines
    assert "cuda_runtime not available" in lines


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from xpnet.tools.cli import main; "
            f"sys.exit(main(['train', '--epochs', '1', '--plot', r'{tmp_path / 'x.png'}']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "pip install 'xpnet[plot]'" in result.stderr


# --- the parser tree --------------------------------------------------------------------------


def all_parsers(parser):
    """``parser`` and every subparser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


def test_every_option_of_every_command_has_help_that_shows_its_default():
    parsers = list(all_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {"xpnet train", "xpnet info", "xpnet search", "xpnet bench report",
                                         "xpnet experiment depth", "xpnet experiment conv-filters"}
    for parser in parsers:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:  # positionals, flags, --help, --version
                continue
            assert action.help, f"{parser.prog} {action.option_strings[0]} has no help"
            assert "default" in formatter._get_help_string(action), f"{parser.prog} {action.option_strings[0]}"


def test_the_choices_come_from_the_registries():
    train = next(p for p in all_parsers(build_parser()) if p.prog == "xpnet train")
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert list(choices["optimizer"]) == list(OPTIMIZERS)
    assert list(choices["model"]) == list(MODELS)
    assert list(choices["dataset"]) == list(DATASETS)


def test_the_learning_rate_defaults_to_the_optimizers_own(capsys):
    book = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.01, "adam": 0.001,
            "adamw": 0.001}
    assert {name: default_lr(name) for name in OPTIMIZERS} == book
    for optimizer in ("sgd", "adam"):
        assert main(["train", "--model", "mlp", "--epochs", "1", "--optimizer", optimizer]) == 0
        assert f"{optimizer} lr={book[optimizer]:g}," in capsys.readouterr().out


def test_device_takes_gpu_n_as_xpnet_device_does(monkeypatch, capsys):
    chosen = []
    monkeypatch.setattr(backend, "set_device", lambda name: chosen.append(name) or "cpu")
    assert main(["train", "--model", "mlp", "--epochs", "1", "--device", "GPU:1", "--quiet"]) == 0
    assert chosen == ["gpu:1"]


def test_the_progress_bar_is_drawn_only_on_a_terminal_unless_asked_for(capsys):
    assert main(["train", "--model", "mlp", "--epochs", "1"]) == 0
    assert "step/s" not in capsys.readouterr().err  # stderr is not a terminal here
    assert main(["train", "--model", "mlp", "--epochs", "1", "--progress"]) == 0
    assert "epoch 1/1" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    with subprocess.Popen([sys.executable, "-m", "xpnet", "train", "--model", "mlp", "--epochs", "3"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -1` does after one line
        err = process.stderr.read()
        status = process.wait()
    assert first.startswith("xpnet ")
    assert err == ""
    assert status == 141  # as a shell reports a process ended by SIGPIPE


def test_the_argument_checkers_name_what_they_want():
    assert args.positive_int("3") == 3 and args.non_negative_int("0") == 0 and args.ratio("0.5") == 0.5
    assert args.positive_int_list("50,100") == (50, 100) and args.weight_init_std("He") == "he"
    assert args.device(" gpu:2 ") == "gpu:2" and args.device("auto") == "auto"
    for check, text, message in [
        (args.positive_int, "0", "must be a positive integer, got 0"),
        (args.positive_int, "1.5", "must be a positive integer, got '1.5'"),
        (args.non_negative_int, "-1", "must be an integer >= 0, got -1"),
        (args.positive_float, "inf", "must be positive and finite, got inf"),
        (args.positive_float, "x", "must be a positive number, got 'x'"),
        (args.ratio, "1", "must be between 0 and 1, got 1"),
        (args.positive_int_list, "5,,6", "must be positive integers separated by commas"),
        (args.weight_init_std, "-0.1", "must be he, xavier or a positive standard deviation, got '-0.1'"),
        (args.device, "gpu:", "must be one of cpu, gpu, gpu:N, auto, got 'gpu:'"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            check(text)


# --- reliability: destinations checked first, models named, devices, info, interrupts, warnings -----------------


@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_a_missing_destination_fails_before_the_first_step_naming_the_users_path(option, tmp_path, capsys):
    target = tmp_path / "no" / "such" / "folder" / "out.npz"
    started = []
    trainer_train = xpnet.trainer.Trainer.train
    try:
        xpnet.trainer.Trainer.train = lambda self: started.append(1)
        assert main(["train", "--model", "mlp", "--epochs", "1", option, str(target), "--quiet"]) == 1
    finally:
        xpnet.trainer.Trainer.train = trainer_train
    err = capsys.readouterr().err
    assert started == [] and str(target) in err and ".tmp" not in err
    assert "No such file or directory" in err and len(err.strip().splitlines()) == 1


def test_resuming_without_the_model_says_which_model_the_checkpoint_holds(tmp_path, capsys):
    ckpt = tmp_path / "mlp.npz"
    assert main(["train", "--model", "mlp", "--epochs", "1", "--save", str(ckpt), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{ckpt}: the checkpoint holds a mlp (its MultiLayerNet), not a simple_convnet; resume with --model mlp" in err


def test_a_gpu_asked_for_with_device_is_not_told_to_set_xpnet_device(monkeypatch, fake_cupy, capsys):
    fake_cupy(is_available=lambda: False)
    monkeypatch.setenv("XPNET_DEVICE", "cpu")
    assert main(["train", "--device", "gpu", "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "the GPU was asked for but cannot be used" in err
    assert "XPNET_DEVICE=cpu" not in err and "--device cpu" in err


def test_info_says_where_the_default_device_comes_from(monkeypatch, capsys):
    monkeypatch.delenv("XPNET_DEVICE", raising=False)
    assert main(["info"]) == 0
    assert "default      cpu (XPNET_DEVICE is not set)" in capsys.readouterr().out.splitlines()
    monkeypatch.setenv("XPNET_DEVICE", "cpu")
    assert main(["info"]) == 0
    assert "default      cpu (from XPNET_DEVICE)" in capsys.readouterr().out.splitlines()


def test_info_refuses_a_bogus_xpnet_device(monkeypatch, capsys):
    monkeypatch.setenv("XPNET_DEVICE", "bogus")
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert "XPNET_DEVICE: must be one of cpu, gpu, gpu:N, auto, got 'bogus'" in err


def test_info_shows_the_cuda_runtime_cupy_reports_without_a_usable_gpu(fake_cupy, capsys):
    fake = fake_cupy(is_available=lambda: False, get_device_count=lambda: 0)
    fake.cuda.runtime.runtimeGetVersion = lambda: 12080
    fake.cuda.runtime.driverGetVersion = lambda: 0  # no driver
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "cuda_runtime 12.8" in lines and "cuda_driver  not available" in lines


def test_ctrl_c_during_start_up_is_one_line_and_status_130(tmp_path):
    code = ("import sys\n"
            "from xpnet.tools.cli import main, train\n"
            "def interrupted(*args, **kwargs):\n"
            "    raise KeyboardInterrupt  # Ctrl-C while the data set loads\n"
            "train.load_dataset = interrupted\n"
            "sys.exit(main(['train', '--quiet']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr == "xpnet: interrupted\n"


def test_quiet_still_says_where_the_checkpoint_is_after_ctrl_c(tmp_path):
    ckpt = tmp_path / "run.npz"
    code = ("import os, signal, sys\n"
            "from xpnet.trainer import Trainer\n"
            "from xpnet.tools.cli import main\n"
            "real = Trainer.train_step\n"
            "def step(self, x, t):\n"
            "    loss = real(self, x, t)\n"
            "    if self.epoch_step == 3:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return loss\n"
            "Trainer.train_step = step\n"
            f"sys.exit(main(['train', '--model', 'mlp', '--epochs', '2', '--save', r'{ckpt}', '--quiet']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr.splitlines() == [
        f"interrupted: checkpoint of epoch 0 and 4 steps (400 examples) of the next written to {ckpt}; "
        f"--resume continues from there",
        "xpnet: interrupted"]
    assert result.stdout == ""


def test_a_diverging_run_that_stays_finite_ends_with_one_error_line_after_the_bar_and_status_1(tmp_path):
    ckpt = tmp_path / "run.npz"
    assert run_cli("train", "--model", "mlp", "--epochs", "1", "--save", str(ckpt), "--quiet").returncode == 0
    good = ckpt.read_bytes()
    result = run_cli("train", "--model", "mlp", "--epochs", "3", "--lr", "1e6", "--progress", "--resume", str(ckpt),
                     "--save", str(ckpt))  # Adam: steps of 1e6, a loss of about 1e24 that stays finite
    assert result.returncode == 1
    assert "RuntimeWarning" not in result.stderr and "overflow" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("xpnet train: error: the loss is "), result.stderr
    assert "the run diverged" in last and f"the last good checkpoint, {ckpt}, is unchanged" in last
    assert ckpt.read_bytes() == good


def test_lr_inf_is_refused_like_nan(capsys):
    for value in ("inf", "nan"):
        assert main(["train", "--lr", value]) == 2
        assert f"argument --lr: must be positive and finite, got {value}" in capsys.readouterr().err


def test_a_batch_larger_than_the_training_set_is_one_warning_line(tmp_path, capsys):
    assert main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "5000", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("xpnet: warning: the batch size 5000 is larger than the training set (1438 examples): "
                          "each epoch is one step of all 1438 examples")
    assert len(err.strip().splitlines()) == 1
