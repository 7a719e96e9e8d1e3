"""``xpnet search``: the book's hyperparameter search (chapter 6.5) on Optuna, resumable and shared by many workers.

The book samples the learning rate from 10^-6..10^-2 and the weight decay
from 10^-8..10^-4, log-uniformly, trains MultiLayerNet (6 hidden layers of
100, SGD) for 50 epochs on 500 training examples of which 20% are held out
for validation, and keeps the final validation accuracy of each of 100
trials. That is the default here, on the embedded digits. The test set is
never looked at: tuning on it would make the reported test accuracy a
training number.

Beyond the book: other parameters and ranges (``--param``), Optuna's other
samplers and median pruning, a study in a storage (an SQLite file by
default; PostgreSQL, MySQL, a journal file or Redis for workers on many
machines, see :mod:`xpnet.search.storage`) that survives Ctrl-C and killed
workers, and ``--repeats`` to see how much the best values move with the
seed.

Optuna is an optional extra (``pip install 'xpnet[search]'``): this module
imports without it, and the search says so in one line when it is missing.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cli import OPTIMIZERS, _Parser, _positive_int, add_common_options, select_device

__all__ = ["Param", "parse_param", "DEFAULT_SPACE", "require_optuna", "main"]

SAMPLERS = ("random", "tpe", "cmaes", "grid")
PRUNERS = ("none", "median")
INSTALL_HINT = "pip install 'xpnet[search]'"

# name -> (type, default scale of a range, smallest value): what a trial can vary.
PARAM_TYPES = {
    "lr": (float, "log", 0.0),
    "weight_decay": (float, "log", 0.0),
    "hidden_layers": (int, "int", 0),
    "hidden_size": (int, "int", 1),
    "batch_size": (int, "int", 1),
}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a range ``low..high`` (``log``: log-uniform) or, with ``high=None``, a fixed value."""

    name: str
    low: float
    high: float | None = None
    log: bool = False

    @property
    def integer(self):
        return PARAM_TYPES[self.name][0] is int

    @property
    def searched(self):
        return self.high is not None

    def suggest(self, trial):
        """The value for an Optuna trial (a fixed value is not recorded as a trial parameter)."""
        if not self.searched:
            return self.low
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def grid(self, points):
        """``points`` values spread over the range (geometric where ``log``), for the grid sampler."""
        import numpy as np

        values = (np.geomspace if self.log else np.linspace)(self.low, self.high, points)
        return sorted({int(round(v)) for v in values}) if self.integer else [float(v) for v in values]

    def __str__(self):
        if not self.searched:
            return f"{self.name}={self.low:g}"
        scale = "log" if self.log else ("int" if self.integer else "linear")
        return f"{self.name}={self.low:g}:{self.high:g}:{scale}"


def parse_param(text):
    """``NAME=LOW:HIGH[:log|linear|int]`` (a range) or ``NAME=VALUE`` (fixed), e.g. ``lr=1e-6:1e-2:log``.

    Ranges of lr and weight_decay are log-uniform unless told otherwise; those
    of the integer parameters (hidden_layers, hidden_size, batch_size) are
    uniform, or log-uniform with ``:log``.
    """
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not spec:
        raise ValueError(f"{text!r} is not NAME=LOW:HIGH[:log|linear|int] or NAME=VALUE")
    if name not in PARAM_TYPES:
        raise ValueError(f"unknown parameter {name!r} in {text!r}; choose from {', '.join(PARAM_TYPES)}")
    kind, default_scale, smallest = PARAM_TYPES[name]
    parts = spec.split(":")
    if len(parts) > 3:
        raise ValueError(f"{text!r} is not NAME=LOW:HIGH[:log|linear|int] or NAME=VALUE")
    scale = parts[2].strip().lower() if len(parts) == 3 else default_scale
    if scale not in ("log", "linear", "int") or (scale == "int" and kind is float):
        allowed = "log or linear" if kind is float else "int, linear or log"
        raise ValueError(f"{text!r}: the scale of {name} is {allowed}, not {scale!r}")
    try:
        values = [kind(float(p)) if kind is float else _integer(p) for p in parts[:2]]
    except ValueError:
        raise ValueError(f"{text!r}: {name} takes {kind.__name__} values") from None
    if any(not math.isfinite(v) or v < smallest for v in values) or (name == "lr" and values[0] <= 0):
        raise ValueError(f"{text!r}: {name} must be {'positive' if name == 'lr' else f'at least {smallest}'}")
    if len(values) == 1:
        return Param(name, values[0])
    low, high = values
    if not low < high:
        raise ValueError(f"{text!r}: the range needs LOW < HIGH")
    if scale == "log" and low <= 0:
        raise ValueError(f"{text!r}: a log range needs LOW > 0")
    return Param(name, low, high, log=scale == "log")


