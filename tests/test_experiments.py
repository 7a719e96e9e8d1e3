"""xpnet experiment: each of the book's questions as one command that writes a picture, its numbers and a table.

Every experiment runs here in --quick mode (a few epochs on 200 digits), on
the CPU and, where one is usable, on the GPU; then come what the numbers
must say whatever the data (backpropagation is faster than the numerical
gradient, ReLU activations vanish with weights of std 0.01, ...), the
examples, and the one-line errors.
"""

import contextlib
import io
import json
import math
import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpnet.tools.cli import main
from xpnet.tools.experiments import EXPERIMENTS, run_experiment
from xpnet.tools.experiments.common import epochs_for_steps
from xpnet.tools.table import format_table

pytest.importorskip("matplotlib", reason="the experiments draw with matplotlib: pip install 'xpnet[plot]'")

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# experiment -> (rows of its table in --quick mode, the keys of each row that must be finite numbers)
QUICK_TABLES = {
    "backprop-vs-numerical": (2, ("params", "backprop_s", "numerical_s", "ratio", "max_diff", "max_diff_float32")),
    "depth": (2, ("hidden_layers", "params", "train_acc", "test_acc", "test_acc_std", "epoch_s")),
    "optimizers": (5, ("lr", "final_loss", "train_acc", "test_acc", "epoch_s", "path_lr", "path_f")),
    "weight-init": (6, ("std1", "std5", "zeros1", "zeros5", "final_loss", "test_acc")),
    "batchnorm": (2, ("weight_init_std", "bn_train_acc", "bn_test_acc", "bn_epoch_s")),
    "overfitting": (3, ("train_acc", "test_acc", "gap", "best_test_acc")),
    "pooling": (2, ("params", "affine_inputs", "epoch_s", "train_acc", "test_acc")),
    "conv-filters": (2, ("test_acc", "filter_std", "filter_mean_abs", "relative_change")),
}
ACCURACIES = ("train_acc", "test_acc", "bn_train_acc", "bn_test_acc", "plain_train_acc", "plain_test_acc",
              "best_test_acc")


def quick(name, out, *options, device="cpu"):
    """Run ``xpnet experiment NAME --quick`` through the command line; returns (JSON document, printed text)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["experiment", name, "--quick", "--out", str(out), "--device", device, *options])
    assert status == 0
    return json.loads((Path(out) / f"{name}.json").read_text()), stdout.getvalue()


@pytest.fixture(scope="module")
def cpu_quick_runs(tmp_path_factory):
    """Each experiment's quick CPU run, made once for the tests of what it writes and what its numbers say:
    ``get(name)`` is (JSON document, printed text, output folder)."""
    runs = {}

    def get(name):
        if name not in runs:
            out = tmp_path_factory.mktemp(name)
            runs[name] = (*quick(name, out), out)
        return runs[name]

    return get


@pytest.fixture(scope="module")
def cpu_runs(cpu_quick_runs):
    """The JSON document of each experiment's quick CPU run."""
    return lambda name: cpu_quick_runs(name)[0]


def drawn(png):
    """A drawn figure, not an empty canvas: many colors, and ink on more than a hundredth of it."""
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    colors = np.unique(pixels.reshape(-1, 3), axis=0)
    ink = (pixels < 0.9).any(axis=-1).mean()
    return len(colors) > 50 and ink > 0.01


def finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- every experiment: the picture, the numbers, the table --------------------------------


