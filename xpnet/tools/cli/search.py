"""``xpnet search``: the book's hyperparameter search (chapter 6.5) on Optuna, resumable and shared by many workers.

The search itself (the space, the objective, the studies, the report) is
:mod:`xpnet.tools.search`; this module holds its options and runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xpnet.optimizer import OPTIMIZERS
from xpnet.recipes import load_dataset

from ..args import add_common_options, positive_int, ratio, select_device
from ..plot import require_matplotlib
from ..search import DEFAULT_SPACE, PARAM_TYPES, PRUNERS, SAMPLERS, parse_param, report, require_optuna

HELP = "hyperparameter search with Optuna"
DESCRIPTION = ("Search learning rate and weight decay (or other --param ranges) of MultiLayerNet with Optuna, on a "
               "validation set held out from the training set. Results persist in a database: run the same command "
               "again to continue, or in several terminals or machines with one --storage to share the work.")


def param(text):
    """``NAME=LOW:HIGH[:SCALE]`` or ``NAME=VALUE`` as a :class:`~xpnet.tools.search.Param`."""
    try:
        return parse_param(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def train_size(text):
    """A positive number of examples, or ``all``."""
    return "all" if text == "all" else positive_int(text)


def add_arguments(parser):
    add_common_options(parser)
    parser.add_argument("--param", type=param, action="append", default=[], metavar="NAME=LOW:HIGH[:SCALE]",
                        help=f"a range (scale log, linear or int) or NAME=VALUE to fix one; names: "
                             f"{', '.join(PARAM_TYPES)}; default: {' '.join(map(str, DEFAULT_SPACE.values()))}")
    parser.add_argument("--trials", type=positive_int, default=None,
                        help="trials in the study, from all runs and workers together (default 100, the book's; "
                             "4 with --quick): a rerun runs only the missing ones")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="epochs per trial (default 50, the book's; 2 with --quick)")
    parser.add_argument("--train-size", type=train_size, default=None, metavar="N|all",
                        help="training examples used, validation included (default 500, the book's; "
                             "100 with --quick)")
    parser.add_argument("--val-ratio", type=ratio, default=0.2,
                        help="fraction of them held out for validation (the book's 0.2)")
    parser.add_argument("--optimizer", type=str.lower, choices=list(OPTIMIZERS), default="sgd",
                        help="optimizer of every trial (the book's is sgd)")
    parser.add_argument("--sampler", type=str.lower, choices=SAMPLERS, default="random",
                        help="random (the book's), tpe, cmaes (needs the cmaes package), or grid "
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
    parser.add_argument("--heartbeat", type=positive_int, default=60, metavar="SECONDS",
                        help="a running trial records a heartbeat this often")
    parser.add_argument("--grace", type=positive_int, default=None, metavar="SECONDS",
                        help="a running trial without a heartbeat for this long is failed and run again by "
                             "another worker (its worker was killed or its machine lost; default: twice "
                             "--heartbeat)")
    parser.add_argument("--study-name", default="xpnet-search", help="the study in the storage")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="search N times with seeds SEED..SEED+N-1 (studies NAME-seedK) and report the spread")
    parser.add_argument("--top", type=positive_int, default=5, help="rows in the table of best trials")
    parser.add_argument("--out", default="xpnet-search", metavar="DIR",
                        help="folder for the database, NAME.png, NAME.json and NAME.csv")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run for tests: 2 epochs, 100 examples, 4 trials (unless given)")
    parser.add_argument("--quiet", action="store_true", help="no line per trial")


def run(args):
    """Run the search; returns the exit status (130 after Ctrl-C, with the finished trials kept)."""
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
    require_matplotlib()  # fail before the search, not after
    from ..search import storage as storages, study as studies  # import optuna, an optional extra: only once it is known to be there

    # Everything that can fail without a storage fails before one is made: no empty database is left behind.
    device = select_device(args.device)
    (x, t), _ = load_dataset(args.dataset, flatten=True, data_dir=args.data_dir)  # the test set is dropped here
    size = None if args.train_size == "all" else args.train_size
    splits = {seed: studies.split_train_validation(x, t, size, args.val_ratio, seed)
              for seed in range(args.seed, args.seed + args.repeats)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{out / 'xpnet-search.db'}"
    seen, interrupted = [], False  # (seed, study) of each repeat begun
    try:
        with storages.opening(url):  # a new file that cannot be made whole, with its studies, is removed
            storage = storages.open_storage(url, args.heartbeat, args.grace)
            opened = {}
            for seed, (train, validation) in splits.items():
                name = args.study_name if args.repeats == 1 else f"{args.study_name}-seed{seed}"
                settings = {"dataset": args.dataset, "train": len(train[0]), "validation": len(validation[0]),
                            "epochs": args.epochs, "optimizer": args.optimizer, "seed": seed,
                            "space": [str(p) for p in space.values()]}
                sampler = studies.make_sampler(args.sampler, space, args.trials, seed)
                pruner = studies.make_pruner(args.pruner, args.epochs)
                opened[seed] = name, settings, studies.open_study(storage, name, settings, storages.shown(url),
                                                                  sampler, pruner)
        for seed, (train, validation) in splits.items():
            name, settings, study = opened[seed]
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

