"""xpnet search: the book's random search on Optuna, resumed, shared by worker processes, repeated; errors.

Every run here is --quick (2 epochs on 100 examples of the digits), on the CPU.
"""

import json
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from search_workers import meeting

from xpnet.tools.cli import main
from xpnet.tools.search import DEFAULT_SPACE, Param, parse_param

REPO = Path(__file__).resolve().parents[1]
needs_optuna = pytest.mark.skipif(
    find_spec("optuna") is None or find_spec("matplotlib") is None,
    reason="xpnet search needs optuna and matplotlib: pip install 'xpnet[search]'")


def load(storage, name):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def finished(study):
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


# --- the search space ------------------------------------------------------------


def test_the_default_space_is_the_books():
    assert DEFAULT_SPACE["lr"] == Param("lr", 1e-6, 1e-2, log=True)
    assert DEFAULT_SPACE["weight_decay"] == Param("weight_decay", 1e-8, 1e-4, log=True)
    assert [DEFAULT_SPACE[n].low for n in ("hidden_layers", "hidden_size", "batch_size")] == [6, 100, 100]
    assert not DEFAULT_SPACE["hidden_layers"].searched


@pytest.mark.parametrize("text, param", [
    ("lr=1e-6:1e-2:log", Param("lr", 1e-6, 1e-2, log=True)),
    ("lr=1e-6:1e-2", Param("lr", 1e-6, 1e-2, log=True)),  # lr and weight decay: log by default
    ("weight_decay=0:1e-4:linear", Param("weight_decay", 0.0, 1e-4)),
    ("hidden_layers=1:6:int", Param("hidden_layers", 1, 6)),
    ("hidden-size=16:256:log", Param("hidden_size", 16, 256, log=True)),
    ("batch_size=50", Param("batch_size", 50)),
])
def test_param_ranges_and_fixed_values(text, param):
    assert parse_param(text) == param
    assert parse_param(str(param)) == param  # the text stored with a study reads back the same


def test_grid_values_are_geometric_on_log_ranges_and_whole_on_integer_ones():
    assert parse_param("lr=1e-6:1e-2").grid(3) == pytest.approx([1e-6, 1e-4, 1e-2])
    assert parse_param("hidden_layers=1:6").grid(4) == [1, 3, 4, 6]


# --- a search, resumed -------------------------------------------------------------


