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

import inspect
import math

import numpy as np

from ..backend import get_array_module, params_device, host_rng, synchronize, to_device
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
    network : any object with ``params`` (a dict of arrays), ``gradient(x, t)``,
        ``loss(x, t)`` and ``accuracy(x, t)``, such as the book's own network
        classes; it trains on the device of its parameters. The loss of a
        step is read from ``network.last_layer.loss`` where there is one (the
        forward pass of ``gradient``), else from ``network.loss`` after the update
    x_train, t_train, x_test, t_test : arrays; kept where they are (the host,
        normally), each mini-batch is moved to the network's device once
    epochs : full passes over the training set
    mini_batch_size : examples per step (per rank with ``comm``: a step then takes N x
        mini_batch_size); the last batch of an epoch may be smaller
    optimizer : a name ('SGD', 'Momentum', 'Nesterov', 'AdaGrad', 'RMSprop',
        'Adam', 'AdamW') or an optimizer object
    optimizer_param : keyword arguments for a named optimizer, e.g. {'lr': 0.01}
    evaluate_sample_num_per_epoch : evaluate the accuracies of each epoch on
        the first this many examples of each set (None: all); the final test
        accuracy is always measured over the whole test set, as in the book
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
        epoch, and the examples of it already seen after Ctrl-C: a run goes on
        with the rest of that epoch's shuffle, whatever its batch size or
        number of ranks). A ``seed`` other than the checkpoint's is refused
        (None takes the checkpoint's). The optimizer keeps the
        checkpoint's hyperparameters except those named in ``optimizer_param``
        (all of them for an optimizer object): ``{"lr": 0.001}`` changes the
        learning rate and keeps, say, Adam's beta1 and beta2
    log_every : steps between reads of the loss from the device (each read is
        a synchronization with the GPU); NaN or infinite losses are found
        at those reads and at the end of each epoch, NaN or infinite
        parameters at the end of each epoch, before any checkpoint
    progress : the progress bar on stderr, apart from the summary lines
        (default: as ``verbose``); ``xpnet train`` draws it only on a terminal
    comm : a :class:`xpnet.distributed.Communicator` (``distributed.init()``)
        for data-parallel training under ``mpiexec -n N``: every rank builds
        the same network and Trainer, and together they train one model.
        ``mini_batch_size`` is then per rank: a step takes a global batch of
        N x ``mini_batch_size`` examples of one shuffle shared by all ranks,
        each rank computing on its slice, and the gradients are averaged over
        the global batch by examples, so N ranks train as one process with
        N times the batch. Rank 0's parameters (and optimizer state, on
        resume) are broadcast at construction; accuracies are evaluated in
        slices and combined by counts; only rank 0 shows the progress bar,
        prints and writes checkpoints; a Ctrl-C stops every rank after the
        same step. The Trainer does not seed: call
        ``distributed.seed_ranks(comm, seed)`` before building the network,
        so that dropout masks differ per rank, and pass the seed it returns
        as ``seed``. A checkpoint to resume must be readable on every rank.
        None (the default): one process, and mpi4py is not imported
    sync_batch_norm : with ``comm``, batch normalization uses the statistics
        of the global batch (the single-process model; two small allreduces
        per layer and step); False: each rank's slice (cheaper, not the
        single-process model; the running statistics are averaged over the
        ranks before each evaluation and checkpoint)

    Fixed relative to the book: an epoch is one shuffled pass over the
    training set without replacement (the book samples every batch with
    replacement and counts epochs in floats, which can skip evaluations), and
    accuracies are measured with dropout off.

    After ``train()``: ``train_loss_list`` (one float per step: the
    cross-entropy of the batch, read from the forward pass of the training
    step, without a weight-decay penalty; the book runs the forward pass
    again for it, penalty included),
    ``train_acc_list`` and ``test_acc_list`` (one per epoch, on
    ``evaluate_sample_num_per_epoch`` examples), ``final_test_acc`` (over the
    whole test set, printed as "Final Test Accuracy"), ``epoch_times``
    (seconds per epoch, evaluation excluded).

    To change what one step does (say, combine gradients across processes
    before the update), override :meth:`train_step`; to change which
    examples an epoch visits, :meth:`_batches`.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None, verbose=True,
                 *, seed=None, checkpoint_path=None, resume=None, log_every=20, progress=None, comm=None,
                 sync_batch_norm=True):
        check_data("training", x_train, t_train)
        check_data("test", x_test, t_test)
        check_counts(epochs=epochs, mini_batch_size=mini_batch_size)
        check_batch_size(mini_batch_size, x_train.shape[0])
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs, self.batch_size = int(epochs), int(mini_batch_size)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.comm, self.sync_batch_norm = comm, bool(sync_batch_norm)
        self.ranks = 1 if comm is None else comm.size
        shows = comm is None or comm.rank == 0  # rank 0 speaks for the job
        self.progress = Progress(bar=shows and (verbose if progress is None else progress), lines=shows and verbose)
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
        self._seed_given = seed is not None
        self.seed = int(host_rng().integers(2**31)) if seed is None else int(seed)
        if comm is not None:
            self.seed = comm.bcast_object(self.seed)  # one shuffle for every rank
        self.checkpoint_path = checkpoint_path
        self.log_every = max(1, int(log_every))
        self.train_size = x_train.shape[0]
        self.global_batch_size = self.ranks * self.batch_size
        self.iter_per_epoch = math.ceil(self.train_size / self.global_batch_size)
        self.current_epoch = 0
        self.current_iter = 0
        self.epoch_step = 0  # steps done of the epoch under way (after a resume from Ctrl-C, where it goes on)
        self.epoch_examples = 0  # examples of its shuffle seen (the position a resume goes on from)
        self.epoch_steps = self.iter_per_epoch  # steps of the epoch under way, the steps before a resume included
        self._stopping = False  # every rank agreed to stop after a Ctrl-C
        self.losses = EpochLosses()  # the losses of the epoch under way
        self.clock = EpochClock()  # its seconds, those before a resume included
        self._interrupt = DeferredInterrupt()
        self.watch = LossWatch()  # the divergence rule, on the losses as they are read
        self.interrupt_note = None  # after Ctrl-C: where the checkpoint is, or why there is none
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []
        self.final_test_acc = None
        self.epoch_times = []
        check_labels(network, x_train, t_train, "training")
        check_labels(network, x_test, t_test, "test")
        if resume is not None:
            self.load_checkpoint(resume)
        if comm is not None:
            from .. import distributed  # mpi4py only for a distributed run

            self._distributed = distributed
            distributed.broadcast_parameters(comm, network)
            if resume is not None:
                distributed.broadcast_optimizer_state(comm, self.optimizer)
            distributed.synchronize_batch_norm(comm, network, enabled=self.sync_batch_norm)

    # --- one step ----------------------------------------------------------------

    def train_step(self, x_batch, t_batch):
        """One forward, backward and update; returns the loss as a 0-d array on the device.

        With a communicator ``x_batch``, ``t_batch`` are this rank's slice of
        the global batch, and the loss is the global batch's (every rank's the same).
        """
        if self.comm is not None:
            grads, loss = self._distributed.gradient(self.comm, self.network, x_batch, t_batch)
            self.optimizer.update(self.network.params, grads)
            return loss
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        return self._step_loss(x_batch, t_batch)

    def _step_loss(self, x_batch, t_batch):
        """The loss of the step just run: from its forward pass where the network keeps it (``last_layer.loss``),
        else computed again (a duck-typed network), after the update."""
        loss = getattr(getattr(self.network, "last_layer", None), "loss", None)
        return loss if loss is not None else self.network.loss(x_batch, t_batch)

    def _batches(self, epoch, start=0):
        """Index arrays of the global batches of one shuffled pass from its ``start``-th example; the order
        depends only on (seed, epoch), so a resume with another batch size or rank count goes on where it was."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.train_size)
        size = self.global_batch_size
        return [order[i:i + size] for i in range(start, self.train_size, size)]

    def _mine(self, index):
        """This rank's slice of the global batch ``index`` (all of it in one process)."""
        return index if self.comm is None else self._distributed.shard(self.comm, index)

    def _stop_requested(self):
        """Whether a Ctrl-C asks to stop; with a communicator, whether it reached any rank (all ranks agree)."""
        if self.comm is None:
            return self._interrupt.requested
        return self.comm.any(self._interrupt.requested)

    # --- the loop -----------------------------------------------------------------

    def train(self):
        """Run the remaining epochs; on Ctrl-C write a checkpoint (if a path was given) and re-raise."""
        try:
            with self._interrupt:
                while self.current_epoch < self.epochs:
                    self._train_epoch()
                    if self.checkpoint_path is not None:
                        self._save_checkpoint_of_job(self.checkpoint_path)
                    if self._stopping:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.progress.abort()
            if self.comm is not None and not self._stopping:
                # a second Ctrl-C cut a step short on this rank: the others may be in a collective
                self.progress.say("interrupted during a step: stopping every rank now")
                self.comm.abort(130)
            if self.checkpoint_path is not None:
                self._checkpoint_on_interrupt()
            if self.comm is not None:
                self.comm.barrier()  # every rank leaves together, after the checkpoint is written
            raise
        except BaseException:
            self.progress.abort()  # the error's line starts on a line of its own, not after the bar
            raise
        self.final_test_acc = self._final_test_accuracy()
        self.progress.say(f"=============== Final Test Accuracy ===============\ntest acc: {self.final_test_acc:.4f}")
        return self

    def _final_test_accuracy(self):
        """Over the whole test set, as the book measures it: the last epoch's value where that was whole."""
        n = self.evaluate_sample_num_per_epoch
        if self.test_acc_list and (n is None or n >= len(self.x_test)):
            return self.test_acc_list[-1]
        self._average_batch_norm()
        return self._accuracy(self.x_test, self.t_test)

    def _train_epoch(self):
        epoch = self.current_epoch + 1
        xp = get_array_module(self.x_train)
        batches = self._batches(epoch, self.epoch_examples)
        self.epoch_steps = self.epoch_step + len(batches)
        self.progress.start_epoch(self.epoch_steps, f"epoch {epoch}/{self.epochs}", done=self.epoch_step)
        self.clock.start()
        device = params_device(self.network.params)  # the network's, or a duck-typed one's (the book's)
        for index in batches:
            mine = self._mine(index)
            mine = xp.asarray(mine) if xp is not np else mine
            with self._interrupt.step():  # Ctrl-C waits for the step and its bookkeeping
                with np.errstate(all="ignore"):  # a diverging step overflows: the rule says so in one line
                    loss = self.train_step(to_device(self.x_train[mine], device),
                                           to_device(self.t_train[mine], device))
                self.losses.add(loss)
                self.epoch_step += 1
                self.epoch_examples += len(index)
                step = self.epoch_step
                if step % self.log_every == 0 or step == self.epoch_steps:
                    self._flush_losses()
                    self.progress.step(self.losses.values[-1], self.epoch_examples / max(self.clock.elapsed(), 1e-9))
                else:
                    self.progress.step()
                # after the last step the epoch is finished and checkpointed first
                self._stopping = step < self.epoch_steps and self._stop_requested()
            if self._stopping:
                raise KeyboardInterrupt
        with self._interrupt.step():  # a finished epoch is checkpointed with its accuracies
            synchronize()
            seconds = self.clock.elapsed()
            check_parameters(self.network.params, self.current_iter + self.epoch_steps, epoch, self.checkpoint_path)
            self.watch.check_settled(self.current_iter + self.epoch_steps, epoch, self.checkpoint_path)
            self.epoch_times.append(seconds)
            self.progress.end_epoch()
            self.current_iter += self.epoch_steps
            self.current_epoch, self.epoch_step, self.epoch_examples = epoch, 0, 0
            self.train_loss_list += self.losses.values
            self.losses = EpochLosses()
            self._evaluate()
            self.epoch_steps = self.iter_per_epoch
            self._stopping = self._stop_requested()

    def _flush_losses(self):
        """Read the losses still on the device (one synchronization) into the epoch's list."""
        if self.losses.pending:
            first_step = self.current_iter + self.epoch_step - len(self.losses.pending) + 1
            self.losses.values += self._read_losses(self.losses.take_pending(), first_step)

    def _read_losses(self, pending, first_step):
        values = read_losses(pending)
        self.watch.check(values, first_step, self.current_epoch + 1, self.checkpoint_path)
        return values

    def _accuracy(self, x, t):
        batch_size = max(self.batch_size, 100)
        if self.comm is None:
            if "batch_size" in inspect.signature(self.network.accuracy).parameters:
                return float(self.network.accuracy(x, t, batch_size=batch_size))
            return float(self.network.accuracy(x, t))  # a duck-typed network, such as the book's own
        return self._distributed.accuracy(self.comm, self.network, x, t, batch_size)  # slices, counts summed

    def _average_batch_norm(self):
        """Unsynchronized batch normalization: every rank takes the ranks' mean running statistics (collective)."""
        if self.comm is not None and not self.sync_batch_norm:
            self._distributed.average_batch_norm_statistics(self.comm, self.network)

    def _evaluate(self):
        n = self.evaluate_sample_num_per_epoch
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            x_train, t_train, x_test, t_test = x_train[:n], t_train[:n], x_test[:n], t_test[:n]
        self._average_batch_norm()
        train_acc = self._accuracy(x_train, t_train)
        test_acc = self._accuracy(x_test, t_test)
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        if self.progress.lines:
            recent = self.train_loss_list[-self.epoch_steps:]  # the epoch's steps
            self.progress.say(f"epoch {self.current_epoch}/{self.epochs}: loss {np.mean(recent):.4f}, "
                              f"train acc {train_acc:.4f}, test acc {test_acc:.4f}, {self.epoch_times[-1]:.2f} s")

    # --- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, path):
        """Parameters, optimizer state, epoch, the examples seen of the next and history, in one atomic .npz
        (no pickle). With a communicator, call it on rank 0 only (see :meth:`_save_checkpoint_of_job`)."""
        history = {"train_loss_list": self.train_loss_list + self.losses.values,
                   "train_acc_list": self.train_acc_list, "test_acc_list": self.test_acc_list,
                   "epoch_times": self.epoch_times}
        save_training(path, self.network, self.optimizer, epoch=self.current_epoch, step=self.epoch_step,
                      examples=self.epoch_examples, ranks=self.ranks, seed=self.seed,
                      epoch_seconds=self.clock.unfinished(self.epoch_step), history=history)

    def _save_checkpoint_of_job(self, path):
        """Every rank calls it: the ranks agree on the statistics, then rank 0 alone writes."""
        self._average_batch_norm()
        if self.comm is None or self.comm.rank == 0:
            self.save_checkpoint(path)

    def load_checkpoint(self, path):
        """Continue from a checkpoint: it may come from another device than this network's, another batch
        size and another number of ranks (it goes on from the examples of the epoch already seen)."""
        resumed = load_training(path, self.network, self.optimizer, train_size=self.train_size,
                                batch_size=self.global_batch_size, epochs=self.epochs, keep=self._given,
                                say=self.progress.say)
        if resumed.seed is not None and self._seed_given and resumed.seed != self.seed:
            raise ValueError(f"{path}: the checkpoint was trained with seed {resumed.seed}, but this run asks for "
                             f"seed {self.seed}; resume with the checkpoint's seed (or give none), since the seed "
                             f"sets which examples the rest of the epoch visits")
        self.current_epoch, self.epoch_step, self.epoch_examples = resumed.epoch, resumed.step, resumed.examples
        self.seed = self.seed if resumed.seed is None else resumed.seed
        history = resumed.history
        losses = history.get("train_loss_list", [])
        done = len(losses) - self.epoch_step  # the losses of the unfinished epoch continue in self.losses
        self.train_loss_list, self.losses = losses[:done], EpochLosses(losses[done:])
        self.current_iter = len(self.train_loss_list)  # the steps of the finished epochs, whatever their batches
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
        self._save_checkpoint_of_job(self.checkpoint_path)
        self.interrupt_note = (f"interrupted: checkpoint of epoch {self.current_epoch} and {self.epoch_step} steps "
                               f"({self.epoch_examples} examples) of the next written to {self.checkpoint_path}; "
                               f"--resume continues from there")
        self.progress.say(self.interrupt_note)
