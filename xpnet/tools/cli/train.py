"""``xpnet train``: train one of the book's networks on a named data set and report its test accuracy."""

from __future__ import annotations

import inspect
import sys
import time

from xpnet import __version__, backend, distributed
from xpnet.checkpoint import load_checkpoint
from xpnet.fileio import check_writable
from xpnet.optimizer import OPTIMIZERS
from xpnet.recipes import DATASETS, DEFAULT_EPOCHS, MODELS, build_network, load_dataset
from xpnet.trainer import Trainer

from ..args import add_common_options, positive_float, positive_int, select_device
from ..plot import plot_training, require_matplotlib

HELP = "train a network and report its test accuracy"
DESCRIPTION = ("Train one of the book's networks with mini-batches and report its accuracy on the test set. "
               "--save writes a checkpoint after every epoch and on Ctrl-C; --resume continues from it. "
               "Under `mpiexec -n N xpnet train ...` the N processes train one model together, each on its "
               "slice of every batch (see docs/distributed.md).")


def default_lr(optimizer):
    """The learning rate an optimizer class has by default (the book's: 0.01 for SGD, 0.001 for Adam)."""
    return inspect.signature(OPTIMIZERS[optimizer]).parameters["lr"].default


def _lr_defaults():
    by_lr = {}
    for name in OPTIMIZERS:
        by_lr.setdefault(default_lr(name), []).append(name)
    return "; ".join(f"{lr:g} for {', '.join(names)}" for lr, names in by_lr.items())


