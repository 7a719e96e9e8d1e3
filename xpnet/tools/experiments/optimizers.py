"""optimizers: SGD, Momentum, AdaGrad, RMSprop and Adam on the same network and on a 2-D function (the book, 6.1).

Two measurements, both through ``xpnet.optimizer``:

* Paths on f(x, y) = x²/20 + y² from (-7, 2), 30 updates each, with the
  book's learning rates (SGD 0.95, Momentum 0.1, AdaGrad 1.5, Adam 0.3;
  RMSprop, not in that figure, 0.1). Reported: f at the end (unitless).
* Training the book's comparison network, MultiLayerNet with 4 hidden
  layers of 100 ReLU units, batches of 128, about 2,000 steps (whole epochs), each optimizer with its default
  learning rate (SGD, Momentum, AdaGrad and RMSprop 0.01, Adam 0.001), from
  the same initial weights and the same shuffles. Reported: the training
  loss (cross entropy) as the mean of each epoch's steps, that of the last
  epoch, the final train and test accuracy (fractions) and the seconds per
  epoch.
"""

from __future__ import annotations

import numpy as np

from xpnet import backend
from xpnet.backend import DEFAULT_DTYPE
from xpnet.nets import MultiLayerNet
from xpnet.optimizer import get_optimizer

from ..plot import require_matplotlib
from .common import Result, epoch_losses, epoch_time, epochs_for_steps, load_data, train

NAME = "optimizers"
DESCRIPTION = "SGD, Momentum, AdaGrad, RMSprop and Adam: paths on x²/20 + y² and loss curves of one network"
STEPS = 2000  # the book's max_iterations
EPOCHS, QUICK_EPOCHS = f"enough for about {STEPS:,} steps, the book's", 2
# name -> (learning rate on the network: the optimizer's default, learning rate on f(x, y): the book's figure)
OPTIMIZERS = {"SGD": (0.01, 0.95), "Momentum": (0.01, 0.1), "AdaGrad": (0.01, 1.5), "RMSprop": (0.01, 0.1),
              "Adam": (0.001, 0.3)}
START, PATH_STEPS = (-7.0, 2.0), 30
BATCH_SIZE = 128


def f(x, y):
    """The book's test function, elongated along x: f(x, y) = x²/20 + y²."""
    return x ** 2 / 20.0 + y ** 2


def path(optimizer, steps=PATH_STEPS):
    """The points (steps + 1, 2) visited by ``optimizer`` on f from START; the arithmetic on the current device."""
    params = {"x": backend.to_device(np.array([START[0]], DEFAULT_DTYPE)),
              "y": backend.to_device(np.array([START[1]], DEFAULT_DTYPE))}
    points = [START]
    for _ in range(steps):
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        optimizer.update(params, grads)
        points.append((float(backend.to_numpy(params["x"])[0]), float(backend.to_numpy(params["y"])[0])))
    return np.array(points)


def run(args):
    data = load_data(args, flatten=True)
    (x_train, t_train), (x_test, _) = data
    classes = int(t_train.max()) + 1
    if args.epochs is None:
        args.epochs = epochs_for_steps(STEPS, len(x_train), BATCH_SIZE)
    rows, paths, losses, test_curves = [], {}, {}, {}
    for name, (lr, path_lr) in OPTIMIZERS.items():
        points = path(get_optimizer(name, lr=path_lr))
        backend.seed(args.seed)  # the same initial weights for every optimizer
        network = MultiLayerNet(x_train.shape[1], [100] * 4, classes)
        trainer = train(network, data, args, name, lr, BATCH_SIZE)
        paths[name], losses[name], test_curves[name] = points, epoch_losses(trainer), trainer.test_acc_list
        rows.append({"optimizer": name, "lr": lr, "final_loss": losses[name][-1],
                     "train_acc": trainer.train_acc_list[-1], "test_acc": trainer.test_acc_list[-1],
                     "epoch_s": epoch_time(trainer), "path_lr": path_lr, "path_f": float(f(*points[-1]))})
        print(f"  {name}: last-epoch loss {rows[-1]['final_loss']:.2e}, test accuracy {rows[-1]['test_acc']:.4f}",
              flush=True)
    columns = [("optimizer", "optimizer", None), ("lr", "lr", "g"), ("final_loss", "last-epoch loss", ".2e"),
               ("train_acc", "train acc", ".4f"), ("test_acc", "test acc", ".4f"), ("epoch_s", "s/epoch", ".3f"),
               ("path_lr", "lr on f", "g"), ("path_f", f"f after {PATH_STEPS} steps", ".2e")]
    settings = {"network": "MultiLayerNet, 4 hidden layers of 100 ReLU units, He initial weights",
                "batch_size": BATCH_SIZE, "epochs": args.epochs, "steps": trainer.current_iter,
                "steps_per_epoch": trainer.iter_per_epoch,
                "train_examples": len(x_train), "test_examples": len(x_test),
                "function": "f(x, y) = x^2/20 + y^2", "start": list(START), "path_steps": PATH_STEPS}
    extra = {"paths": paths, "train_loss_per_epoch": losses, "test_acc": test_curves}
    return Result(plot(rows, paths, losses, test_curves, trainer.iter_per_epoch, args), columns, rows, settings, extra)


def plot(rows, paths, losses, test_curves, steps_per_epoch, args):
    plt = require_matplotlib()
    fig = plt.figure(figsize=(15, 8.5))
    grid = fig.add_gridspec(2, len(paths), height_ratios=(1, 1.3))
    xs, ys = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 200))
    for i, (name, points) in enumerate(paths.items()):
        ax = fig.add_subplot(grid[0, i])
        ax.contour(xs, ys, f(xs, ys), levels=np.geomspace(0.05, 25, 12), colors="0.7", linewidths=0.7)
        points = np.asarray(points)
        ax.plot(points[:, 0], points[:, 1], "o-", color="tab:red", ms=3, lw=1)
        ax.plot(0, 0, "+", color="k", ms=10)
        ax.set(xlim=(-10, 10), ylim=(-5, 5), xlabel="x", title=f"{name} (lr {rows[i]['path_lr']:g})")
        if i == 0:
            ax.set_ylabel("y")
    ax_loss = fig.add_subplot(grid[1, :3])
    ax_acc = fig.add_subplot(grid[1, 3:])
    for row in rows:
        name = row["optimizer"]
        steps = np.arange(1, len(losses[name]) + 1) * steps_per_epoch
        ax_loss.plot(steps, losses[name], lw=1.2, label=f"{name} (lr {row['lr']:g})")
        ax_acc.plot(range(1, len(test_curves[name]) + 1), test_curves[name], lw=1.2, label=name)
    ax_loss.set(xlabel="step", ylabel="training loss (cross entropy)", yscale="log",
                title=f"training loss, mean of each epoch ({steps_per_epoch} steps)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3, which="both")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    fig.suptitle(f"Optimizers: paths on f(x, y) = x²/20 + y² from {START} ({PATH_STEPS} steps), and MultiLayerNet "
                 f"4×100 on {args.dataset} (batch {BATCH_SIZE}, {args.device})")
    fig.tight_layout()
    return fig
