"""Trainer: the book's training loop, made exact, observable and safe to interrupt."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
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
        Ctrl-C; the file is replaced atomically. Ctrl-C takes effect after
        the step under way (after an epoch's last step, once the epoch is
        evaluated), so the checkpoint holds whole steps; a second Ctrl-C
        stops at once and keeps the previous checkpoint
    resume : a checkpoint to continue from (parameters, optimizer state,
        epoch, and the step within it after Ctrl-C). The optimizer keeps the
        checkpoint's hyperparameters except those named in ``optimizer_param``
        (all of them for an optimizer object): ``{"lr": 0.001}`` changes the
        learning rate and keeps, say, Adam's beta1 and beta2
    log_every : steps between reads of the loss from the device (each read is
        a synchronization with the GPU); NaN or infinite losses are found
        at those reads and at the end of each epoch, NaN or infinite
        parameters at the end of each epoch, before any checkpoint
    progress : the progress bar on stderr, apart from the summary lines
        (default: as ``verbose``); ``xpnet train`` draws it only on a terminal

    Fixed relative to the book: an epoch is one shuffled pass over the
    training set without replacement (the book samples every batch with
    replacement and counts epochs in floats, which can skip evaluations), and
    accuracies are measured with dropout off.

    After ``train()``: ``train_loss_list`` (one float per step: the
    cross-entropy of the batch, read from the forward pass of the training
    step, without a weight-decay penalty; the book runs the forward pass
    again for it, penalty included),
    ``train_acc_list`` and ``test_acc_list`` (one per epoch), ``epoch_times``
    (seconds per epoch, evaluation excluded).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None, verbose=True,
                 *, seed=None, checkpoint_path=None, resume=None, log_every=20, progress=None):
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
        self.progress = verbose if progress is None else progress
        if isinstance(optimizer, str):
            self.optimizer = get_optimizer(optimizer, **(optimizer_param if optimizer_param is not None else {"lr": 0.01}))
        elif optimizer_param is not None:
            raise ValueError(f"optimizer_param is for an optimizer given by name; {type(optimizer).__name__} was given "
                             f"as an object, so set its hyperparameters there")
        else:
            self.optimizer = optimizer
        # On resume these hyperparameters override the checkpoint's; the others come from it.
        self._given = tuple(optimizer_param) if optimizer_param is not None else (
            () if isinstance(optimizer, str) else tuple(self.optimizer.hyperparameters))
        self.seed = int(host_rng().integers(2**31)) if seed is None else int(seed)
        self.checkpoint_path = checkpoint_path
        self.log_every = max(1, int(log_every))
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = math.ceil(self.train_size / self.batch_size)
        self.current_epoch = 0
        self.current_iter = 0
        self.epoch_step = 0  # steps done of the epoch under way (after a resume from Ctrl-C, where it goes on)
        self._pending, self._epoch_losses = [], []  # its losses not yet read from the device, and those read
        self._epoch_started, self._resumed_seconds = None, 0.0  # its clock, and its seconds before a resume
        self._interrupt = _DeferredInterrupt()
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []
        self.epoch_times = []
        _check_labels(network, x_train, t_train, "training")
        _check_labels(network, x_test, t_test, "test")
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
            with self._interrupt:
                while self.current_epoch < self.epochs:
                    self._train_epoch()
                    if self.checkpoint_path is not None:
                        self.save_checkpoint(self.checkpoint_path)
                    self._interrupt.raise_if_requested()
        except KeyboardInterrupt:
            if self.checkpoint_path is not None:
                self._checkpoint_on_interrupt()
            raise
        if self.verbose:
            self._say(f"=============== Final Test Accuracy ===============\ntest acc: {self.test_acc_list[-1]:.4f}")
        return self

    def _checkpoint_on_interrupt(self):
        if self._interrupt.in_step:
            self._say(f"interrupted during a step: the checkpoint {self.checkpoint_path} is left as it was")
            return
        self._flush_losses()
        self._check_parameters(self.current_iter + self.epoch_step)
        self.save_checkpoint(self.checkpoint_path)
        self._say(f"interrupted: checkpoint of epoch {self.current_epoch} and {self.epoch_step} steps of the next "
                  f"written to {self.checkpoint_path}; --resume continues from there")

    def _train_epoch(self):
        epoch = self.current_epoch + 1
        xp = get_array_module(self.x_train)
        bar = _progress(self.iter_per_epoch, f"epoch {epoch}/{self.epochs}", self.progress)
        if bar is not None and self.epoch_step:
            bar.update(self.epoch_step)
        start = self._epoch_started = time.perf_counter() - self._resumed_seconds
        self._resumed_seconds = 0.0
        seen = min(self.epoch_step * self.batch_size, self.train_size)
        for index in self._batches(epoch)[self.epoch_step:]:
            index = xp.asarray(index) if xp is not np else index
            device = self.network.device
            with self._interrupt.step():  # Ctrl-C waits for the step and its bookkeeping
                loss = self.train_step(to_device(self.x_train[index], device), to_device(self.t_train[index], device))
                self._pending.append(loss)
                self.epoch_step += 1
                seen += len(index)
                step = self.epoch_step
                if step % self.log_every == 0 or step == self.iter_per_epoch:
                    self._flush_losses()
                    if bar is not None:
                        rate = seen / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix({"loss": f"{self._epoch_losses[-1]:.4f}", "ex/s": f"{rate:,.0f}"})
                if bar is not None:
                    bar.update(1)
            if step < self.iter_per_epoch:  # after the last step the epoch is finished and checkpointed first
                self._interrupt.raise_if_requested()
        with self._interrupt.step():  # a finished epoch is checkpointed with its accuracies
            synchronize()
            seconds = time.perf_counter() - start
            self._check_parameters(self.current_iter + self.iter_per_epoch)
            self.epoch_times.append(seconds)
            if bar is not None:
                bar.close()
            self.current_iter += self.iter_per_epoch
            self.current_epoch, self.epoch_step = epoch, 0
            self.train_loss_list += self._epoch_losses
            self._epoch_losses = []
            self._evaluate()

    def _flush_losses(self):
        """Read the losses still on the device (one synchronization) into the epoch's list."""
        if self._pending:
            first_step = self.current_iter + self.epoch_step - len(self._pending) + 1
            self._epoch_losses += self._read_losses(self._pending, first_step)
            self._pending = []

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

    def _check_parameters(self, step):
        """Before a checkpoint: every parameter finite (a loss is computed before its update, so the
        losses alone miss an update that breaks the weights on the last step read)."""
        params = self.network.params
        xp = get_array_module(*params.values())
        if bool(xp.stack([xp.isfinite(p).all() for p in params.values()]).all()):
            return
        bad = [name for name, p in params.items() if not bool(xp.isfinite(p).all())]
        kept = f"; the last good checkpoint, {self.checkpoint_path}, is unchanged" if self.checkpoint_path else ""
        raise TrainingDivergedError(
            f"{', '.join(bad)} became NaN or infinite by the update of step {step} (epoch {self.current_epoch + 1}); "
            f"try a smaller learning rate{kept}"
        )

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

        history = {"train_loss_list": self.train_loss_list + self._epoch_losses, "train_acc_list": self.train_acc_list,
                   "test_acc_list": self.test_acc_list, "epoch_times": self.epoch_times}
        save_checkpoint(path, self.network.state(), optimizer=self.optimizer, epoch=self.current_epoch,
                        step=self.epoch_step, seed=self.seed, epoch_seconds=self._unfinished_epoch_seconds(),
                        history=json.dumps(history))

    def _unfinished_epoch_seconds(self):
        """Seconds spent on the epoch under way (0 between epochs): a resume adds its own to them."""
        if not self.epoch_step:
            return 0.0
        if self._epoch_started is None:  # resumed, not yet trained
            return self._resumed_seconds
        return time.perf_counter() - self._epoch_started

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
            given = {name: getattr(self.optimizer, name) for name in self._given}
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
            for name, value in given.items():
                if value != getattr(self.optimizer, name):
                    self._say(f"resuming with {name}={value:g} (the checkpoint's was {getattr(self.optimizer, name):g})")
                    setattr(self.optimizer, name, value)
        self.current_epoch = int(checkpoint.epoch)
        self.epoch_step = int(checkpoint.meta.get("step", 0))
        if not 0 <= self.epoch_step <= self.iter_per_epoch:  # all of them: Ctrl-C came before the epoch was closed
            raise ValueError(f"{path}: the checkpoint stopped after step {self.epoch_step} of an epoch, but this run "
                             f"has {self.iter_per_epoch} steps per epoch; resume with the same data and batch size")
        self.current_iter = self.current_epoch * self.iter_per_epoch
        self.seed = int(checkpoint.meta.get("seed", self.seed))
        history = json.loads(checkpoint.meta.get("history", "{}"))
        losses = history.get("train_loss_list", [])
        done = len(losses) - self.epoch_step  # the losses of the unfinished epoch continue in _epoch_losses
        self.train_loss_list, self._epoch_losses = losses[:done], losses[done:]
        self.train_acc_list = history.get("train_acc_list", [])
        self.test_acc_list = history.get("test_acc_list", [])
        self.epoch_times = history.get("epoch_times", [])
        self._resumed_seconds = float(checkpoint.meta.get("epoch_seconds", 0.0)) if self.epoch_step else 0.0
        self._epoch_started = None


