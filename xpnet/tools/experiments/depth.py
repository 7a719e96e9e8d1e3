"""depth: does a deeper MultiLayerNet learn better, and what does each layer cost? (the book, 6 and 8.2)

MultiLayerNet with 1 to 8 hidden layers of 100 ReLU units (He initial
weights), trained with Adam (lr 0.001, batches of 100) for the same number
of epochs, ``--repeats`` times with seeds SEED, SEED+1, ... Measured: the
final train and test accuracy (fractions, mean and standard deviation over
the repeats) and the seconds per epoch (training steps only, evaluation
excluded; the median over the epochs after the first, averaged over the repeats).
"""

from __future__ import annotations

import numpy as np

from xpnet.nets import MultiLayerNet

from ..args import positive_int
from ..plot import require_matplotlib
from .common import Result, epoch_time, load_data, seeds, train

NAME = "depth"
DESCRIPTION = "train and test accuracy and seconds per epoch of MultiLayerNet with 1 to 8 hidden layers"
EPOCHS, QUICK_EPOCHS = 30, 2
DEPTHS, QUICK_DEPTHS = tuple(range(1, 9)), (1, 3)
WIDTH, REPEATS = 100, 3


def add_options(parser):
    parser.add_argument("--max-depth", type=positive_int, default=None,
                        help=f"deepest network, in hidden layers (default {DEPTHS[-1]})")


def run(args):
    depths = tuple(range(1, args.max_depth + 1)) if args.max_depth else QUICK_DEPTHS if args.quick else DEPTHS
    repeats = args.repeats
    data = load_data(args, flatten=True)
    (x_train, t_train), _ = data
    rows, curves = [], {}
    for depth in depths:
        train_acc, test_acc, seconds = [], [], []
        for seed, seeded in seeds(args):
            network = MultiLayerNet(x_train.shape[1], [WIDTH] * depth, int(t_train.max()) + 1)
            trainer = train(network, data, seeded, "Adam", 0.001)
            train_acc.append(trainer.train_acc_list[-1])
            test_acc.append(trainer.test_acc_list[-1])
            seconds.append(epoch_time(trainer))
            if seed == args.seed:
                curves[str(depth)] = {"train_acc": trainer.train_acc_list, "test_acc": trainer.test_acc_list}
        rows.append({"hidden_layers": depth, "params": sum(int(p.size) for p in network.params.values()),
                     "train_acc": float(np.mean(train_acc)), "train_acc_std": float(np.std(train_acc)),
                     "test_acc": float(np.mean(test_acc)), "test_acc_std": float(np.std(test_acc)),
                     "epoch_s": float(np.mean(seconds))})
        print(f"  {depth} hidden layer{'s' if depth > 1 else ''}: test accuracy {rows[-1]['test_acc']:.4f}", flush=True)
    columns = [("hidden_layers", "hidden layers", "d"), ("params", "parameters", ","),
               ("train_acc", "train acc", ".4f"), ("test_acc", "test acc", ".4f"),
               ("test_acc_std", "test std", ".4f"), ("epoch_s", "s/epoch", ".3f")]
    settings = {"network": f"MultiLayerNet, hidden layers of {WIDTH} ReLU units, He initial weights",
                "optimizer": "Adam", "lr": 0.001, "batch_size": 100, "epochs": args.epochs, "repeats": repeats,
                "train_examples": len(x_train), "test_examples": len(data[1][0])}
    return Result(plot(rows, curves, args, repeats), columns, rows, settings, {"curves": curves})


def plot(rows, curves, args, repeats):
    plt = require_matplotlib()
    depths = [r["hidden_layers"] for r in rows]
    fig, (ax_acc, ax_curve, ax_time) = plt.subplots(1, 3, figsize=(14, 4.2))
    ax_acc.errorbar(depths, [r["train_acc"] for r in rows], [r["train_acc_std"] for r in rows], fmt="o-",
                    capsize=3, label="train")
    ax_acc.errorbar(depths, [r["test_acc"] for r in rows], [r["test_acc_std"] for r in rows], fmt="s-",
                    capsize=3, label="test")
    ax_acc.set(xlabel="hidden layers", ylabel="final accuracy",
               title=f"after {args.epochs} epochs (mean ± std of {repeats})")
    ax_acc.set_xticks(depths)
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(curves)))
    for color, (depth, curve) in zip(colors, curves.items()):
        epochs = range(1, len(curve["test_acc"]) + 1)
        ax_curve.plot(epochs, curve["test_acc"], color=color, label=f"{depth}")
    ax_curve.set(xlabel="epoch", ylabel="test accuracy", title=f"test accuracy per epoch (seed {args.seed})")
    ax_curve.legend(title="hidden layers", ncol=2, fontsize="small")
    ax_curve.grid(alpha=0.3)
    ax_time.bar(depths, [r["epoch_s"] * 1e3 for r in rows], color="tab:gray")
    ax_time.set(xlabel="hidden layers", ylabel="ms per epoch", title="training time per epoch")
    ax_time.set_xticks(depths)
    ax_time.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Depth: MultiLayerNet (hidden layers of {WIDTH}, Adam) on {args.dataset} ({args.device})")
    fig.tight_layout()
    return fig