def add_arguments(parser):
    parser.add_argument("--model", choices=MODELS, default="simple_convnet",
                        help="simple_convnet and deep_convnet are the book's CNNs; mlp is MultiLayerNet "
                             "with two hidden layers of 100")
    add_common_options(parser)
    parser.set_defaults(seed=None)  # with --resume: the checkpoint's; otherwise 0
    parser.add_argument("--no-sync-batch-norm", action="store_true",
                        help="with several ranks, normalize by each rank's slice; cheaper, not the "
                             "single-process model")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="passes over the training set (default: "
                             + ", ".join(f"{n} on {d}" for d, n in DEFAULT_EPOCHS.items() if d in DATASETS) + ")")
    parser.add_argument("--batch-size", type=positive_int, default=100,
                        help="examples per training step; under mpiexec, on each rank: the global batch is N times it")
    parser.add_argument("--optimizer", type=str.lower, choices=list(OPTIMIZERS), default="adam",
                        help="the update rule (chapter 6)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"learning rate (default: the optimizer's own, {_lr_defaults()}; "
                             f"with --resume, the checkpoint's)")
    parser.add_argument("--save", metavar="PATH", help="checkpoint (.npz) written after every epoch and on Ctrl-C")
    parser.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save")
    parser.add_argument("--plot", metavar="PATH", help="loss and accuracy curves as a PNG (needs matplotlib)")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="a progress bar on stderr even when it is not a terminal "
                             "(default: a bar only on a terminal)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


# The class each --model builds, as checkpoints record it (``network`` in their metadata).
MODEL_OF_CLASS = {"SimpleConvNet": "simple_convnet", "DeepConvNet": "deep_convnet", "MultiLayerNet": "mlp"}


def check_model(checkpoint, model):
    """A checkpoint of another --model is named as such, before its shapes are compared."""
    held = MODEL_OF_CLASS.get(checkpoint.meta.get("network"))
    if held is not None and held != model:
        raise ValueError(f"{checkpoint.path}: the checkpoint holds a {held} (its {checkpoint.meta['network']}), "
                         f"not a {model}; resume with --model {held}")


def run(args):
    if args.plot:
        require_matplotlib()  # fail before training, not after
    comm = None
    if (distributed.launched_size() or 1) > 1:  # `mpiexec -n N xpnet train ...`: N ranks, one model
        comm = distributed.init(device=args.device)  # an uncaught error on any rank now aborts the job
        try:
            return _run(args, comm)
        except KeyboardInterrupt:
            raise  # after a stop every rank agreed on: they all leave
        except Exception as exc:  # the other ranks would wait in their next collective for ever
            print(f"xpnet train: error on rank {comm.rank} of {comm.size}: {exc}", file=sys.stderr, flush=True)
            distributed.abort_unless_zero(comm, 1)
            raise
    return _run(args, None)


def _run(args, comm):
    if comm is None:
        device = select_device(args.device)
        backend.seed(args.seed or 0)
    else:
        device = backend.get_device()
        distributed.seed_ranks(comm, args.seed or 0)  # dropout differs per rank; rank 0's weights are broadcast
    rank0 = comm is None or comm.rank == 0
    for path in (args.save, args.plot):
        if path and rank0:  # rank 0 alone writes
            check_writable(path)  # a missing, read-only or full place fails now, not after training
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        check_model(checkpoint, args.model)
    (x_train, t_train), (x_test, t_test) = _load_data(args, comm)
    epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    network = build_network(args.model, x_train.shape[1:], int(t_train.max()) + 1)
    lr = args.lr
    if lr is None and not (checkpoint is not None and checkpoint.optimizer_state):
        lr = default_lr(args.optimizer)  # a resumed run keeps the checkpoint's learning rate, where it has one
    progress = not args.quiet and (args.progress or sys.stderr.isatty())
    seed = args.seed if args.seed is not None or args.resume else 0
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=epochs, mini_batch_size=args.batch_size,
                      optimizer=args.optimizer, optimizer_param=None if lr is None else {"lr": lr},
                      verbose=not args.quiet, progress=progress, seed=seed, checkpoint_path=args.save,
                      resume=args.resume, comm=comm, sync_batch_norm=not args.no_sync_batch_norm)
    if not args.quiet and rank0:
        print(f"xpnet {__version__}: {args.model} on {args.dataset} ({len(x_train)} train / {len(x_test)} test), "
              f"device {device}{_device_name(device)}, {args.optimizer} lr={trainer.optimizer.lr:g}, "
              f"batch {_batch_text(args, comm)}{_ranks_text(comm)}", flush=True)
    start = time.perf_counter()
    try:
        trainer.train()
    except KeyboardInterrupt:
        if args.quiet and trainer.interrupt_note:  # where the work is, even when quiet
            print(trainer.interrupt_note, file=sys.stderr)
        raise
    elapsed = time.perf_counter() - start
    if not rank0:
        return 0
    per_epoch = sum(trainer.epoch_times) / max(len(trainer.epoch_times), 1)
    print(f"test accuracy {trainer.test_acc_list[-1]:.4f} (train {trainer.train_acc_list[-1]:.4f}) after "
          f"{trainer.current_epoch} epochs; {per_epoch:.2f} s per epoch on {device}, {elapsed:.1f} s in all")
    if args.save:
        print(f"checkpoint: {args.save}")
    if args.plot:
        plot_training(trainer, args.plot, title=f"{args.model} on {args.dataset} ({device})")
        print(f"plot: {args.plot}")
    return 0


def _load_data(args, comm):
    """The data set; under MPI the first rank of each node loads it first (a download fills the node's
    cache once), then the others read it from the cache."""
    data = None
    if comm is not None and comm.local_rank == 0:
        data = load_dataset(args.dataset, data_dir=args.data_dir)
    if comm is not None:
        comm.barrier()
    if data is None:
        data = load_dataset(args.dataset, data_dir=args.data_dir)
    return data


def _batch_text(args, comm):
    if comm is None:
        return str(args.batch_size)
    return f"{args.batch_size} per rank ({comm.size * args.batch_size} per step)"


def _ranks_text(comm):
    if comm is None:
        return ""
    route = "NCCL" if comm.uses_nccl else "MPI"
    return f", {comm.size} ranks ({route})"


def _device_name(device):
    if device == "cpu":
        return ""
    index = int(device.split(":")[1])
    return f" ({backend.gpu_devices()[index]['name']})"
