"""Trainer: the book's training loop, made exact, observable and safe to interrupt."""

from __future__ import annotations

import json
import math
import time

import numpy as np

from .backend import get_array_module, host_rng, synchronize, to_device, to_numpy

__all__ = ["Trainer", "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


class Trainer:
    """Train a network with mini-batches, the book's ``Trainer`` with the same signature.

    Parameters (the book's)
    ----------
    network : any object with ``params``, ``gradient(x, t)``, ``loss``, ``accuracy``
    x_train, t_train, x_test, t_test : arrays; kept where they are (the host,
        normally), each mini-batch is moved to the network's device once
    epochs : full passes over the training set
    mini_batch_size : examples per step; the last batch of an epoch may be smaller
    optimizer : a name ('SGD', 'Momentum', 'Nesterov', 'AdaGrad', 'RMSprop',
        'Adam', 'AdamW') or an optimizer object
    optimizer_param : keyword arguments for a named optimizer, e.g. {'lr': 0.01}
    evaluate_sample_num_per_epoch : evaluate accuracies on the first this many
        examples of each set (None: all)
    verbose : a tqdm progress bar per epoch (epoch, loss, examples per second)
        and a summary line per epoch

    Beyond the book (keyword-only)
    ------------------------------
    seed : seeds the shuffling (default: drawn from xpnet's generator, so
        ``xpnet.seed(n)`` makes a run repeatable)
    checkpoint_path : write a checkpoint there after every epoch, and on
        Ctrl-C; the file is replaced atomically
    resume : a checkpoint to continue from (parameters, optimizer state, epoch)
    log_every : steps between reads of the loss from the device (each read is
        a synchronization with the GPU); NaN or infinite losses are found
        at those reads and at the end of each epoch

    Fixed relative to the book: an epoch is one shuffled pass over the
    training set without replacement (the book samples every batch with
    replacement and counts epochs in floats, which can skip evaluations), and
    accuracies are measured with dropout off.

    After ``train()``: ``train_loss_list`` (one float per step),
    ``train_acc_list`` and ``test_acc_list`` (one per epoch), ``epoch_times``
    (seconds per epoch, evaluation excluded).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None, verbose=True,
                 *, seed=None, checkpoint_path=None, resume=None, log_every=20):
        from .optimizer import get_optimizer

        _check_data("training", x_train, t_train)
        _check_data("test", x_test, t_test)
        if int(epochs) < 1 or int(mini_batch_size) < 1:
            raise ValueError(f"epochs and mini_batch_size must be >= 1, got {epochs} and {mini_batch_size}")
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs, self.batch_size = int(epochs), int(mini_batch_size)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        if isinstance(optimizer, str):
            self.optimizer = get_optimizer(optimizer, **(optimizer_param if optimizer_param is not None else {"lr": 0.01}))
        else:
            self.optimizer = optimizer
        self.seed = int(host_rng().integers(2**31)) if seed is None else int(seed)
        self.checkpoint_path = checkpoint_path
        self.log_every = max(1, int(log_every))
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = math.ceil(self.train_size / self.batch_size)
        self.current_epoch = 0
        self.current_iter = 0
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []
        self.epoch_times = []
        _check_labels(network, x_train, t_train)
        if resume is not None:
            self.load_checkpoint(resume)

    # --- one step ----------------------------------------------------------------

    def train_step(self, x_batch, t_batch):
        """One forward, backward and update; returns the loss as a 0-d array on the device."""
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        return self.network.last_layer.loss

    def _batches(self, epoch):
        """Index arrays of one shuffled pass; the order depends only on (seed, epoch)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.train_size)
        return [order[i:i + self.batch_size] for i in range(0, self.train_size, self.batch_size)]

    # --- the loop -----------------------------------------------------------------

    def train(self):
        """Run the remaining epochs; on Ctrl-C write a checkpoint (if a path was given) and re-raise."""
        try:
            while self.current_epoch < self.epochs:
                self._train_epoch()
                if self.checkpoint_path is not None:
                    self.save_checkpoint(self.checkpoint_path)
        except KeyboardInterrupt:
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
                self._say(f"interrupted: checkpoint of epoch {self.current_epoch} written to {self.checkpoint_path}")
            raise
        if self.verbose:
            self._say(f"=============== Final Test Accuracy ===============\ntest acc: {self.test_acc_list[-1]:.4f}")
        return self

    def _train_epoch(self):
        epoch = self.current_epoch + 1
        xp = get_array_module(self.x_train)
        bar = _progress(self.iter_per_epoch, f"epoch {epoch}/{self.epochs}", self.verbose)
        pending, losses = [], []  # device losses not yet read, and those read
        start, seen = time.perf_counter(), 0
        for step, index in enumerate(self._batches(epoch), start=1):
            index = xp.asarray(index) if xp is not np else index
            device = self.network.device
            loss = self.train_step(to_device(self.x_train[index], device), to_device(self.t_train[index], device))
            pending.append(loss)
            seen += len(index)
            if step % self.log_every == 0 or step == self.iter_per_epoch:
                losses += self._read_losses(pending, first_step=self.current_iter + step - len(pending) + 1)
                pending = []
                if bar is not None:
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix({"loss": f"{losses[-1]:.4f}", "ex/s": f"{rate:,.0f}"})
            if bar is not None:
                bar.update(1)
        synchronize()
        self.epoch_times.append(time.perf_counter() - start)
        if bar is not None:
            bar.close()
        self.current_iter += self.iter_per_epoch
        self.current_epoch = epoch
        self.train_loss_list += losses
        self._evaluate()

    def _read_losses(self, pending, first_step):
        xp = get_array_module(*pending)
        values = to_numpy(xp.stack(pending)).astype(float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = first_step + int(bad[0])
            kept = f"; the last good checkpoint, {self.checkpoint_path}, is unchanged" if self.checkpoint_path else ""
            raise TrainingDivergedError(
                f"the loss became {values[bad[0]]} at step {step} (epoch {self.current_epoch + 1}); "
                f"try a smaller learning rate{kept}"
            )
        return values.tolist()

    def _evaluate(self):
        n = self.evaluate_sample_num_per_epoch
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            x_train, t_train, x_test, t_test = x_train[:n], t_train[:n], x_test[:n], t_test[:n]
        train_acc = self.network.accuracy(x_train, t_train, batch_size=max(self.batch_size, 100))
        test_acc = self.network.accuracy(x_test, t_test, batch_size=max(self.batch_size, 100))
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        if self.verbose:
            recent = self.train_loss_list[-self.iter_per_epoch:]
            self._say(f"epoch {self.current_epoch}/{self.epochs}: loss {np.mean(recent):.4f}, "
                      f"train acc {train_acc:.4f}, test acc {test_acc:.4f}, {self.epoch_times[-1]:.2f} s")

    def _say(self, text):
        if self.verbose:
            from tqdm import tqdm

            tqdm.write(text)

    # --- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, path):
        """Parameters, optimizer state, epoch and history, in one atomic .npz (no pickle)."""
        from .checkpoint import save_checkpoint

        history = {"train_loss_list": self.train_loss_list, "train_acc_list": self.train_acc_list,
                   "test_acc_list": self.test_acc_list, "epoch_times": self.epoch_times}
        save_checkpoint(path, self.network.state(), optimizer=self.optimizer, epoch=self.current_epoch,
                        seed=self.seed, history=json.dumps(history))

    def load_checkpoint(self, path):
        """Continue from a checkpoint: it may come from another device than this network's."""
        from .checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path)
        self.network.load_state(checkpoint.params, where=str(path))
        if checkpoint.optimizer_state:
            mine = type(self.optimizer).__name__
            if checkpoint.optimizer_name and checkpoint.optimizer_name != mine:
                raise ValueError(f"{path}: the checkpoint holds the state of {checkpoint.optimizer_name}, "
                                 f"but this run uses {mine}; resume with the same optimizer")
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.current_epoch = int(checkpoint.epoch)
        self.current_iter = self.current_epoch * self.iter_per_epoch
        self.seed = int(checkpoint.meta.get("seed", self.seed))
        history = json.loads(checkpoint.meta.get("history", "{}"))
        self.train_loss_list = history.get("train_loss_list", [])
        self.train_acc_list = history.get("train_acc_list", [])
        self.test_acc_list = history.get("test_acc_list", [])
        self.epoch_times = history.get("epoch_times", [])


def _check_data(what, x, t):
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"{what} data: {x.shape[0]} examples but {t.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{what} data is empty")


def _check_labels(network, x, t):
    """Once, on the host: labels are valid class indices (or one-hot rows) for the network's output."""
    classes = network.predict(x[:1]).shape[1]
    labels = to_numpy(t)
    if labels.ndim == 2:
        if labels.shape[1] != classes:
            raise ValueError(f"one-hot labels have {labels.shape[1]} columns but the network has {classes} outputs")
        return
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices or one-hot rows, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels run from {labels.min()} to {labels.max()}, but the network has {classes} outputs")


def _progress(total, desc, verbose):
    if not verbose:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
