"""Trainer: the book's training loop, made exact, observable and safe to interrupt.

The loop is the book's: for each epoch, for each mini-batch, a training
step, then an evaluation. What the book does not do is in the modules
beside this one, each used here in a line or two: :mod:`.interrupt`
(Ctrl-C after the step under way), :mod:`.losses` (the losses read from
the device in batches), :mod:`.divergence` (NaN and infinity found with
their step), :mod:`.checkpointing` (save and resume, mid-epoch included),
:mod:`.progress` (the bar and the lines) and :mod:`.checks` (the data).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..backend import get_array_module, host_rng, synchronize, to_device
from ..optimizer import get_optimizer
from .checks import check_batch_size, check_counts, check_data, check_labels
from .checkpointing import EpochClock, load_training, save_training
from .divergence import LossWatch, TrainingDivergedError, check_parameters
from .interrupt import DeferredInterrupt
from .losses import EpochLosses, read_losses
from .progress import Progress

__all__ = ["Trainer", "TrainingDivergedError"]


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

    To change what one step does (say, combine gradients across processes
    before the update), override :meth:`train_step`; to change which
    examples an epoch visits, :meth:`_batches`.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None, verbose=True,
                 *, seed=None, checkpoint_path=None, resume=None, log_every=20, progress=None):
        check_data("training", x_train, t_train)
        check_data("test", x_test, t_test)
        check_counts(epochs=epochs, mini_batch_size=mini_batch_size)
        check_batch_size(mini_batch_size, x_train.shape[0])
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs, self.batch_size = int(epochs), int(mini_batch_size)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.progress = Progress(bar=verbose if progress is None else progress, lines=verbose)
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
        self.losses = EpochLosses()  # the losses of the epoch under way
        self.clock = EpochClock()  # its seconds, those before a resume included
        self._interrupt = DeferredInterrupt()
        self.watch = LossWatch()  # the divergence rule, on the losses as they are read
        self.interrupt_note = None  # after Ctrl-C: where the checkpoint is, or why there is none
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []
        self.epoch_times = []
        check_labels(network, x_train, t_train, "training")
        check_labels(network, x_test, t_test, "test")
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
            self.progress.abort()
            if self.checkpoint_path is not None:
                self._checkpoint_on_interrupt()
            raise
        except BaseException:
            self.progress.abort()  # the error's line starts on a line of its own, not after the bar
            raise
        self.progress.say(f"=============== Final Test Accuracy ===============\ntest acc: {self.test_acc_list[-1]:.4f}")
        return self

    def _train_epoch(self):
        epoch = self.current_epoch + 1
        xp = get_array_module(self.x_train)
        self.progress.start_epoch(self.iter_per_epoch, f"epoch {epoch}/{self.epochs}", done=self.epoch_step)
        self.clock.start()
        seen = min(self.epoch_step * self.batch_size, self.train_size)
        for index in self._batches(epoch)[self.epoch_step:]:
            index = xp.asarray(index) if xp is not np else index
            device = self.network.device
            with self._interrupt.step():  # Ctrl-C waits for the step and its bookkeeping
                with np.errstate(all="ignore"):  # a diverging step overflows: the rule says so in one line
                    loss = self.train_step(to_device(self.x_train[index], device),
                                           to_device(self.t_train[index], device))
                self.losses.add(loss)
                self.epoch_step += 1
                seen += len(index)
                step = self.epoch_step
                if step % self.log_every == 0 or step == self.iter_per_epoch:
                    self._flush_losses()
                    self.progress.step(self.losses.values[-1], seen / max(self.clock.elapsed(), 1e-9))
                else:
                    self.progress.step()
            if step < self.iter_per_epoch:  # after the last step the epoch is finished and checkpointed first
                self._interrupt.raise_if_requested()
        with self._interrupt.step():  # a finished epoch is checkpointed with its accuracies
            synchronize()
            seconds = self.clock.elapsed()
            check_parameters(self.network.params, self.current_iter + self.iter_per_epoch, epoch, self.checkpoint_path)
            self.watch.check_settled(self.current_iter + self.iter_per_epoch, epoch, self.checkpoint_path)
            self.epoch_times.append(seconds)
            self.progress.end_epoch()
            self.current_iter += self.iter_per_epoch
            self.current_epoch, self.epoch_step = epoch, 0
            self.train_loss_list += self.losses.values
            self.losses = EpochLosses()
            self._evaluate()

    def _flush_losses(self):
        """Read the losses still on the device (one synchronization) into the epoch's list."""
        if self.losses.pending:
            first_step = self.current_iter + self.epoch_step - len(self.losses.pending) + 1
            self.losses.values += self._read_losses(self.losses.take_pending(), first_step)

    def _read_losses(self, pending, first_step):
        values = read_losses(pending)
        self.watch.check(values, first_step, self.current_epoch + 1, self.checkpoint_path)
        return values

    def _evaluate(self):
        n = self.evaluate_sample_num_per_epoch
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            x_train, t_train, x_test, t_test = x_train[:n], t_train[:n], x_test[:n], t_test[:n]
        train_acc = self.network.accuracy(x_train, t_train, batch_size=max(self.batch_size, 100))
        test_acc = self.network.accuracy(x_test, t_test, batch_size=max(self.batch_size, 100))
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        if self.progress.lines:
            recent = self.train_loss_list[-self.iter_per_epoch:]
            self.progress.say(f"epoch {self.current_epoch}/{self.epochs}: loss {np.mean(recent):.4f}, "
                              f"train acc {train_acc:.4f}, test acc {test_acc:.4f}, {self.epoch_times[-1]:.2f} s")

    # --- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, path):
        """Parameters, optimizer state, epoch and history, in one atomic .npz (no pickle)."""
        history = {"train_loss_list": self.train_loss_list + self.losses.values,
                   "train_acc_list": self.train_acc_list, "test_acc_list": self.test_acc_list,
                   "epoch_times": self.epoch_times}
        save_training(path, self.network, self.optimizer, epoch=self.current_epoch, step=self.epoch_step,
                      seed=self.seed, epoch_seconds=self.clock.unfinished(self.epoch_step), history=history)

    def load_checkpoint(self, path):
        """Continue from a checkpoint: it may come from another device than this network's."""
        resumed = load_training(path, self.network, self.optimizer, epochs=self.epochs,
                                iter_per_epoch=self.iter_per_epoch,
                                keep=self._given, say=self.progress.say)
        self.current_epoch, self.epoch_step = resumed.epoch, resumed.step
        self.current_iter = self.current_epoch * self.iter_per_epoch
        self.seed = self.seed if resumed.seed is None else resumed.seed
        history = resumed.history
        losses = history.get("train_loss_list", [])
        done = len(losses) - self.epoch_step  # the losses of the unfinished epoch continue in self.losses
        self.train_loss_list, self.losses = losses[:done], EpochLosses(losses[done:])
        self.watch = LossWatch(first=losses[0] if losses else None)
        self.train_acc_list = history.get("train_acc_list", [])
        self.test_acc_list = history.get("test_acc_list", [])
        self.epoch_times = history.get("epoch_times", [])
        self.clock.resume(resumed.epoch_seconds)

    def _checkpoint_on_interrupt(self):
        if self._interrupt.in_step:
            self.interrupt_note = (f"interrupted during a step: the checkpoint {self.checkpoint_path} is left as it "
                                   f"was")
            self.progress.say(self.interrupt_note)
            return
        self._flush_losses()
        step, epoch = self.current_iter + self.epoch_step, self.current_epoch + 1
        check_parameters(self.network.params, step, epoch, self.checkpoint_path)
        self.watch.check_settled(step, epoch, self.checkpoint_path)
        self.save_checkpoint(self.checkpoint_path)
        self.interrupt_note = (f"interrupted: checkpoint of epoch {self.current_epoch} and {self.epoch_step} steps "
                               f"of the next written to {self.checkpoint_path}; --resume continues from there")
        self.progress.say(self.interrupt_note)
