"""weight-init: how the initial weights shape the activations, and whether the network then learns (the book, 6.2).

Activations: the book's figure. 1,000 random inputs of 100 values (standard
normal) go through 5 hidden layers of 100 units (MultiLayerNet's Affine and
activation layers, biases zero) with weights of standard deviation 0.01,
Xavier's sqrt(1/n) or He's sqrt(2/n), under sigmoid and under ReLU. Shown:
the histogram of each layer's 100,000 activation values over [0, 1] (the
book's 30 bins; ReLU's exact zeros, about half, left out as the book's
y-limit does); reported: each layer's standard deviation and the fraction
of exact zeros.

Training: MultiLayerNet with 4 hidden layers of 100 and the same six
(activation, initial weights) pairs, SGD with lr 0.01, batches of 128,
about 2,000 steps (the book's weight_init_compare, which trains ReLU only).
Reported: the training loss (cross entropy) as the mean of each epoch's
steps, that of the last epoch, and the final test accuracy (a fraction).
"""

from __future__ import annotations

import numpy as np

from xpnet import backend
from xpnet.nets import MultiLayerNet

from ..plot import require_matplotlib
from .common import Result, epoch_losses, epochs_for_steps, load_data, train

NAME = "weight-init"
DESCRIPTION = "activation histograms of 5 layers and training loss for std 0.01, Xavier and He, sigmoid and ReLU"
STEPS, BATCH_SIZE = 2000, 128
EPOCHS, QUICK_EPOCHS = f"enough for about {STEPS:,} steps, the book's", 2
INITS = {"std 0.01": 0.01, "Xavier": "xavier", "He": "he"}
ACTIVATIONS = ("sigmoid", "relu")
LAYERS, UNITS, INPUTS = 5, 100, 1000


def activations(activation, weight_init_std, x):
    """The output of each hidden activation layer, as host arrays (N, UNITS), for input ``x`` (N, UNITS)."""
    network = MultiLayerNet(UNITS, [UNITS] * LAYERS, 10, activation=activation, weight_init_std=weight_init_std)
    out, kept = backend.to_device(x, network.device), []
    for name, layer in network.layers.items():
        out = layer.forward(out)
        if name.startswith("Activation_function"):
            kept.append(backend.to_numpy(out))
    return kept


def run(args):
    inputs = backend.host_rng().standard_normal((INPUTS, UNITS)).astype(np.float32)
    data = load_data(args, flatten=True)
    (x_train, t_train), _ = data
    if args.epochs is None:
        args.epochs = epochs_for_steps(STEPS, len(x_train), BATCH_SIZE)
    rows, histograms, losses = [], {}, {}
    for activation in ACTIVATIONS:
        for label, init in INITS.items():
            key = f"{activation}, {label}"
            backend.seed(args.seed)
            layers = activations(activation, init, inputs)
            # the book's histograms over [0, 1]; ReLU's exact zeros (about half) would dwarf the rest
            histograms[key] = [np.histogram(a[a != 0], bins=30, range=(0, 1))[0].tolist() for a in layers]
            backend.seed(args.seed)
            network = MultiLayerNet(x_train.shape[1], [100] * 4, int(t_train.max()) + 1, activation=activation,
                                    weight_init_std=init)
            trainer = train(network, data, args, "SGD", 0.01, BATCH_SIZE)
            losses[key] = epoch_losses(trainer)
            row = {"activation": activation, "init": label}
            row.update({f"std{i}": float(a.std()) for i, a in enumerate(layers, start=1)})
            row.update({f"zeros{i}": float(np.mean(a == 0)) for i, a in enumerate(layers, start=1)})
            row.update(final_loss=losses[key][-1], test_acc=trainer.test_acc_list[-1])
            rows.append(row)
            print(f"  {key}: layer-5 std {row['std5']:.2e}, final loss {row['final_loss']:.4f}", flush=True)
    columns = [("activation", "activation", None), ("init", "initial W", None)]
    columns += [(f"std{i}", f"std L{i}", ".2e") for i in range(1, LAYERS + 1)]
    columns += [("zeros5", "zeros L5", ".2f"), ("final_loss", "last-epoch loss", ".4f"),
                ("test_acc", "test acc", ".4f")]
    settings = {"histograms": f"{INPUTS} standard-normal inputs, {LAYERS} layers of {UNITS}, 30 bins over [0, 1]",
                "network": "MultiLayerNet, 4 hidden layers of 100", "optimizer": "SGD", "lr": 0.01,
                "batch_size": BATCH_SIZE, "epochs": args.epochs, "steps": trainer.current_iter,
                "steps_per_epoch": trainer.iter_per_epoch}
    extra = {"histograms": histograms, "train_loss_per_epoch": losses}
    return Result(plot(histograms, losses, rows, trainer.iter_per_epoch, args), columns, rows, settings, extra)