@pytest.mark.slow
@needs_optuna
def test_a_quick_search_writes_the_picture_and_the_table_and_a_rerun_continues_the_study(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", "--quick", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "the test set is not used" in text and re.search(r"rank  trial  val acc +lr +weight_decay +seconds\n[- ]+\n", text)
    png, table, rows = out / "xpnet-search.png", out / "xpnet-search.json", out / "xpnet-search.csv"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = json.loads(table.read_text())["studies"][0]["best"]
    assert len(best) == 4 and best[0]["val_acc"] >= best[-1]["val_acc"]
    assert rows.read_text().splitlines()[0] == "study,rank,trial,val_acc,lr,weight_decay,seconds"

    assert main(["search", "--quick", "--out", str(out), "--quiet", "--trials", "7"]) == 0
    assert "4 done before" in capsys.readouterr().out
    study = load(f"sqlite:///{out / 'xpnet-search.db'}", "xpnet-search")
    assert sorted(t.number for t in finished(study)) == list(range(7))

    # Trial n draws the same values whether it ran in one go or after a resume.
    assert main(["search", "--quick", "--out", str(out), "--study-name", "at-once", "--trials", "7", "--quiet"]) == 0
    at_once = load(f"sqlite:///{out / 'xpnet-search.db'}", "at-once")
    assert [t.params for t in at_once.trials] == [t.params for t in study.trials]


@pytest.mark.slow
@needs_optuna
def test_ctrl_c_keeps_the_finished_trials_and_the_same_command_continues(tmp_path, monkeypatch, capsys):
    from xpnet.tools.search import study as studies

    make_objective = studies.make_objective

    def interrupted_at_trial_2(*args, **kwargs):
        objective = make_objective(*args, **kwargs)

        def wrapped(trial):
            if trial.number == 2:
                raise KeyboardInterrupt
            return objective(trial)
        return wrapped

    monkeypatch.setattr(studies, "make_objective", interrupted_at_trial_2)
    assert main(["search", "--quick", "--out", str(tmp_path), "--quiet"]) == 130
    assert "the same command continues" in capsys.readouterr().err
    assert (tmp_path / "xpnet-search.png").exists()
    monkeypatch.setattr(studies, "make_objective", make_objective)
    assert main(["search", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    states = [t.state.name for t in load(f"sqlite:///{tmp_path / 'xpnet-search.db'}", "xpnet-search").trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # 4 trials, the cut one run anew


@pytest.mark.slow  # several studies
@needs_optuna
def test_trials_is_the_studys_total_so_rerunning_a_finished_search_adds_nothing(tmp_path, capsys):
    args = ["search", "--quick", "--repeats", "2", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    assert capsys.readouterr().out.count("4 done before") == 2
    for seed in (0, 1):
        assert len(load(f"sqlite:///{tmp_path / 'xpnet-search.db'}", f"xpnet-search-seed{seed}").trials) == 4


@needs_optuna
def test_a_new_storage_file_whose_studies_cannot_be_made_is_removed_and_an_existing_one_never(tmp_path):
    from xpnet.tools.search import storage as storages

    file = tmp_path / "s.db"
    url = f"sqlite:///{file}"
    with pytest.raises(RuntimeError, match="no study"):
        with storages.opening(url) as new:
            assert new
            storages.open_storage(url)  # the file and its tables are made
            raise RuntimeError("no study")
    assert not file.exists()
    storages.open_storage(url)
    with pytest.raises(RuntimeError, match="refused"):
        with storages.opening(url) as new:
            assert not new
            raise RuntimeError("refused")
    assert file.exists()


@needs_optuna
def test_where_the_folder_cannot_be_locked_a_failing_worker_removes_nothing(tmp_path, monkeypatch):
    import errno

    from xpnet.tools.search import storage as storages

    def no_lock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(storages.fcntl, "flock", no_lock)
    file = tmp_path / "s.db"
    url = f"sqlite:///{file}"
    with pytest.raises(RuntimeError):
        with storages.opening(url) as new:
            assert new
            storages.open_storage(url)
            raise RuntimeError("no study")
    assert file.exists()  # another worker may have it open: an empty file is better than a study lost


@pytest.mark.slow
@needs_optuna
def test_three_worker_processes_share_one_sqlite_study_without_losing_or_repeating_a_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = meeting(tmp_path / "started", 3, "first-trial", "search", "--storage", storage, "--study-name", "s",
                   "--trials", 18, "--epochs", 5, "--quick", "--quiet", "--out", tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(3)]
    results = [(w.wait(timeout=300), w.stderr.read()) for w in workers]
    for w in workers:
        w.stdout.close()
        w.stderr.close()
    assert [code for code, _ in results] == [0, 0, 0], [err for _, err in results]
    study = load(storage, "s")
    trials = finished(study)
    n = len(trials)
    assert n == 18  # the workers stop together at the study's total
    # Others: only trials begun at the same instant as the last one, stopped before training (not counted).
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n
    assert len({t.user_attrs["worker"] for t in trials}) == 3


@needs_optuna
@pytest.mark.parametrize("sampler, pruner", [("tpe", "median"), pytest.param("grid", "none", marks=pytest.mark.slow),
                                             ("cmaes", "median")])
@pytest.mark.slow
def test_other_samplers_and_pruning(tmp_path, sampler, pruner):
    if sampler == "cmaes" and find_spec("cmaes") is None:
        pytest.skip("--sampler cmaes needs the cmaes package: pip install cmaes")
    out = tmp_path / "out"
    assert main(["search", "--quick", "--out", str(out), "--sampler", sampler, "--pruner", pruner, "--trials", "9",
                 "--epochs", "3", "--param", "hidden_layers=1:2", "--quiet"]) == 0
    study = load(f"sqlite:///{out / 'xpnet-search.db'}", "xpnet-search")
    trials = finished(study)
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    assert all(set(t.params) == {"lr", "weight_decay", "hidden_layers"} for t in trials)
    # With a pruner, the validation accuracy of every epoch is reported (and stored); without, nothing is.
    assert all(bool(t.intermediate_values) == (pruner == "median") for t in trials)
    if sampler == "grid":  # 9 trials over 3 ranges: 2 points each, so the grid is done after 8 distinct trials
        assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials) == 8
    else:
        assert len(trials) == 9


@pytest.mark.slow  # several studies
@needs_optuna
def test_repeats_report_the_best_values_of_each_seed_and_their_spread(tmp_path, capsys):
    assert main(["search", "--quick", "--out", str(tmp_path), "--repeats", "2", "--seed", "5", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "spread between repeats" in text and "(log10)" in text
    spread = json.loads((tmp_path / "xpnet-search.json").read_text())["spread"]
    assert [r["study"] for r in spread["repeats"]] == ["xpnet-search-seed5", "xpnet-search-seed6"]
    assert spread["repeats"][0]["lr"] != spread["repeats"][1]["lr"]
    lr = spread["summary"]["lr"]
    assert lr["min"] <= lr["max"] and lr["std_of"] == "log10" and lr["std"] > 0
    assert set(spread["summary"]) == {"val_acc", "lr", "weight_decay"}


# --- mistakes: one line, a non-zero exit ----------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--sampler", "bayes"], "argument --sampler: invalid choice: 'bayes'"),
    (["--param", "lr=1e-3", "--param", "weight_decay=0"], "nothing to search"),
    (["--param", "lr:1e-3:1e-2"], "is not NAME=LOW:HIGH"),
    (["--param", "lr=1e-2:1e-3"], "LOW < HIGH"),
    (["--param", "lr=0:1e-2:log"], "lr must be positive"),
    (["--param", "depth=1:3"], "unknown parameter 'depth'"),
    (["--param", "hidden_layers=1:2.5"], "hidden_layers takes int values"),
    (["--param", "lr=1e-3:1e-2:int"], "the scale of lr is log or linear"),
    (["--pruner", "hyperband"], "invalid choice: 'hyperband'"),
    (["--val-ratio", "1"], "--val-ratio: must be between 0 and 1"),
])
def test_bad_arguments_give_one_line_and_a_nonzero_exit(args, message, capsys):
    assert main(["search", "--quick", *args]) != 0  # main catches what it reports: anything else would raise here
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


@needs_optuna
@pytest.mark.parametrize("args, message", [
    (["--train-size", "99999"], "more than the 1438 training examples"),
    (["--storage", "nosuchdb://x"], "--storage nosuchdb://x:"),
])
def test_impossible_settings_give_one_line(tmp_path, args, message, capsys):
    assert main(["search", "--quick", "--out", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
@needs_optuna
def test_a_study_refuses_trials_run_with_other_settings(tmp_path, capsys):
    assert main(["search", "--quick", "--out", str(tmp_path), "--quiet", "--trials", "1"]) == 0
    assert main(["search", "--quick", "--out", str(tmp_path), "--quiet", "--epochs", "3"]) == 1
    assert "was made with epochs 2 (now 3)" in capsys.readouterr().err


def test_without_optuna_the_module_imports_and_the_search_says_how_to_get_it():
    code = ("import sys; sys.modules['optuna'] = None; import xpnet.tools.search; from xpnet.tools.cli import main; "
            "sys.exit(main(['search', '--quick']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip() == "xpnet search: error: hyperparameter search needs optuna: pip install 'xpnet[search]'"