def _integer(text):
    value = float(text)
    if value != int(value):
        raise ValueError(text)
    return int(value)


# The book's experiment: lr and weight decay searched, MultiLayerNet 6 x 100, batches of 100.
DEFAULT_SPACE = {p.name: p for p in map(parse_param, (
    "lr=1e-6:1e-2:log", "weight_decay=1e-8:1e-4:log", "hidden_layers=6", "hidden_size=100", "batch_size=100"))}


def require_optuna():
    """The optuna module, or an ImportError that says how to get it."""
    try:
        import optuna
    except ImportError:
        raise ImportError(f"hyperparameter search needs optuna: {INSTALL_HINT}") from None
    return optuna


def _param(text):
    try:
        return parse_param(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _train_size(text):
    return "all" if text == "all" else _positive_int(text)


def _ratio(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser():
    parser = _Parser(prog="xpnet search", description=(
        "Search learning rate and weight decay (or other --param ranges) of MultiLayerNet with Optuna, on a "
        "validation set held out from the training set. Results persist in a database: run the same command "
        "again to continue, or in several terminals or machines with one --storage to share the work."))
    add_common_options(parser)
    parser.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=LOW:HIGH[:SCALE]",
                        help=f"a range (scale log, linear or int) or NAME=VALUE to fix one; names: "
                             f"{', '.join(PARAM_TYPES)}; default: {' '.join(map(str, DEFAULT_SPACE.values()))}")
    parser.add_argument("--trials", type=_positive_int, default=None,
                        help="trials in the study, from all runs and workers together (default 100, the book's; "
                             "4 with --quick): a rerun runs only the missing ones")
    parser.add_argument("--epochs", type=_positive_int, default=None, help="epochs per trial (default 50, the book's)")
    parser.add_argument("--train-size", type=_train_size, default=None, metavar="N|all",
                        help="training examples used, validation included (default 500, the book's)")
    parser.add_argument("--val-ratio", type=_ratio, default=0.2,
                        help="fraction of them held out for validation (default 0.2, the book's)")
    parser.add_argument("--optimizer", type=str.lower, choices=OPTIMIZERS, default="sgd",
                        help="optimizer of every trial (default sgd, the book's)")
    parser.add_argument("--sampler", type=str.lower, choices=SAMPLERS, default="random",
                        help="random (the book's, default), tpe, cmaes (needs the cmaes package), or grid "
                             "(about trials^(1/d) points on each of d ranges)")
    parser.add_argument("--pruner", type=str.lower, choices=PRUNERS, default="none",
                        help="median: stop a trial whose validation accuracy is below the median of earlier "
                             "trials at the same epoch (after 5 trials and the first fifth of the epochs)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="where the trials are kept, shared by every worker that runs the same command: "
                             "sqlite:///FILE (one machine; default: sqlite:///OUT/xpnet-search.db), "
                             "postgresql://USER:PASSWORD@HOST:PORT/DB (pip install 'xpnet[postgres]'), "
                             "mysql+pymysql://USER:PASSWORD@HOST:PORT/DB (pip install 'xpnet[mysql]'), "
                             "journal:FILE (a journal file on a shared file system) or "
                             "redis://HOST:PORT (pip install 'xpnet[redis]')")
    parser.add_argument("--heartbeat", type=_positive_int, default=60, metavar="SECONDS",
                        help="a running trial records a heartbeat this often (default 60)")
    parser.add_argument("--grace", type=_positive_int, default=None, metavar="SECONDS",
                        help="a running trial without a heartbeat for this long is failed and run again by "
                             "another worker (its worker was killed or its machine lost; default: twice "
                             "--heartbeat)")
    parser.add_argument("--study-name", default="xpnet-search", help="the study in the storage (default xpnet-search)")
    parser.add_argument("--repeats", type=_positive_int, default=1,
                        help="search N times with seeds SEED..SEED+N-1 (studies NAME-seedK) and report the spread")
    parser.add_argument("--top", type=_positive_int, default=5, help="rows in the table of best trials (default 5)")
    parser.add_argument("--out", default="xpnet-search", metavar="DIR",
                        help="folder for the database, NAME.png, NAME.json and NAME.csv (default xpnet-search)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run for tests: 2 epochs, 100 examples, 4 trials (unless given)")
    parser.add_argument("--quiet", action="store_true", help="no line per trial")
    return parser


def main(argv=None):
    """Run ``xpnet search``; returns the exit status (130 after Ctrl-C, with the finished trials kept)."""
    args = build_parser().parse_args(argv)
    quick = args.quick
    args.trials = args.trials or (4 if quick else 100)
    args.epochs = args.epochs or (2 if quick else 50)
    args.train_size = args.train_size or (100 if quick else 500)
    args.grace = args.grace or 2 * args.heartbeat
    space = dict(DEFAULT_SPACE)
    space.update({p.name: p for p in args.param})
    if not any(p.searched for p in space.values()):
        raise ValueError("nothing to search: give at least one --param as a range LOW:HIGH")

    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the lines per trial come from xpnet
    from ..plot import require_matplotlib

    require_matplotlib()  # fail before the search, not after
    from ..recipes import load_dataset
    from . import report, storage as storages, study as studies

    # Everything that can fail without a storage fails before one is made: no empty database is left behind.
    device = select_device(args.device)
    (x, t), _ = load_dataset(args.dataset, flatten=True, data_dir=args.data_dir)  # the test set is dropped here
    train_size = None if args.train_size == "all" else args.train_size
    splits = {seed: studies.split_train_validation(x, t, train_size, args.val_ratio, seed)
              for seed in range(args.seed, args.seed + args.repeats)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{out / 'xpnet-search.db'}"
    file = storages.storage_file(url)
    new_file = file is not None and not file.exists()
    seen, interrupted = [], False  # (seed, study) of each repeat begun
    try:
        storage = storages.open_storage(url, args.heartbeat, args.grace)
        for seed, (train, validation) in splits.items():
            name = args.study_name if args.repeats == 1 else f"{args.study_name}-seed{seed}"
            settings = {"dataset": args.dataset, "train": len(train[0]), "validation": len(validation[0]),
                        "epochs": args.epochs, "optimizer": args.optimizer, "seed": seed,
                        "space": [str(p) for p in space.values()]}
            sampler = studies.make_sampler(args.sampler, space, args.trials, seed)
            pruner = studies.make_pruner(args.pruner, args.epochs)
            study = studies.open_study(storage, name, settings, storages.shown(url), sampler, pruner)
            seen.append((seed, study))
            print(f"xpnet search: study {name!r} in {storages.shown(url)}: {settings['train']} training / "
                  f"{settings['validation']} validation examples of {args.dataset} (the test set is not used), "
                  f"{args.epochs} epochs, {args.sampler} sampler, {args.trials} trials on {device}; "
                  f"{studies.counted(study)} done before", flush=True)
            objective = studies.make_objective(train, validation, space, args.epochs, args.optimizer, seed,
                                               report=args.pruner != "none")
            studies.run(study, objective, args.trials, say=None if args.quiet else _say)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        if new_file and not seen:
            _remove_database(file)
        if storages.is_storage_error(exc):
            raise storages.StorageError(storages.explain(exc, url)) from None
        raise
    if seen:
        try:
            report.report(seen, space, out / args.study_name, top=args.top, dataset=args.dataset)
        except OSError as exc:
            if exc.filename is None:
                raise
            raise OSError(f"cannot write the report {exc.filename or out}: {exc.strerror or exc}; the trials are "
                          f"kept in {storages.shown(url)}: the same command writes it once it can") from None
    if interrupted:
        print(f"xpnet search: interrupted; the finished trials are kept in {storages.shown(url)}: "
              f"the same command continues", file=sys.stderr)
        return 130
    return 0


def _say(line):
    print(line, flush=True)


def _remove_database(file):
    """Remove a database file this run made before any study was in it, with SQLite's and the journal's extras."""
    for path in (file, *(file.with_name(file.name + extra) for extra in ("-journal", "-wal", "-shm", ".lock"))):
        try:
            path.unlink()
        except OSError:
            pass
