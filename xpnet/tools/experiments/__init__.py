"""``xpnet experiment NAME``: the reader's questions about the book's networks, answered with a picture and a table.

Each experiment writes ``<out>/<name>.png`` and ``<out>/<name>.json`` (the
numbers behind the picture) and prints a short table; in Python,
:func:`run_experiment` does the same and returns the numbers. Every experiment takes
``--device``, ``--seed``, ``--dataset``, ``--data-dir``, ``--out`` and
``--quick`` (a tiny run for tests); those that train also take ``--epochs``.

    >>> from xpnet.tools.experiments import EXPERIMENTS, run_experiment
    >>> sorted(EXPERIMENTS)[:3]
    ['backprop-vs-numerical', 'batchnorm', 'conv-filters']
    >>> numbers = run_experiment("depth", ["--quick", "--out", "/tmp/xpnet"])  # doctest: +SKIP
    >>> [row["test_acc"] for row in numbers["rows"]]                          # doctest: +SKIP

Matplotlib is needed (``pip install 'xpnet[plot]'``); without it an
experiment stops with one line before it runs.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["EXPERIMENTS", "get_experiment", "run_experiment", "main"]

# name -> module under xpnet.tools.experiments, imported only when the experiment runs
EXPERIMENTS = {
    "backprop-vs-numerical": "gradients",
    "depth": "depth",
    "optimizers": "optimizers",
    "weight-init": "weight_init",
    "batchnorm": "batchnorm",
    "overfitting": "overfitting",
    "pooling": "pooling",
    "conv-filters": "conv_filters",
}

USAGE = "usage: xpnet experiment NAME [--device cpu|gpu|auto] [--seed N] [--dataset NAME] [--out DIR] [--quick] ..."


def get_experiment(name):
    """The module of experiment ``name``; a ValueError that lists the names for an unknown one."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")


def run_experiment(name, argv=()):
    """Run experiment ``name`` with the options of ``xpnet experiment NAME`` in ``argv``.

    Prints its table, writes ``<out>/<name>.png`` and ``<out>/<name>.json``,
    and returns what the JSON holds as a dict: ``rows`` (the table),
    ``settings``, ``device``, ``seed``, ``seconds`` and the curves behind the
    picture. An unknown name is a ValueError.
    """
    from .common import run_experiment as run_module

    return run_module(get_experiment(name), list(argv))


def main(argv=None):
    """Run ``xpnet experiment NAME [options]``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        print("\nexperiments (see xpnet experiment NAME --help for the options of each):")
        for name in EXPERIMENTS:
            print(f"  {name:<22} {get_experiment(name).DESCRIPTION}")
        return 0
    if not argv or argv[0].startswith("-"):
        print(f"xpnet experiment: error: name an experiment first: {', '.join(EXPERIMENTS)} "
              f"(see xpnet experiment --help)", file=sys.stderr)
        return 2
    if argv[0] not in EXPERIMENTS:
        print(f"xpnet experiment: error: unknown experiment {argv[0]!r}; choose from {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    from .common import main as run_experiment

    return run_experiment(get_experiment(argv[0]), argv[1:])
