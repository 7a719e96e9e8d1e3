"""What every experiment shares: its options, the device and data, timing, and the PNG, table and JSON it writes.

An experiment is a module with ``NAME``, ``DESCRIPTION`` and ``run(args)``
(optionally ``add_options(parser)``, ``EPOCHS`` and ``QUICK_EPOCHS``,
``REPEATS``); :func:`run_experiment` parses the options,
selects the device, seeds xpnet and calls ``run``, which returns an
:class:`Result`. The result is written as ``<out>/<name>.png`` (the
picture) and ``<out>/<name>.json`` (the settings and the rows of the
table), and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xpnet import backend
from xpnet.fileio import atomic_write
from xpnet.recipes import load_dataset
from xpnet.trainer import Trainer, TrainingDivergedError

from ..args import Parser, add_common_options, positive_int, select_device
from ..plot import require_matplotlib
from ..table import format_table

__all__ = ["Result", "add_arguments", "build_parser", "run", "run_experiment", "load_data", "train", "seeds", "epochs_for_steps",
           "time_call", "epoch_time", "epoch_losses", "write_result", "dumps"]

DEFAULT_OUT = "xpnet-experiments"
JSON_DIGITS = 5  # significant digits of the floats in the JSON: more than any measurement here holds


@dataclass
class Result:
    """What an experiment measured.

    figure : a matplotlib Figure, saved as <out>/<name>.png
    columns : (key, header, format) of each column of the printed table
    rows : one dict per table row (plain Python numbers and strings)
    settings : what was run (sizes, epochs, learning rates), kept in the JSON
    extra : more numbers behind the picture (curves), kept in the JSON only
    """

    figure: object
    columns: list
    rows: list
    settings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def add_arguments(parser, module):
    """The options of ``xpnet experiment NAME``: the common ones, --out, --quick, --epochs, and the module's own."""
    add_common_options(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for {module.NAME}.png and {module.NAME}.json, made if missing")
    parser.add_argument("--quick", action="store_true", help="a tiny, fast run on a few examples (for tests)")
    if getattr(module, "EPOCHS", None) is not None:
        parser.add_argument("--epochs", type=positive_int, default=None,
                            help=f"epochs of each training run (default {module.EPOCHS}; fewer with --quick)")
    if getattr(module, "REPEATS", None) is not None:
        parser.add_argument("--repeats", type=positive_int, default=None,
                            help=f"training runs of each configuration, with seeds SEED, SEED+1, ... "
                                 f"(default {module.REPEATS}; 1 with --quick)")
    if hasattr(module, "add_options"):
        module.add_options(parser)


def build_parser(module):
    """A parser of ``module``'s options alone, for :func:`run_experiment`'s ``argv``."""
    parser = Parser(prog=f"xpnet experiment {module.NAME}", description=module.DESCRIPTION)
    add_arguments(parser, module)
    return parser


def run_experiment(module, argv):
    """Parse ``argv`` for ``module``, run it, print its table, write its files; returns the JSON document as a dict."""
    return run(module, build_parser(module).parse_args(argv))


def run(module, args):
    """Run ``module`` with parsed options on the chosen device, print its table, write its files; returns the JSON
    document as a dict."""
    require_matplotlib()  # fail before the run, not after
    args.device = select_device(args.device)
    backend.seed(args.seed)
    if getattr(module, "REPEATS", None) is not None and args.repeats is None:
        args.repeats = 1 if args.quick else module.REPEATS
    epochs = getattr(module, "EPOCHS", None)
    if epochs is not None and args.epochs is None:
        # where the default depends on the data, EPOCHS describes it and run() sets args.epochs
        args.epochs = module.QUICK_EPOCHS if args.quick else epochs if isinstance(epochs, int) else None
    print(f"xpnet experiment {module.NAME}: {module.DESCRIPTION} (device {args.device}, dataset {args.dataset}, "
          f"seed {args.seed}{', quick' if args.quick else ''})", flush=True)
    start = time.perf_counter()
    result = module.run(args)
    elapsed = time.perf_counter() - start
    print(format_table(result.columns, result.rows))
    png, js = write_result(module.NAME, result, args, elapsed)
    print(f"{elapsed:.1f} s; picture {png}, numbers {js}")
    return json.loads(js.read_text())


# --- data, timing ----------------------------------------------------------------


def load_data(args, flatten, quick_train=200, quick_test=100, train_size=None):
    """``(x_train, t_train), (x_test, t_test)`` of ``args.dataset`` on the host.

    ``train_size`` keeps the first examples of the training set (the book's
    small-data experiments); ``--quick`` keeps at most ``quick_train`` and
    ``quick_test``.
    """
    (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, flatten=flatten, data_dir=args.data_dir)
    if train_size is not None:
        x_train, t_train = x_train[:train_size], t_train[:train_size]
    if args.quick:
        x_train, t_train = x_train[:quick_train], t_train[:quick_train]
        x_test, t_test = x_test[:quick_test], t_test[:quick_test]
    return (x_train, t_train), (x_test, t_test)


def train(network, data, args, optimizer="Adam", lr=0.001, batch_size=100, epochs=None, allow_divergence=False):
    """Train ``network`` on ``data`` ((x_train, t_train), (x_test, t_test)) silently; returns the Trainer.

    ``epochs`` defaults to ``args.epochs``; the shuffles follow ``args.seed``.
    With ``allow_divergence`` a loss that becomes NaN or infinite ends the
    run early instead of raising: ``trainer.diverged_epoch`` is then the
    epoch in which it happened (None for a run that finished), and the
    lists hold the epochs completed before it.
    """
    (x_train, t_train), (x_test, t_test) = data
    optimizer_param = {"lr": lr} if isinstance(optimizer, str) else None
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=epochs or args.epochs,
                      mini_batch_size=batch_size, optimizer=optimizer, optimizer_param=optimizer_param,
                      verbose=False, seed=args.seed)
    trainer.diverged_epoch = None
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported by the Trainer itself
            trainer.train()
    except TrainingDivergedError:
        if not allow_divergence:
            raise
        trainer.diverged_epoch = trainer.current_epoch + 1
    return trainer


