"""pooling: what SimpleConvNet's 2x2 max pooling buys: parameters, time and accuracy (the book, 7.5).

SimpleConvNet (conv - relu - pool - affine - relu - affine, as
``xpnet train --model simple_convnet`` builds it: 30 filters, 3x3 with
padding 1 on the 8x8 digits, 5x5 on larger images; He initial weights)
against the same network with the pooling layer dropped: the convolution is
unchanged and the first Affine takes all of its outputs, 4x the inputs that
pooling leaves (so 4x its weights). Dropping the layer, rather than a
stride-2 convolution, keeps the convolution itself identical, so the
difference is the pooling alone. Both start from the same filters.

Trained with Adam (lr 0.001, batches of 100) for as many epochs as
``xpnet train`` runs on the data set, ``--repeats`` times with
seeds SEED, SEED+1, ... Measured: parameters, seconds per epoch (training
steps only; the median over epochs after the first), and the final train
and test accuracy (fractions, mean over the repeats).
"""

from __future__ import annotations

import numpy as np

from xpnet.recipes import DEFAULT_EPOCHS, build_network

from ..plot import require_matplotlib
from .common import Result, epoch_time, load_data, seeds, train

NAME = "pooling"
DESCRIPTION = "SimpleConvNet with and without its pooling layer: parameters, seconds per epoch, accuracy"
EPOCHS, QUICK_EPOCHS = "as xpnet train: 40 on digits, 20 on mnist-t10k, 10 on the others", 2
REPEATS = 3


def run(args):
    data = load_data(args, flatten=False)
    (x_train, t_train), (x_test, _) = data
    input_dim, classes = x_train.shape[1:], int(t_train.max()) + 1
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    variants = {
        "with pooling": lambda: build_network("simple_convnet", input_dim, classes),
        "without pooling": lambda: build_network("simple_convnet", input_dim, classes, pool=False),
    }
    rows, curves = [], {}
    for name, build in variants.items():
        runs = []
        for seed, seeded in seeds(args):
            network = build()
            trainer = train(network, data, seeded, "Adam", 0.001)
            runs.append((trainer.train_acc_list[-1], trainer.test_acc_list[-1], epoch_time(trainer)))
            if seed == args.seed:
                curves[name] = {"train_acc": trainer.train_acc_list, "test_acc": trainer.test_acc_list}
        train_acc, test_acc, seconds = np.mean(runs, axis=0)
        rows.append({"network": name, "params": sum(int(p.size) for p in network.params.values()),
                     "affine_inputs": int(network.params["W2"].shape[0]), "epoch_s": float(seconds),
                     "train_acc": float(train_acc), "test_acc": float(test_acc),
                     "test_acc_std": float(np.std([r[1] for r in runs]))})
        print(f"  {name}: test accuracy {test_acc:.4f}, {seconds:.3f} s per epoch", flush=True)
    columns = [("network", "network", None), ("params", "parameters", ","), ("affine_inputs", "Affine1 inputs", ","),
               ("epoch_s", "s/epoch", ".3f"), ("train_acc", "train acc", ".4f"), ("test_acc", "test acc", ".4f"),
               ("test_acc_std", "test std", ".4f")]
    conv = network.layers["Conv1"]
    conv_param = {"filter_num": conv.W.shape[0], "filter_size": conv.W.shape[2], "pad": conv.pad, "stride": conv.stride}
    settings = {"conv_param": conv_param, "hidden_size": 100, "weight_init_std": "he", "optimizer": "Adam",
                "lr": 0.001, "batch_size": 100, "epochs": args.epochs, "repeats": args.repeats,
                "train_examples": len(x_train), "test_examples": len(x_test),
                "without pooling": "the Pool1 layer dropped; Affine1 takes all conv outputs (4x)"}
    return Result(plot(rows, curves, args), columns, rows, settings, {"curves": curves})


def plot(rows, curves, args):
    plt = require_matplotlib()
    fig, (ax_acc, ax_params, ax_time) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": (2, 1, 1)})
    for row, color in zip(rows, ("tab:blue", "tab:orange")):
        name, curve = row["network"], curves[row["network"]]
        epochs = range(1, len(curve["test_acc"]) + 1)
        ax_acc.plot(epochs, curve["train_acc"], "--", color=color, label=f"{name}, train")
        ax_acc.plot(epochs, curve["test_acc"], "-", color=color,
                    label=f"{name}, test (final {row['test_acc']:.3f}, mean of {args.repeats})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"accuracy per epoch (seed {args.seed})")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    names = [r["network"] for r in rows]
    ax_params.bar(names, [r["params"] for r in rows], color=["tab:blue", "tab:orange"])
    ax_params.set(ylabel="parameters", title="parameters")
    ax_time.bar(names, [r["epoch_s"] * 1e3 for r in rows], color=["tab:blue", "tab:orange"])
    ax_time.set(ylabel="ms per epoch", title="training time per epoch")
    for ax, key, fmt in ((ax_params, "params", "{:,}"), (ax_time, "epoch_s", "{:.0f} ms")):
        for i, r in enumerate(rows):
            value = r[key] * 1e3 if key == "epoch_s" else r[key]
            ax.text(i, value, fmt.format(value), ha="center", va="bottom")
        ax.set_ylim(0, 1.15 * max(r[key] * (1e3 if key == "epoch_s" else 1) for r in rows))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Pooling: SimpleConvNet with and without its 2×2 max pooling on {args.dataset}, Adam "
                 f"({args.device})")
    fig.tight_layout()
    return fig
