"""overfitting: a large network on a small training set, plain, with weight decay and with dropout (the book, 6.4).

The book's setting: the first 300 training examples, MultiLayerNet with 6
hidden layers of 100 ReLU units, SGD (lr 0.01, batches of 100) for 300
epochs (the book runs 201, and 301 for dropout, which learns slower); once
plain, once with weight decay (lambda 0.1 on every W, added to the loss as
0.5·lambda·ΣW²) and once with dropout (ratio 0.2 after each hidden
activation; MultiLayerNetExtend). All three start from the same
initial weights. Measured after every epoch: train accuracy (on the 300)
and test accuracy (on the whole test set), as fractions; reported: the
final values and the gap between them.
"""

from __future__ import annotations

from xpnet import backend
from xpnet.nets import MultiLayerNet, MultiLayerNetExtend

from ..plot import require_matplotlib
from .common import Result, load_data, train

NAME = "overfitting"
DESCRIPTION = "train and test accuracy of MultiLayerNet 6x100 on 300 examples: plain, weight decay 0.1, dropout 0.2"
EPOCHS, QUICK_EPOCHS = 300, 2
TRAIN_SIZE, HIDDEN = 300, [100] * 6
WEIGHT_DECAY, DROPOUT = 0.1, 0.2


def networks(input_size, output_size):
    """The three variants by name, each built from the same seed (so the same initial weights)."""
    yield "plain", lambda: MultiLayerNet(input_size, HIDDEN, output_size)
    yield f"weight decay {WEIGHT_DECAY:g}", lambda: MultiLayerNet(input_size, HIDDEN, output_size,
                                                                  weight_decay_lambda=WEIGHT_DECAY)
    yield f"dropout {DROPOUT:g}", lambda: MultiLayerNetExtend(input_size, HIDDEN, output_size, use_dropout=True,
                                                              dropout_ratio=DROPOUT)


def run(args):
    data = load_data(args, flatten=True, train_size=TRAIN_SIZE)
    (x_train, t_train), (x_test, _) = data
    rows, curves = [], {}
    for name, build in networks(x_train.shape[1], int(t_train.max()) + 1):
        backend.seed(args.seed)
        trainer = train(build(), data, args, "SGD", 0.01, 100)
        curves[name] = {"train_acc": trainer.train_acc_list, "test_acc": trainer.test_acc_list}
        train_acc, test_acc = trainer.train_acc_list[-1], trainer.test_acc_list[-1]
        rows.append({"network": name, "train_acc": train_acc, "test_acc": test_acc, "gap": train_acc - test_acc,
                     "best_test_acc": max(trainer.test_acc_list)})
        print(f"  {name}: train {train_acc:.4f}, test {test_acc:.4f}", flush=True)
    columns = [("network", "network", None), ("train_acc", "train acc", ".4f"), ("test_acc", "test acc", ".4f"),
               ("gap", "train - test", ".4f"), ("best_test_acc", "best test acc", ".4f")]
    settings = {"network": "MultiLayerNet, 6 hidden layers of 100 ReLU units, He initial weights",
                "optimizer": "SGD", "lr": 0.01, "batch_size": 100, "epochs": args.epochs,
                "train_examples": len(x_train), "test_examples": len(x_test),
                "weight_decay_lambda": WEIGHT_DECAY, "dropout_ratio": DROPOUT}
    return Result(plot(curves, args, len(x_train)), columns, rows, settings, {"curves": curves})


def plot(curves, args, train_size):
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.2), sharey=True)
    for ax, (name, curve) in zip(axes, curves.items()):
        epochs = range(1, len(curve["train_acc"]) + 1)
        ax.plot(epochs, curve["train_acc"], label="train")
        ax.plot(epochs, curve["test_acc"], label="test")
        gap = curve["train_acc"][-1] - curve["test_acc"][-1]
        ax.set(xlabel="epoch", title=f"{name} (final gap {gap:.3f})", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("accuracy")
    fig.suptitle(f"Overfitting: MultiLayerNet 6×100 on {train_size} training examples of {args.dataset}, "
                 f"SGD lr 0.01 ({args.device})")
    fig.tight_layout()
    return fig
