"""``xpnet book run path/to/script.py [args]``: a chapter script of the book, unchanged, on xpnet.

The script runs as ``__main__`` in this process, with ``sys.argv`` set to
the script and its arguments, and with, for its duration:

* the folder of packages named like the book's (``common``, ``dataset``) first
  on ``sys.path``, then the script's own folder, so that ``common.layers``,
  ``dataset.mnist`` and the script's neighbours (``simple_convnet.py``) import;
* the device of ``--device`` or ``XPNET_DEVICE`` (the networks of ``common``
  compute there; a script's own NumPy arrays stay NumPy);
* ``pickle.load`` and ``pickle.loads`` that rebuild arrays and plain
  containers only (:mod:`xpnet.safe_pickle`), unless ``--trust-pickles``;
* with ``--mnist-t10k``, ``dataset.mnist.load_mnist`` reading MNIST's 10,000
  test images split 8,000 / 2,000 (it says so on stderr);
* without a display, or with ``--out``, ``plt.show()`` writing PNG files
  (:mod:`xpnet.tools.book.figures`);
* with ``--seed N``, NumPy's global generator (``np.random.choice`` and the
  like in the script), Python's ``random`` and xpnet's generators (initial
  weights, dropout masks) seeded with N, so that a run can be repeated; the
  book's scripts draw unseeded, and so does a run without it;
* BLAS at one thread (:func:`xpnet.threads.one_blas_thread`), as inside
  xpnet's own networks: the book's networks call the layers one at a time,
  and each call would otherwise set BLAS to one thread and back (a
  TwoLayerNet loss on 3 examples took 61 us so, 53 us with the hold).

Everything is put back afterwards, so ``run`` can be called again in the
same process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import random
import runpy
import sys
import traceback
from pathlib import Path

from xpnet import backend, threads

from ..args import device, non_negative_int
from . import SHIM

FIGURES_BACKEND = "module://xpnet.tools.book.figures"


def _seed(text):
    """An integer from 0 to 2**32 - 1, what ``np.random.seed`` takes."""
    value = non_negative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32 (NumPy's global generator takes 32 bits), got {text}")
    return value


def add_arguments(parser):
    parser.add_argument("--device", type=device, default=None, metavar="|".join(backend.VALID_DEVICES),
                        help="where common's networks compute: cpu, gpu (gpu:N for device N) or auto "
                             "(default: $XPNET_DEVICE, else cpu)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write the figures of plt.show() to DIR/<script>-figure<N>.png, display or not "
                             "(default: files in the working directory when there is no display)")
    parser.add_argument("--mnist-t10k", action="store_true",
                        help="offline: load_mnist returns MNIST's 10,000 test images split 8,000 (train) / "
                             "2,000 (test) instead of MNIST, and says so")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="with --mnist-t10k: the folder holding t10k-images-idx3-ubyte.gz and "
                             "t10k-labels-idx1-ubyte.gz (default: xpnet's MNIST cache)")
    parser.add_argument("--seed", type=_seed, default=None, metavar="N",
                        help="seed NumPy's global generator, Python's random and xpnet's generators with N, "
                             "for a run that can be repeated (default: unseeded, as the book's scripts are)")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="let pickle.load run what the files name (default: arrays and plain containers only)")
    parser.add_argument("script", help="the book's script, e.g. ch07/train_convnet.py (run from its folder for "
                                       "its relative paths, such as params.pkl)")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="the script's own arguments")


def run(args) -> int:
    """Run ``args.script`` as the book would, on xpnet; the exit status is the script's."""
    from xpnet import __version__, backend
    from xpnet.datasets import DatasetError

    script = Path(args.script)
    if not script.is_file():
        raise FileNotFoundError(f"no script {script}")
    chosen = contextlib.nullcontext(backend.get_device()) if args.device is None else backend.using_device(args.device)
    with chosen as device, book_environment(script, args, device):
        print(f"xpnet book run: {script} on {device}, with common/ and dataset/ from xpnet {__version__}",
              file=sys.stderr)
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exc:  # sys.exit(n), sys.exit() or sys.exit("message"), as Python itself ends them
            if exc.code is None or isinstance(exc.code, int):
                return exc.code or 0
            print(exc.code, file=sys.stderr)
            return 1
        except DatasetError as exc:
            hint = "" if args.mnist_t10k else "; offline, --mnist-t10k uses MNIST's 10,000 test images instead"
            print(f"xpnet book run: {script}: {getattr(exc, 'summary', None) or exc}{hint}", file=sys.stderr)
            return 1
        except Exception:
            traceback.print_exc()
            return 1
    return 0


@contextlib.contextmanager
def book_environment(script, args, device):
    """The book's import names, the script's argv and folder, safe pickles, MNIST and figures; all put back after."""
    folder = str(script.resolve().parent)
    saved_path, saved_argv = list(sys.path), list(sys.argv)
    saved_env = {name: os.environ.get(name) for name in ("XPNET_DEVICE", "XPNET_BOOK_MNIST", "MPLBACKEND",
                                                         "XPNET_BOOK_FIGURES")}
    saved_pickle = pickle.load, pickle.loads
    _forget_modules(lambda name, path: name.split(".")[0] in ("common", "dataset"))
    sys.path[:0] = [str(SHIM), folder]
    sys.argv = [str(script), *args.script_args]
    os.environ["XPNET_DEVICE"] = device  # for what the script starts
    if args.mnist_t10k:
        os.environ["XPNET_BOOK_MNIST"] = "t10k" + (f":{args.data_dir}" if args.data_dir else "")
    if not args.trust_pickles:
        pickle.load, pickle.loads = _safe_load, _safe_loads
    restore_backend = _figures_to_files(script, args.out) if args.out or not _has_display() else None
    try:
        with _seeded(args.seed), threads.one_blas_thread():
            yield
    finally:
        if restore_backend is not None:
            restore_backend()
        pickle.load, pickle.loads = saved_pickle
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sys.path[:], sys.argv[:] = saved_path, saved_argv
        _forget_modules(lambda name, path: name.split(".")[0] in ("common", "dataset") or path is not None and (
            path.startswith(str(SHIM)) or "." not in name and os.path.dirname(path) == folder))  # its neighbours


@contextlib.contextmanager
def _seeded(n):
    """NumPy's global generator, Python's random and xpnet's seeded with ``n`` (None: left alone); put back after."""
    if n is None:
        yield
        return
    import numpy as np

    saved = np.random.get_state(), random.getstate()
    np.random.seed(n)
    random.seed(n)
    try:
        with backend.seeded(n):
            yield
    finally:
        np.random.set_state(saved[0])
        random.setstate(saved[1])


def _safe_load(file, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=None):
    """pickle.load for the script: xpnet.safe_pickle.load, with pickle.load's keywords."""
    from xpnet.safe_pickle import load

    return load(file, encoding=encoding, errors=errors)


def _safe_loads(data, /, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=None):
    """pickle.loads for the script: xpnet.safe_pickle.loads, with pickle.loads' keywords."""
    from xpnet.safe_pickle import loads

    return loads(data, encoding=encoding, errors=errors)


def _has_display():
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _figures_to_files(script, out):
    """Select the figures backend, writing to ``out`` (default: the working directory); returns how to undo it."""
    folder = Path(out) if out else Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["XPNET_BOOK_FIGURES"] = str(folder / script.stem)
    figures = sys.modules.get("xpnet.tools.book.figures")  # imported by matplotlib only when the script draws
    if figures is not None:
        figures.written.clear()
    if "matplotlib.pyplot" in sys.modules:  # already imported here (a second run in one process)
        import matplotlib.pyplot as plt

        previous = plt.get_backend()
        plt.switch_backend(FIGURES_BACKEND)
        return lambda: plt.switch_backend(previous)
    if "matplotlib" in sys.modules:
        import matplotlib

        previous = matplotlib.get_backend()
        matplotlib.use(FIGURES_BACKEND)
        return lambda: matplotlib.use(previous)
    os.environ["MPLBACKEND"] = FIGURES_BACKEND  # read when the script imports matplotlib: nothing imported before
    return _agg_if_pyplot_was_imported


def _agg_if_pyplot_was_imported():
    """After a run that imported pyplot with the figures backend: Agg, what it would have had without a display."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].switch_backend("agg")


def _forget_modules(forget):
    for name, module in list(sys.modules.items()):
        if forget(name, getattr(module, "__file__", None)):
            del sys.modules[name]