def test_there_are_the_eight_questions_of_the_issue():
    assert set(EXPERIMENTS) == set(QUICK_TABLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_writes_a_picture_its_numbers_and_a_table(name, device, tmp_path, cpu_quick_runs):
    document, text, out = cpu_quick_runs(name) if device == "cpu" else (*quick(name, tmp_path, device="gpu"), tmp_path)

    png = out / f"{name}.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert drawn(png)

    assert (document["experiment"], document["dataset"], document["seed"], document["quick"]) == (name, "digits", 0,
                                                                                                 True)
    assert document["device"] == device
    assert document["settings"] and document["seconds"] > 0
    rows, keys = QUICK_TABLES[name]
    assert len(document["rows"]) == rows
    for row in document["rows"]:
        assert set(document["columns"]) <= set(row)
        for key in keys:
            assert finite(row[key]), (key, row)
        for key in set(ACCURACIES) & set(row):  # fractions of the 100 test or 200 training examples kept
            assert row[key] is None or (0 <= row[key] <= 1 and abs(row[key] * 200 - round(row[key] * 200)) < 1e-6), (key, row)

    headers = list(document["columns"].values())
    table = [line for line in text.splitlines() if all(h in line for h in headers)]
    assert len(table) == 1, text  # the header line of the printed table, then one line per row
    lines = text.splitlines()
    start = lines.index(table[0])
    assert set(lines[start + 1]) <= {"-", " "}
    assert len(lines) >= start + 2 + rows
    assert f"picture {png}" in text


@pytest.mark.slow
def test_the_settings_record_what_was_run(cpu_runs):
    assert cpu_runs("depth")["settings"]["epochs"] == 2
    assert cpu_runs("optimizers")["settings"]["train_examples"] == 200
    assert cpu_runs("overfitting")["settings"]["weight_decay_lambda"] == 0.1
    assert cpu_runs("batchnorm")["settings"]["scales"] == [1.0, 0.0001]
    assert cpu_runs("conv-filters")["settings"]["weight_init_std"] == 0.01


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers_and_another_seed_others(tmp_path, cpu_runs):
    def accuracies(document):
        return [(row["train_acc"], row["test_acc"]) for row in document["rows"]]

    first = accuracies(cpu_runs("overfitting"))  # seed 0
    assert accuracies(quick("overfitting", tmp_path / "0", "--seed", "0")[0]) == first
    assert accuracies(quick("overfitting", tmp_path / "1", "--seed", "1")[0]) != first


def test_run_experiment_returns_what_the_json_holds(tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        numbers = run_experiment("depth", ["--quick", "--out", str(tmp_path), "--max-depth", "2"])
    assert numbers == json.loads((tmp_path / "depth.json").read_text())
    assert [row["hidden_layers"] for row in numbers["rows"]] == [1, 2]


# --- what each picture answers, whatever the data -------------------------------------------


@pytest.mark.slow
def test_backpropagation_is_faster_than_the_numerical_gradient_and_agrees_with_it_in_float64(cpu_runs):
    rows = cpu_runs("backprop-vs-numerical")["rows"]
    assert rows[0]["params"] < rows[1]["params"]
    for row in rows:
        assert row["numerical_s"] > 10 * row["backprop_s"]
        assert row["ratio"] == pytest.approx(row["numerical_s"] / row["backprop_s"], rel=1e-3)
        assert row["max_diff"] < 1e-6  # float64: central differences agree to many digits
        assert row["max_diff_float32"] > row["max_diff"]  # float32 loses about half of them


@pytest.mark.slow
def test_depth_counts_the_parameters_of_each_network(cpu_runs):
    rows = cpu_runs("depth")["rows"]
    # 64 inputs, hidden layers of 100, 10 classes
    assert [row["params"] for row in rows] == [64 * 100 + 100 + 100 * 10 + 10,
                                               64 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10]
    assert set(cpu_runs("depth")["curves"]) == {"1", "3"}


@pytest.mark.slow
def test_every_optimizer_comes_closer_to_the_minimum_of_the_test_function(cpu_runs):
    document = cpu_runs("optimizers")
    assert [row["optimizer"] for row in document["rows"]] == ["SGD", "Momentum", "AdaGrad", "RMSprop", "Adam"]
    start = 7.0 ** 2 / 20 + 2.0 ** 2  # f at (-7, 2)
    for row in document["rows"]:
        path = document["paths"][row["optimizer"]]
        assert len(path) == 31 and path[0] == [-7.0, 2.0]
        assert row["path_f"] < start / 10
        assert len(document["train_loss_per_epoch"][row["optimizer"]]) == document["settings"]["epochs"]


@pytest.mark.slow
def test_relu_activations_vanish_with_weights_of_std_001_and_keep_their_scale_with_he(cpu_runs):
    rows = {(row["activation"], row["init"]): row for row in cpu_runs("weight-init")["rows"]}
    assert rows["relu", "std 0.01"]["std5"] < 1e-4 < rows["relu", "Xavier"]["std5"] < rows["relu", "He"]["std5"]
    assert 0.3 < rows["relu", "He"]["std5"] / rows["relu", "He"]["std1"] < 3
    for init in ("std 0.01", "Xavier", "He"):
        assert 0.4 < rows["relu", init]["zeros5"] < 0.6  # ReLU zeroes about half of its inputs
        assert rows["sigmoid", init]["zeros5"] == 0
    histograms = cpu_runs("weight-init")["histograms"]
    assert len(histograms) == 6 and all(len(layers) == 5 and len(layers[0]) == 30 for layers in histograms.values())


@pytest.mark.slow
def test_batchnorm_times_both_networks_and_marks_the_runs_that_diverged(cpu_runs):
    for row in cpu_runs("batchnorm")["rows"]:
        assert row["bn_diverged_epoch"] is None and row["bn_epoch_s"] > 0
        if row["plain_diverged_epoch"] is not None:
            assert row["plain_train_acc"] is None and row["plain_test_acc"] is None
        if row["plain_epoch_s"] is None:  # diverged in its first epoch: no epoch to time
            assert row["plain_diverged_epoch"] == 1 and row["cost"] is None
        else:
            assert row["cost"] == pytest.approx(row["bn_epoch_s"] / row["plain_epoch_s"], rel=1e-3)


@pytest.mark.slow
def test_overfitting_compares_plain_weight_decay_and_dropout(cpu_runs):
    document = cpu_runs("overfitting")
    assert [row["network"] for row in document["rows"]] == ["plain", "weight decay 0.1", "dropout 0.2"]
    assert document["settings"]["train_examples"] == 200  # --quick keeps 200 of the book's 300
    for row in document["rows"]:
        assert row["gap"] == pytest.approx(row["train_acc"] - row["test_acc"], abs=1e-4)
        assert len(document["curves"][row["network"]]["test_acc"]) == 2


@pytest.mark.slow
def test_dropping_the_pooling_layer_quadruples_the_inputs_of_the_first_affine_layer(cpu_runs):
    with_pooling, without = cpu_runs("pooling")["rows"]
    assert without["affine_inputs"] == 4 * with_pooling["affine_inputs"] == 4 * 30 * 4 * 4
    assert without["params"] - with_pooling["params"] == 3 * with_pooling["affine_inputs"] * 100


@pytest.mark.slow
def test_conv_filters_keeps_the_filters_before_and_after_and_the_feature_maps(cpu_runs):
    document = cpu_runs("conv-filters")
    before, after = document["rows"]
    assert before["relative_change"] == 0 < after["relative_change"]
    assert len(document["filters_before"]) == len(document["filters_after"]) == 30
    assert len(document["filters_after"][0]) == 3 and len(document["filters_after"][0][0]) == 3
    assert len(document["feature_maps"]) == 30 and len(document["feature_maps"][0]) == 8


# --- the helpers ---------------------------------------------------------------------------


def test_epochs_for_steps_rounds_up_to_whole_epochs():
    assert epochs_for_steps(2000, 1438, 128) == 167  # 12 steps per epoch: 2,004 steps
    assert epochs_for_steps(4, 200, 100) == 2


def test_the_table_has_a_header_a_rule_and_a_dash_for_a_missing_number():
    table = format_table([("name", "name", None), ("acc", "accuracy", ".3f")],
                         [{"name": "a", "acc": 0.5}, {"name": "bb", "acc": None}])
    assert table.splitlines() == ["name  accuracy", "----  --------", "   a     0.500", "  bb         -"]


# --- the examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_has_an_example_that_compiles_and_names_its_command(name):
    example = REPO / "examples" / f"experiment_{name.replace('-', '_')}.py"
    py_compile.compile(str(example), doraise=True)
    text = example.read_text()
    assert f"    xpnet experiment {name}\n" in text
    assert f'run_experiment("{name}", sys.argv[1:])' in text  # where the user says, by default xpnet-experiments
    assert "docs" not in text


def test_an_example_writes_into_a_new_folder_of_the_working_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "XPNET_DEVICE": "cpu"}
    result = subprocess.run([sys.executable, str(REPO / "examples" / "experiment_pooling.py"), "--quick"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "xpnet-experiments").iterdir()) == ["pooling.json", "pooling.png"]
    assert "without pooling: 193,410 parameters" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_example_script_runs_in_quick_mode_and_prints_its_summary(tmp_path, monkeypatch, capsys, name):
    import runpy

    script = REPO / "examples" / f"experiment_{name.replace('-', '_')}.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick", "--out", str(tmp_path)])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.json").exists()
    lines = capsys.readouterr().out.strip().splitlines()
    written = max(i for i, line in enumerate(lines) if f"{name}.json" in line)  # the experiment's last line
    assert lines[written + 1:], "the script printed no summary of its own"


