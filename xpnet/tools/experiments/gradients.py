"""backprop-vs-numerical: what one gradient costs by each method, and how closely the two agree (the book, 5.7).

The network is the book's TwoLayerNet: MultiLayerNet with one hidden layer,
whose width grows so that the number of parameters grows. For each width it
measures, on a batch of 3 training examples (the book's gradient check):

* the seconds of one gradient by backpropagation (``network.gradient``, the
  best of several calls) and by central differences
  (``network.numerical_gradient``: two losses per parameter);
* the largest absolute difference between the two gradients over all
  parameters, in float64 (the dtype a gradient check needs) and, for
  comparison, in float32 (xpnet's default), where the difference quotient
  loses about half its digits to rounding.
"""

from __future__ import annotations

import numpy as np

from xpnet.nets import MultiLayerNet

from ..args import positive_int_list
from ..plot import require_matplotlib
from .common import Result, load_data, time_call

NAME = "backprop-vs-numerical"
DESCRIPTION = "seconds of one gradient by backpropagation and by central differences, and their largest difference"
HIDDEN_SIZES = (1, 3, 10, 30, 100, 300, 1000)
QUICK_HIDDEN_SIZES = (2, 5)
BATCH = 3


def add_options(parser):
    parser.add_argument("--hidden-sizes", type=positive_int_list, default=None,
                        metavar="N,N,...", help=f"hidden-layer widths (default {','.join(map(str, HIDDEN_SIZES))})")


def max_difference(network, x, t):
    """Largest |backprop - numerical| over all gradient elements, and the seconds each method took."""
    backprop_s, grads = time_call(lambda: network.gradient(x, t), repeat=20)
    numerical_s, numerical = time_call(lambda: network.numerical_gradient(x, t))
    diff = max(float(abs(grads[k] - numerical[k]).max()) for k in grads)
    return diff, backprop_s, numerical_s


def run(args):
    sizes = args.hidden_sizes or (QUICK_HIDDEN_SIZES if args.quick else HIDDEN_SIZES)
    (x_train, t_train), _ = load_data(args, flatten=True)
    x, t = x_train[:BATCH], t_train[:BATCH]
    rows = []
    for hidden in sizes:
        row = {"hidden_size": hidden}
        for dtype in (np.float64, np.float32):
            network = MultiLayerNet(x.shape[1], [hidden], int(t_train.max()) + 1, dtype=dtype)
            diff, backprop_s, numerical_s = max_difference(network, x.astype(dtype), t)
            suffix = "" if dtype is np.float64 else "_float32"
            row["max_diff" + suffix] = diff
            if dtype is np.float64:
                row["params"] = sum(int(p.size) for p in network.params.values())
                row.update(backprop_s=backprop_s, numerical_s=numerical_s, ratio=numerical_s / backprop_s)
        rows.append(row)
        print(f"  hidden {hidden}: {row['params']:,} parameters, backprop {row['backprop_s'] * 1e3:.2f} ms, "
              f"numerical {row['numerical_s']:.3f} s", flush=True)
    columns = [("hidden_size", "hidden", "d"), ("params", "parameters", ","), ("backprop_s", "backprop s", ".2e"),
               ("numerical_s", "numerical s", ".2e"), ("ratio", "numerical/backprop", ",.0f"),
               ("max_diff", "max |diff| f64", ".1e"), ("max_diff_float32", "max |diff| f32", ".1e")]
    settings = {"network": "MultiLayerNet, one hidden layer (the book's TwoLayerNet), ReLU, He initial weights",
                "batch": BATCH, "hidden_sizes": list(sizes), "numerical_h": 1e-4,
                "backprop_repeats": "best of 20", "dtype": "float64 (float32 only for max_diff_float32)"}
    return Result(plot(rows, args), columns, rows, settings)


def plot(rows, args):
    plt = require_matplotlib()
    params = [r["params"] for r in rows]
    fig, (ax_time, ax_diff) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_time.loglog(params, [r["numerical_s"] for r in rows], "o-", label="numerical (central differences)")
    ax_time.loglog(params, [r["backprop_s"] for r in rows], "s-", label="backpropagation")
    ax_time.set(xlabel="parameters", ylabel="seconds per gradient", title="time of one gradient (batch of 3)")
    ax_time.legend()
    ax_time.grid(alpha=0.3, which="both")
    ax_diff.loglog(params, [r["max_diff"] for r in rows], "o-", label="float64")
    ax_diff.loglog(params, [r["max_diff_float32"] for r in rows], "s-", label="float32")
    ax_diff.set(xlabel="parameters", ylabel="max |backprop - numerical|", title="largest difference of the gradients")
    ax_diff.legend()
    ax_diff.grid(alpha=0.3, which="both")
    fig.suptitle(f"Backpropagation vs numerical gradient: TwoLayerNet on {args.dataset} ({args.device})")
    fig.tight_layout()
    return fig
