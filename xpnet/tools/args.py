"""What every command's options accept, and how a mistake in them reads: one set of checkers for all the tools.

The checkers are argparse ``type`` functions. Each raises
``argparse.ArgumentTypeError`` with a sentence, so that a mistake reads
``xpnet train: error: argument --seed: must be an integer >= 0, got -1``:
the option and the value, never the name of a Python function.

    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive integer, got 0
    >>> device("GPU:1")
    'gpu:1'
"""

from __future__ import annotations

import argparse
import os
import re

from xpnet import backend
from xpnet.recipes import DATASETS

__all__ = ["Parser", "HelpFormatter", "positive_int", "non_negative_int", "positive_float", "ratio", "device",
           "positive_int_list", "weight_init_std", "add_common_options", "select_device"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless the help already says it.

    A flag's default is off, and is not shown; an option that is not used
    unless given (a default of None) shows ``(default: none)``, and one whose
    default depends on other options states it in its own help.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS \
                or isinstance(action.default, bool) or action.nargs == 0:
            return text
        return text + (" (default: none)" if action.default is None else " (default: %(default)s)")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults and whose errors point to ``--help``."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, text, wanted):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None


def positive_int(text):
    """An integer >= 1 (epochs, batch sizes, trials, repeats)."""
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    """An integer >= 0 (seeds)."""
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text):
    """A finite number > 0 (learning rates, standard deviations)."""
    value = _number(float, text, "a positive number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def ratio(text):
    """A number strictly between 0 and 1 (fractions held out)."""
    value = _number(float, text, "a number between 0 and 1")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive_int_list(text):
    """Comma-separated positive integers, e.g. ``50,100``, as a tuple."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, e.g. 50,100; got {text!r}")
    return values


def weight_init_std(text):
    """The scale of initial weights: 'he', 'xavier', or a standard deviation > 0."""
    name = text.strip().lower()
    if name in ("he", "xavier"):
        return name
    try:
        value = float(name)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be he, xavier or a positive standard deviation, got {text!r}")
    return value


_DEVICE = re.compile(r"cpu|auto|gpu(:\d+)?|cuda(:\d+)?")


def device(text):
    """A device name as ``XPNET_DEVICE`` takes it: cpu, gpu, gpu:N or auto (whether it is usable is checked later)."""
    name = text.strip().lower()
    if not _DEVICE.fullmatch(name):
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(backend.VALID_DEVICES)}, got {text!r}")
    return name


def add_common_options(parser, dataset_default="digits"):
    """--device, --seed, --dataset, --data-dir: shared by train, experiment and search."""
    parser.add_argument("--device", type=device, default=None, metavar="|".join(backend.VALID_DEVICES),
                        help="where to compute: cpu, gpu (gpu:N for device N) or auto "
                             "(default: $XPNET_DEVICE, else cpu)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed for the initial weights, the shuffles and dropout")
    parser.add_argument("--dataset", choices=DATASETS, default=dataset_default,
                        help="data set: digits is embedded (offline); mnist and fashion-mnist are downloaded once; "
                             "mnist-t10k reads the MNIST test files from --data-dir")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder with t10k-*-ubyte.gz for --dataset mnist-t10k (default: the MNIST cache)")


def select_device(name):
    """Apply --device (or, without it, ``XPNET_DEVICE``, else the CPU) and return the device in use.

    An error names the fix that fits where the device came from: ``--device
    cpu`` for the option (``XPNET_DEVICE=cpu`` would not win over it).
    """
    if name is None:
        return backend.set_device(os.environ.get("XPNET_DEVICE") or "cpu")
    try:
        return backend.set_device(name)
    except backend.DeviceError as exc:
        raise backend.DeviceError(str(exc).replace("XPNET_DEVICE=cpu", "--device cpu")) from None