def seeds(args):
    """``(seed, args)`` for each of ``args.repeats`` runs: seeds SEED, SEED+1, ..., xpnet seeded with each."""
    for seed in range(args.seed, args.seed + args.repeats):
        backend.seed(seed)
        copy = argparse.Namespace(**vars(args))
        copy.seed = seed
        yield seed, copy


def epochs_for_steps(steps, train_size, batch_size):
    """Whole epochs that make at least ``steps`` updates (the book counts iterations, xpnet's Trainer epochs)."""
    return math.ceil(steps / math.ceil(train_size / batch_size))


def time_call(fn, repeat=1):
    """Seconds per call of ``fn()`` (the best of ``repeat``), queued GPU work included, and its last value."""
    best, value = math.inf, None
    for _ in range(repeat):
        backend.synchronize()
        start = time.perf_counter()
        value = fn()
        backend.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, value


def epoch_time(trainer):
    """Seconds per training epoch of a finished Trainer: the median over its epochs, the first (warm-up) left out.

    The median, not the mean, so that a moment of contention for the CPU does not move it; None
    when no epoch finished.
    """
    times = trainer.epoch_times[1:] if len(trainer.epoch_times) > 1 else trainer.epoch_times
    return float(np.median(times)) if times else None


def epoch_losses(trainer):
    """The mean training loss of each finished epoch of a Trainer: its loss curve at one point per epoch."""
    losses, steps = trainer.train_loss_list, trainer.iter_per_epoch
    return [float(np.mean(losses[i:i + steps])) for i in range(0, len(losses), steps)]


# --- output ------------------------------------------------------------------------


def write_result(name, result, args, elapsed):
    """Write ``<out>/<name>.png`` and ``<out>/<name>.json``; returns their paths."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{name}.png", out / f"{name}.json"
    with atomic_write(png) as f:
        result.figure.savefig(f, format="png", dpi=110)
    require_matplotlib().close(result.figure)
    document = {
        "experiment": name, "device": args.device, "dataset": args.dataset, "seed": args.seed,
        "quick": bool(args.quick), "seconds": round(elapsed, 3), "settings": result.settings,
        "columns": {key: header for key, header, _ in result.columns}, "rows": result.rows, **result.extra,
    }
    with atomic_write(js, "w") as f:
        f.write(dumps(document))
    return png, js


def dumps(document, digits=JSON_DIGITS):
    """Small, readable JSON: one line per top-level key and per table row, floats to ``digits`` significant digits.

    NumPy scalars and arrays become plain numbers and lists; NaN and infinities become null.
    """
    document = _plain(document, digits)
    lines = []
    for key, value in document.items():
        if key == "rows":
            text = "[\n  " + ",\n  ".join(json.dumps(row) for row in value) + "\n ]" if value else "[]"
        else:
            text = json.dumps(value)
        lines.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _plain(value, digits):
    if isinstance(value, dict):
        return {str(k): _plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v, digits) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    return value