def plot(histograms, losses, rows, steps_per_epoch, args):
    plt = require_matplotlib()
    fig = plt.figure(figsize=(17, 12))
    outer = fig.add_gridspec(1, 2, width_ratios=(LAYERS, 2.6), wspace=0.15)
    grid = outer[0].subgridspec(len(histograms), LAYERS, hspace=0.45, wspace=0.12)
    edges = np.linspace(0, 1, 31)
    for r, (key, counts) in enumerate(histograms.items()):
        top = max(max(c) for c in counts) * 1.08 or 1
        zeros = [rows[r][f"zeros{i}"] for i in range(1, LAYERS + 1)]
        for i, c in enumerate(counts):
            ax = fig.add_subplot(grid[r, i])
            ax.stairs(c, edges, fill=True, color="tab:blue" if key.startswith("sigmoid") else "tab:red")
            ax.set(xlim=(0, 1), ylim=(0, top))
            ax.tick_params(labelsize=7)
            if key.startswith("relu"):
                ax.text(0.97, 0.9, f"zeros: {zeros[i]:.0%}", transform=ax.transAxes, ha="right", fontsize=7)
            if r == 0:
                ax.set_title(f"layer {i + 1}")
            if i == 0:
                ax.set_ylabel(key.replace(", ", "\n"), fontsize=10)
            else:
                ax.set_yticklabels([])
            if r == len(histograms) - 1:
                ax.set_xlabel("activation value")
    ax_loss = fig.add_subplot(outer[1])
    colors = {"sigmoid": plt.cm.Blues(np.linspace(0.5, 0.9, 3)), "relu": plt.cm.Reds(np.linspace(0.5, 0.9, 3))}
    for i, (key, loss) in enumerate(losses.items()):
        activation = key.split(",")[0]
        steps = np.arange(1, len(loss) + 1) * steps_per_epoch
        ax_loss.plot(steps, loss, "--" if activation == "sigmoid" else "-",
                     color=colors[activation][i % 3], lw=1.4, label=f"{key}: {rows[i]['final_loss']:.3f}")
    # curves that never leave the chance level lie on top of each other: name them
    chance = np.log(10)  # the loss of a uniform guess among the 10 classes
    stuck = [key for key, row in zip(losses, rows) if row["final_loss"] > 0.95 * chance]
    if stuck:
        ax_loss.text(0.7, 0.94, f"at the chance level (ln 10 ≈ {chance:.2f}) to the end:\n" + "\n".join(stuck),
                     transform=ax_loss.transAxes, ha="center", va="top", fontsize=9)
    ax_loss.set(xlabel="step", ylabel="training loss (cross entropy)", yscale="log",
                title=f"training loss, MultiLayerNet 4×100, SGD lr 0.01\n"
                      f"(mean of each epoch of {steps_per_epoch} steps)")
    ax_loss.legend(title="last-epoch loss", fontsize="small")
    ax_loss.grid(alpha=0.3, which="both")
    fig.suptitle(f"Initial weights: activations of 5 layers of 100 for {INPUTS:,} random inputs (counts in 30 bins "
                 f"over [0, 1]; ReLU's exact zeros left out, their share noted), and training on {args.dataset} "
                 f"({args.device})")
    fig.subplots_adjust(left=0.05, right=0.98, top=0.91, bottom=0.05)
    return fig
