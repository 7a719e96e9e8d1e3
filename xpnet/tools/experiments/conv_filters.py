"""conv-filters: what SimpleConvNet's first-layer filters look like before and after training (the book, 7.6).

SimpleConvNet as ``xpnet train --model simple_convnet`` builds it (30
filters, 3x3 with padding 1 on the 8x8 digits, 5x5 on larger images), but
with the book's initial weights of standard deviation 0.01
(``--weight-init-std``): with He's, about 0.47 for 3x3 filters, training
moves the filters by only about a fifth of their size and the filters after
look like those before. Trained with Adam (lr 0.001, batches of 100) for
as many epochs as ``xpnet train`` runs on the data set. Shown: the 30 filters of
Conv1 (channel 0) before and after training, each scaled to its own
range, dark for negative and light for positive weights; and the 30
feature maps (Conv1's output, before ReLU) of the first test image after
training. Reported: test accuracy, the standard deviation and mean absolute
value of the filter weights, and the relative change ‖W_after − W_before‖ /
‖W_before‖.
"""

from __future__ import annotations

import numpy as np

from xpnet.backend import to_device, to_numpy
from xpnet.recipes import DEFAULT_EPOCHS, build_network

from ..args import weight_init_std
from ..plot import require_matplotlib
from .common import Result, load_data, train

NAME = "conv-filters"
DESCRIPTION = "first-layer filters of SimpleConvNet before and after training, and the feature maps of one input"
EPOCHS, QUICK_EPOCHS = "as xpnet train: 40 on digits, 20 on mnist-t10k, 10 on the others", 2
WEIGHT_INIT_STD = 0.01  # the book's SimpleConvNet default


def add_options(parser):
    parser.add_argument("--weight-init-std", type=weight_init_std, default=WEIGHT_INIT_STD, metavar="STD",
                        help=f"initial weights' scale: a number, 'he' or 'xavier'")


def run(args):
    data = load_data(args, flatten=False)
    (x_train, t_train), (x_test, t_test) = data
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    network = build_network("simple_convnet", x_train.shape[1:], int(t_train.max()) + 1,
                            weight_init_std=args.weight_init_std)
    before = to_numpy(network.params["W1"]).copy()
    acc_before = network.accuracy(x_test, t_test)
    trainer = train(network, data, args, "Adam", 0.001)
    after = to_numpy(network.params["W1"]).copy()
    image = x_test[:1]
    maps = to_numpy(network.layers["Conv1"].forward(to_device(image, network.device)))[0]  # (FN, OH, OW)
    change = float(np.linalg.norm(after - before) / np.linalg.norm(before))
    rows = [{"stage": "before training", "test_acc": acc_before, "filter_std": float(before.std()),
             "filter_mean_abs": float(np.abs(before).mean()), "relative_change": 0.0},
            {"stage": f"after {args.epochs} epochs", "test_acc": trainer.test_acc_list[-1],
             "filter_std": float(after.std()), "filter_mean_abs": float(np.abs(after).mean()),
             "relative_change": change}]
    print(f"  test accuracy {acc_before:.4f} before, {trainer.test_acc_list[-1]:.4f} after; the filters moved by "
          f"{change:.3g} times their initial norm", flush=True)
    columns = [("stage", "stage", None), ("test_acc", "test acc", ".4f"), ("filter_std", "filter std", ".4f"),
               ("filter_mean_abs", "mean |W|", ".4f"), ("relative_change", "‖ΔW‖/‖W₀‖", ".3f")]
    settings = {"network": "SimpleConvNet (xpnet train's)", "weight_init_std": args.weight_init_std,
                "filters": list(before.shape), "optimizer": "Adam",
                "lr": 0.001, "batch_size": 100, "epochs": args.epochs, "train_examples": len(x_train),
                "test_examples": len(x_test), "feature_maps_of": f"test image 0 (label {int(t_test[0])})"}
    extra = {"filters_before": before[:, 0], "filters_after": after[:, 0], "feature_maps": maps}
    return Result(plot(before, after, image[0, 0], maps, int(t_test[0]), rows, args), columns, rows, settings, extra)


def plot(before, after, image, maps, label, rows, args):
    plt = require_matplotlib()
    count = before.shape[0]
    cols = 10 if count >= 10 else count
    grid_rows = -(-count // cols)
    fig = plt.figure(figsize=(12, 3.6 * grid_rows + 1.4))
    # a strip of its own for the title, so that it cannot run into the first row's
    head, top, middle, bottom = fig.subfigures(4, 1, height_ratios=(0.12, 1, 1, 1.1))
    head.suptitle(f"Convolution filters: SimpleConvNet on {args.dataset} ({args.device}), initial weight std "
                  f"{args.weight_init_std}; each tile scaled to its own range", fontsize=12, y=0.5, va="center")
    for sub, weights, row in ((top, before, rows[0]), (middle, after, rows[1])):
        title = (f"Conv1 filters {before.shape[2]}×{before.shape[3]}, {row['stage']} (test accuracy "
                 f"{row['test_acc']:.3f}; dark negative, light positive)")
        _tiles(sub, weights[:, 0], cols, "gray", title)
    left, right = bottom.subfigures(1, 2, width_ratios=(1, 5))
    ax = left.subplots()
    ax.imshow(image, cmap="gray_r", interpolation="nearest")
    ax.set(xticks=[], yticks=[], title=f"input (label {label})")
    _tiles(right, maps, cols, "viridis", f"its {count} feature maps after training (Conv1 output, before ReLU)")
    return fig


def _tiles(sub, images, cols, cmap, title):
    axes = sub.subplots(-(-len(images) // cols), cols, squeeze=False)
    for ax, img in zip(axes.flat, images):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
        if ax.get_images() == []:
            ax.set_visible(False)
    sub.suptitle(title, fontsize=10)