class _DeferredInterrupt:
    """Ctrl-C (SIGINT) during a training step raises KeyboardInterrupt after the step, not inside it.

    A second Ctrl-C raises at once; ``in_step`` then tells that a step was
    cut short. Outside the main thread, where Python delivers no signals,
    nothing is deferred.
    """

    def __init__(self):
        self.requested = self.in_step = False
        self._previous = None

    def __enter__(self):
        self.requested = self.in_step = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame):
        if self.requested or not self.in_step:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def step(self):
        self.in_step = True
        yield
        self.in_step = False  # not reached when the step raised: it stays marked as cut short

    def raise_if_requested(self):
        if self.requested:
            raise KeyboardInterrupt


def _check_data(what, x, t):
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"{what} data: {x.shape[0]} examples but {t.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{what} data is empty")


def _check_labels(network, x, t, what):
    """Once, on the host: labels are valid class indices (or one-hot rows) for the network's output."""
    classes = network.predict(x[:1]).shape[1]
    labels = to_numpy(t)
    if labels.ndim == 2:
        if labels.shape[1] != classes:
            raise ValueError(f"{what} one-hot labels have {labels.shape[1]} columns but the network has {classes} outputs")
        return
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{what} labels must be integer class indices or one-hot rows, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"{what} labels run from {labels.min()} to {labels.max()}, but the network has {classes} outputs")


def _progress(total, desc, verbose):
    if not verbose:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
