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

from . import common

__all__ = ["EXPERIMENTS", "get_experiment", "run_experiment"]

# name -> module under xpnet.tools.experiments, imported on first use
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
    return common.run_experiment(get_experiment(name), list(argv))
