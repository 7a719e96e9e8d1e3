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
machines, see :mod:`xpnet.tools.search.storage`) that survives Ctrl-C and killed
workers, and ``--repeats`` to see how much the best values move with the
seed.

Optuna is an optional extra (``pip install 'xpnet[search]'``): this module
imports without it, and the search says so in one line when it is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Param", "parse_param", "DEFAULT_SPACE", "PARAM_TYPES", "SAMPLERS", "PRUNERS", "require_optuna"]

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
        import optuna  # here, not at the top: optuna is an optional extra
    except ImportError:
        raise ImportError(f"hyperparameter search needs optuna: {INSTALL_HINT}") from None
    return optuna
