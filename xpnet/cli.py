"""The command line: ``xpnet train``, ``xpnet info``, ``xpnet bench report``, ``xpnet experiment``, ``xpnet search``.

Mistakes in the arguments, missing data or an unusable device end with one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import __version__
from .recipes import DATASETS, DEFAULT_EPOCHS, MODELS

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_common_options(parser, dataset_default="digits"):
    """--device, --seed, --dataset: shared by train, experiment and search."""
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default=None,
                        help="cpu, gpu or auto (default: $XPNET_DEVICE, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, shuffles and dropout (default 0)")
    parser.add_argument("--dataset", choices=DATASETS, default=dataset_default,
                        help=f"data set (default {dataset_default}: embedded, offline)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with t10k-*-ubyte.gz for --dataset mnist-t10k (default: the MNIST cache)")


def build_parser():
    parser = _Parser(prog="xpnet", description="The networks of 'Deep Learning from Scratch' on CPU or CUDA GPU.")
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser("train", help="train a network and report its test accuracy")
    train.add_argument("--model", choices=MODELS, default="simple_convnet")
    add_common_options(train)
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="passes over the training set (default: 40 on digits, 20 on mnist-t10k, 10 on the others)")
    train.add_argument("--batch-size", type=_positive_int, default=100)
    train.add_argument("--optimizer", type=str.lower, choices=OPTIMIZERS, default="adam")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default 0.001; with --resume, the checkpoint's)")
    train.add_argument("--save", metavar="PATH", help="checkpoint (.npz) written after every epoch and on Ctrl-C")
    train.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save")
    train.add_argument("--plot", metavar="PATH", help="loss and accuracy curves as a PNG (needs matplotlib)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    commands.add_parser("info", help="versions, devices, and why the GPU is unusable where it is")

    bench = commands.add_parser("bench", help="benchmark reports")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", parser_class=_Parser)
    report = bench_commands.add_parser("report", help="Markdown tables and a speedup plot from pytest-benchmark JSON",
                                       add_help=False)
    report.add_argument("args", nargs=argparse.REMAINDER)

    for name, help_text in (("experiment", "the book's questions as experiments with pictures"),
                            ("search", "hyperparameter search with Optuna")):
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    # argparse's REMAINDER does not take a leading option ('search --trials 4'): forward such argv untouched.
    forwarded = 2 if argv[:2] == ["bench", "report"] else 1 if argv[:1] in (["experiment"], ["search"]) else 0
    args = parser.parse_args(argv[:forwarded] if forwarded else argv)
    if forwarded:
        args.args = argv[forwarded:]
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            return train(args)
        if args.command == "info":
            return info()
        if args.command == "bench":
            if args.bench_command != "report":
                parser.exit(2, "xpnet bench: error: the subcommand is 'report' (see xpnet bench report --help)\n")
            from .benchreport import main as report_main

            return report_main(args.args)
        if args.command == "experiment":
            from .experiments import main as experiment_main

            return experiment_main(args.args)
        if args.command == "search":
            from .search import main as search_main

            return search_main(args.args)
    except KeyboardInterrupt:
        print("xpnet: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, RuntimeError, FloatingPointError) as exc:
        print(f"xpnet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc):
    """An error as one line: its ``summary`` where it has one (DatasetError), else its lines joined."""
    summary = getattr(exc, "summary", None)
    if summary:
        return summary
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def select_device(name):
    """Apply --device (or XPNET_DEVICE) and return the device in use."""
    from . import backend

    return backend.set_device(name if name is not None else os.environ.get("XPNET_DEVICE") or "cpu")


def train(args):
    from . import backend
    from .checkpoint import load_checkpoint
    from .plot import require_matplotlib, plot_training
    from .recipes import build_network, load_dataset
    from .trainer import Trainer

    if args.plot:
        require_matplotlib()  # fail before training, not after
    device = select_device(args.device)
    backend.seed(args.seed)
    (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, data_dir=args.data_dir)
    epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    network = build_network(args.model, x_train.shape[1:], int(t_train.max()) + 1)
    say = (lambda *a: None) if args.quiet else print
    lr = args.lr
    if lr is None and not (args.resume and load_checkpoint(args.resume).optimizer_state):
        lr = 0.001  # a resumed run keeps the checkpoint's learning rate, where it has one
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=epochs, mini_batch_size=args.batch_size,
                      optimizer=args.optimizer, optimizer_param=None if lr is None else {"lr": lr},
                      verbose=not args.quiet, seed=args.seed, checkpoint_path=args.save, resume=args.resume)
    say(f"xpnet {__version__}: {args.model} on {args.dataset} ({len(x_train)} train / {len(x_test)} test), "
        f"device {device}{_device_name(device)}, {args.optimizer} lr={trainer.optimizer.lr:g}, batch {args.batch_size}")
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    per_epoch = sum(trainer.epoch_times) / max(len(trainer.epoch_times), 1)
    print(f"test accuracy {trainer.test_acc_list[-1]:.4f} (train {trainer.train_acc_list[-1]:.4f}) after "
          f"{trainer.current_epoch} epochs; {per_epoch:.2f} s per epoch on {device}, {elapsed:.1f} s in all")
    if args.save:
        print(f"checkpoint: {args.save}")
    if args.plot:
        plot_training(trainer, args.plot, title=f"{args.model} on {args.dataset} ({device})")
        print(f"plot: {args.plot}")
    return 0


def _device_name(device):
    from . import backend

    if device == "cpu":
        return ""
    index = int(device.split(":")[1])
    return f" ({backend.gpu_devices()[index]['name']})"


def info():
    from . import backend

    versions = backend.library_versions()
    reason = backend.gpu_unavailable_reason()
    if versions["cupy"] and reason:  # installed, but no driver or device: say which CuPy, and why it is idle
        versions["cupy"] += f" (installed; no usable GPU: {reason})"
    print(f"xpnet        {__version__}")
    print(f"python       {sys.version.split()[0]}")
    for name in ("numpy", "cupy", "cuda_runtime", "cuda_driver"):
        print(f"{name:<12} {versions[name] or 'not available'}")
    print(f"default      {os.environ.get('XPNET_DEVICE') or 'cpu'} (XPNET_DEVICE)")
    from . import threads

    print(f"threads      {threads.get_num_threads()} on the CPU ({threads.num_threads_source()}); "
          f"BLAS: {threads.blas_info()}")
    print("devices      cpu")
    for gpu in backend.gpu_devices():
        print(f"             gpu:{gpu['index']}  {gpu['name']}, {gpu['memory_bytes'] / 2**30:.0f} GiB, "
              f"compute capability {gpu['compute_capability']}")
    if reason:
        print(f"gpu          unusable: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
