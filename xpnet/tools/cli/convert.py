"""``xpnet convert params.pkl params.npz``: the book's pickled weights as an xpnet parameter file.

The pickle is read by :mod:`xpnet.safe_pickle` (arrays and plain containers
only; nothing it names is called) and written with
:func:`xpnet.checkpoint.save_params`, in the pickle's dtypes. Weights of the
book's DeepConvNet (recognized by their names and ranks, or named with
``--model deep_convnet``) are converted for xpnet's inverted dropout, as
:meth:`xpnet.nets.DeepConvNet.convert_book_params` says; the file then loads
into xpnet's DeepConvNet with ``load_params`` and gives the book's scores.
"""

from __future__ import annotations

import sys

MODELS = ("auto", "deep_convnet", "none")
HELP = "the book's pickled weights as an xpnet .npz, safely"
DESCRIPTION = ("Read a pickle of the book's save_params (arrays and plain containers only: nothing it names is "
               "run) and write its parameters as an xpnet .npz, converted for xpnet's documented differences.")


def add_arguments(parser):
    parser.add_argument("source", help="a pickle the book's save_params wrote, e.g. ch07/params.pkl")
    parser.add_argument("dest", help="the .npz file to write (replaced atomically)")
    parser.add_argument("--model", choices=MODELS, default="auto",
                        help="deep_convnet: convert for xpnet's dropout; none: copy as is; auto (default): "
                             "deep_convnet for the book's DeepConvNet weights (W1..W8), else none")


def run(args) -> int:
    from xpnet.checkpoint import save_params
    from xpnet.nets import DeepConvNet
    from xpnet.safe_pickle import load_params

    params = load_params(args.source)
    model = args.model
    if model == "auto":
        model = "deep_convnet" if looks_like_deep_convnet(params) else "none"
    if model == "deep_convnet":
        params = DeepConvNet.convert_book_params(params)
        what = "the book's DeepConvNet: W8 scaled by 0.25 and b8 by 0.5 for xpnet's inverted dropout"
    else:
        what = "copied as they are"
    save_params(args.dest, params)
    shapes = ", ".join(f"{name} {tuple(array.shape)}" for name, array in params.items())
    print(f"{args.dest}: {len(params)} parameters from {args.source} ({what}): {shapes}", file=sys.stdout)
    return 0


def looks_like_deep_convnet(params):
    """W1..W6 filters (4-D), W7 and W8 matrices and b1..b8: the parameters of the book's DeepConvNet."""
    names = {f"{kind}{i}" for kind in "Wb" for i in range(1, 9)}
    if set(params) != names:
        return False
    return all(params[f"W{i}"].ndim == 4 for i in range(1, 7)) and params["W7"].ndim == params["W8"].ndim == 2