# --- the command line and its errors ------------------------------------------------------------


def test_help_lists_every_experiment(capsys):
    assert main(["experiment", "--help"]) == 0
    text = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert re.search(rf"^ +{re.escape(name)}\s", text, re.MULTILINE), name


def test_each_experiment_takes_the_common_options(capsys):
    assert main(["experiment", "batchnorm", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--device", "--seed", "--dataset", "--out", "--quick", "--epochs"):
        assert option in text


@pytest.mark.parametrize("argv, message", [
    (["experiment", "nope"], "argument NAME: invalid choice: 'nope' (choose from 'backprop-vs-numerical', 'depth',"),
    (["experiment"], "the following arguments are required: NAME"),
    (["experiment", "--quick"], "the following arguments are required: NAME"),
])
def test_an_unknown_or_missing_name_is_one_line_and_exit_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_bad_option_is_one_line_and_exit_status_2(capsys):
    assert main(["experiment", "depth", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--epochs: must be a positive integer, got 0" in err and len(err.strip().splitlines()) == 1


def test_without_matplotlib_an_experiment_stops_with_one_line_before_it_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without it looks like
    assert main(["experiment", "depth", "--quick", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "pip install 'xpnet[plot]'" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""  # nothing was trained
    assert list(tmp_path.iterdir()) == []
