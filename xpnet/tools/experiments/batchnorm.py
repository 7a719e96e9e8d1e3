"""batchnorm: does batch normalization make training indifferent to the initial weights, and what does it cost? (6.3)

The book's batch_norm_test: MultiLayerNetExtend with 5 hidden layers of 100
ReLU units, with and without batch normalization after each hidden Affine,
trained on the first 1,000 training examples with SGD (lr 0.01, batches of
100) for 20 epochs, from initial weights of each of 16 standard deviations
``logspace(0, -4, 16)`` (1 down to 0.0001); both networks of a scale start
from the same weights. A run whose loss becomes NaN or infinite is stopped
and reported as diverged (the book's run goes on at chance level).
Measured: the training accuracy (a fraction, on the 1,000 examples) after
every epoch, the final test accuracy, and the seconds per epoch (training
steps only; the median over the epochs after the first).
"""
from __future__ import annotations

import numpy as np

from xpnet import backend
from xpnet.nets import MultiLayerNetExtend

from ..plot import require_matplotlib
from .common import Result, epoch_time, load_data, train

NAME = "batchnorm"
DESCRIPTION = "training accuracy with and without batch normalization for 16 initial weight scales, and its cost"
EPOCHS, QUICK_EPOCHS = 20, 2
TRAIN_SIZE, SCALES, QUICK_SCALES = 1000, 16, 2


def run(args):
    data = load_data(args, flatten=True, train_size=TRAIN_SIZE)
    (x_train, t_train), (x_test, _) = data
    scales = np.logspace(0, -4, QUICK_SCALES if args.quick else SCALES)
    rows, curves = [], {}
    for scale in scales:
        row = {"weight_init_std": float(scale)}
        for use_batchnorm, key in ((True, "bn"), (False, "plain")):
            backend.seed(args.seed)
            network = MultiLayerNetExtend(x_train.shape[1], [100] * 5, int(t_train.max()) + 1,
                                          weight_init_std=float(scale), use_batchnorm=use_batchnorm)
            trainer = train(network, data, args, "SGD", 0.01, 100, allow_divergence=True)
            curves[f"{scale:.3g} {key}"] = trainer.train_acc_list
            finished = trainer.diverged_epoch is None
            row.update({f"{key}_train_acc": trainer.train_acc_list[-1] if finished else None,
                        f"{key}_test_acc": trainer.test_acc_list[-1] if finished else None,
                        f"{key}_epoch_s": epoch_time(trainer), f"{key}_diverged_epoch": trainer.diverged_epoch})
        row["cost"] = row["bn_epoch_s"] / row["plain_epoch_s"] if row["bn_epoch_s"] and row["plain_epoch_s"] else None
        rows.append(row)
        print(f"  std {scale:.3g}: train accuracy {_accuracy(row, 'bn')} with batch norm, "
              f"{_accuracy(row, 'plain')} without", flush=True)
    columns = [("weight_init_std", "initial W std", ".2e"), ("bn_train_acc", "train acc BN", ".3f"),
               ("plain_train_acc", "train acc plain", ".3f"), ("bn_test_acc", "test acc BN", ".3f"),
               ("plain_test_acc", "test acc plain", ".3f"), ("bn_epoch_s", "s/epoch BN", ".4f"),
               ("plain_epoch_s", "s/epoch plain", ".4f"), ("cost", "BN/plain time", ".2f")]
    settings = {"network": "MultiLayerNetExtend, 5 hidden layers of 100 ReLU units", "optimizer": "SGD",
                "lr": 0.01, "batch_size": 100, "epochs": args.epochs, "train_examples": len(x_train),
                "test_examples": len(x_test), "scales": [float(s) for s in scales]}
    return Result(plot(rows, curves, args, len(x_train)), columns, rows, settings, {"train_acc": curves})


def _accuracy(row, key):
    epoch = row[f"{key}_diverged_epoch"]
    return f"{row[f'{key}_train_acc']:.3f}" if epoch is None else f"none (diverged in epoch {epoch})"


def plot(rows, curves, args, train_size):
    plt = require_matplotlib()
    cols = 4 if len(rows) > 4 else len(rows)
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.7 * nrows + 1.0), sharex=True, sharey=True,
                             squeeze=False)
    for ax, row in zip(axes.flat, rows):
        scale, notes = row["weight_init_std"], []
        for key, style, color, label in (("bn", "-", "tab:blue", "BN"), ("plain", "--", "tab:orange", "plain")):
            accuracy, diverged = curves[f"{scale:.3g} {key}"], row[f"{key}_diverged_epoch"]
            ax.plot(range(1, len(accuracy) + 1), accuracy, style, color=color, lw=1.5)
            if diverged:
                ax.plot(diverged, 0.03, "x", color=color, ms=8, mew=2)
                notes.append(f"{label} diverged (epoch {diverged})")
            else:
                notes.append(f"{label} {row[f'{key}_epoch_s'] * 1e3:.1f} ms/epoch")
        # the cost of batch norm in each title, where it hides no curve
        ax.set_title(f"initial W std {scale:.2g}\n" + ", ".join(notes), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("train accuracy")
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color="tab:blue", lw=1.5), plt.Line2D([], [], color="tab:orange", ls="--", lw=1.5),
               plt.Line2D([], [], color="0.3", ls="none", marker="x", ms=8, mew=2)]
    labels = ["with batch normalization (BN)", "without (plain)", "diverged: the loss became NaN or infinite"]
    fig.legend(handles, labels,
               loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.965), frameon=False)
    fig.suptitle(f"Batch normalization: MultiLayerNetExtend 5×100, SGD lr 0.01, {args.epochs} epochs on "
                 f"{train_size} examples of {args.dataset} ({args.device})")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig
