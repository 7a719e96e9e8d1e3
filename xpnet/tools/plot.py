"""Pictures of training runs (matplotlib is an optional extra: ``pip install 'xpnet[plot]'``)."""

from __future__ import annotations

from xpnet.fileio import atomic_write

__all__ = ["require_matplotlib", "plot_training"]


def require_matplotlib():
    """The pyplot module with a file-only backend, or an ImportError that says how to get it."""
    try:
        import matplotlib  # here, not at the top: matplotlib is an optional extra
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'xpnet[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(trainer, path, title=None):
    """Loss per step and accuracy per epoch of a finished :class:`~xpnet.trainer.Trainer`, as a PNG."""
    plt = require_matplotlib()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(range(1, len(trainer.train_loss_list) + 1), trainer.train_loss_list, lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    epochs = range(1, len(trainer.test_acc_list) + 1)
    ax_acc.plot(epochs, trainer.train_acc_list, "o-", label="train")
    ax_acc.plot(epochs, trainer.test_acc_list, "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path
