"""The Optuna side of ``xpnet search``: the hold-out split, the objective, per-trial seeds, storage and study.

Imported only once optuna is known to be installed (see ``require_optuna``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time

import numpy as np
import optuna

from xpnet import backend
from xpnet.nets import MultiLayerNet
from xpnet.trainer import Trainer, TrainingDivergedError
from .storage import RERUN_OF, adopt_running, fail_stale, stale_trials

__all__ = ["split_train_validation", "trial_seed", "make_objective", "make_sampler", "make_pruner",
           "TrialSeededSampler", "open_study", "counted", "run", "SurplusTrial", "SURPLUS"]

_TRAINING, _SAMPLING = 0, 1  # the two uses of a trial's seed


def split_train_validation(x, t, train_size=500, val_ratio=0.2, seed=0):
    """The book's hold-out: ``train_size`` examples of the TRAINING set, ``val_ratio`` of them for validation.

    The examples are the first ``train_size`` of a permutation seeded by
    ``seed`` (all of them with ``train_size=None``); the validation set is the
    first ``int(train_size * val_ratio)`` of those. Every worker and every
    resumed run with the same seed gets the same split. The book takes the
    first 500 examples and shuffles them with an unseeded generator.

    Returns ``(x_train, t_train), (x_val, t_val)``.
    """
    n = len(x)
    size = n if train_size is None else int(train_size)
    if size > n:
        raise ValueError(f"--train-size {size} is more than the {n} training examples")
    validation = int(size * val_ratio)
    if validation < 1 or validation >= size:
        raise ValueError(f"{size} examples with --val-ratio {val_ratio} leave {validation} for validation "
                         f"and {size - validation} for training; both need at least one")
    order = np.random.default_rng(seed % 2**32).permutation(n)[:size]
    held, kept = order[:validation], order[validation:]
    return (x[kept], t[kept]), (x[held], t[held])


def trial_seed(seed, number, use=_TRAINING):
    """A 31-bit seed from (search seed, trial number, use): independent streams for every trial."""
    return int(np.random.SeedSequence([seed % 2**32, number, use]).generate_state(1)[0] >> 1)


def make_objective(train, validation, space, epochs=50, optimizer="sgd", seed=0, report=True):
    """``objective(trial)``: train MultiLayerNet with the trial's values, return the final validation accuracy.

    ``space`` maps names to :class:`~xpnet.tools.search.Param` (lr, weight_decay,
    hidden_layers, hidden_size, batch_size). With ``report``, the validation
    accuracy is reported after every epoch, so a pruner can stop a bad trial
    early (each report is a write to the storage: without a pruner, leave it
    off; on SQLite it costs more than training on the digits). A
    run whose loss diverges ends as a FAIL trial (the value NaN) with the
    reason in its user attribute ``diverged``. Each trial records the worker
    that ran it (``host:pid``) in its user attribute ``worker``. A rerun of
    a trial whose worker died (user attribute ``rerun_of``) has its values
    and is seeded by its number, so it trains as that trial would have.
    """
    (x_train, t_train), (x_val, t_val) = train, validation
    input_size = int(np.prod(x_train.shape[1:]))
    classes = int(max(t_train.max(), t_val.max())) + 1

    def objective(trial):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        value = {name: param.suggest(trial) for name, param in space.items()}
        seed_of_trial = trial_seed(seed, trial.user_attrs.get(RERUN_OF, trial.number))
        backend.seed(seed_of_trial)  # initial weights
        network = MultiLayerNet(input_size, [value["hidden_size"]] * value["hidden_layers"], classes,
                                weight_decay_lambda=value["weight_decay"])
        # The Trainer's "test" set is the validation set: the test set never reaches the search.
        # A batch larger than the training set is one step of all of it (--quick has 80 examples): say it as that.
        batch_size = min(value["batch_size"], len(x_train))
        trainer = Trainer(network, x_train, t_train, x_val, t_val, epochs=1, mini_batch_size=batch_size,
                          optimizer=optimizer, optimizer_param={"lr": value["lr"]}, verbose=False,
                          seed=seed_of_trial)
        accuracy = float("nan")
        for epoch in range(1, epochs + 1):
            trainer.epochs = epoch  # train() runs the epochs not yet run: this one
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is an outcome, not news
                    trainer.train()
            except TrainingDivergedError as exc:
                trial.set_user_attr("diverged", str(exc))
                return float("nan")
            accuracy = trainer.test_acc_list[-1]
            if not report:
                continue
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} at epoch {epoch}")
        return accuracy

    return objective


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler built afresh for every trial, seeded by (seed, trial number).

    The storage numbers the trials, uniquely across workers, so workers that
    share a study never draw the same values (one sampler seeded once per
    worker would make every worker draw the same sequence), and the random
    search gives trial n the same values whether it ran alone, after a
    resume, or beside other workers. TPE and CMA-ES read what they learn
    from the storage, so nothing is lost by rebuilding them. (Not for the
    grid sampler: its seed orders the grid, which must stay the same.)
    """

    def __init__(self, build, seed):
        self.build, self.seed = build, seed
        self.inner = build(seed)

    def before_trial(self, study, trial):
        self.inner = self.build(trial_seed(self.seed, trial.number, _SAMPLING))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()


def make_sampler(name, space, trials, seed):
    """random (the book's), tpe or cmaes as a :class:`TrialSeededSampler`; or grid.

    grid: ``floor(trials ** (1/d))`` values (at least 2) on each of the d
    searched ranges, geometric on log ranges; the study stops when the grid
    is done.
    """
    samplers = optuna.samplers
    if name == "random":
        build = lambda s: samplers.RandomSampler(seed=s)  # noqa: E731
    elif name == "tpe":
        build = lambda s: samplers.TPESampler(seed=s)  # noqa: E731
    elif name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ImportError("--sampler cmaes needs the cmaes package: pip install cmaes")
        build = lambda s: samplers.CmaEsSampler(seed=s)  # noqa: E731
    elif name == "grid":
        searched = [p for p in space.values() if p.searched]
        points = max(2, int(trials ** (1 / len(searched)) + 1e-9))
        # One seed for all trials and workers: it shuffles the grid, and a grid point is a trial number's
        # place in that order, so every worker must see the same order.
        return samplers.GridSampler({p.name: p.grid(points) for p in searched}, seed=seed)
    else:
        raise ValueError(f"unknown sampler {name!r}; choose from random, tpe, cmaes, grid")
    return TrialSeededSampler(build, seed)


def make_pruner(name, epochs):
    """none, or median: prune below the median of earlier trials at the same epoch, after 5 trials and epochs/5."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=epochs // 5)
    raise ValueError(f"unknown pruner {name!r}; choose from none, median")


def open_study(storage, name, settings, url, sampler=None, pruner=None):
    """Create the study, or load it if it exists, and refuse one run with other settings.

    ``settings`` (data set, split sizes, epochs, optimizer, seed, space) are
    kept as the study's user attribute ``xpnet``: trials of one study must
    be comparable, whichever worker ran them.
    """
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)
    stored = study.user_attrs.get("xpnet")
    if stored is None:
        if study.trials:
            raise ValueError(f"study {name!r} in {url} was not made by xpnet search; choose another --study-name")
        study.set_user_attr("xpnet", settings)
    elif stored != settings:
        changes = "; ".join(f"{key} {stored.get(key)} (now {settings[key]})"
                            for key in settings if stored.get(key) != settings[key])
        raise ValueError(f"study {name!r} in {url} was made with {changes}; "
                         f"use the same options, or another --study-name")
    return study


def counted(study):
    """How many trials count toward the study's total: complete, pruned, or failed by divergence.

    Divergence is an outcome of a trial's values; a trial cut short by
    Ctrl-C, an error or a killed worker does not count, so it is made up
    for: by a rerun with the same values where its worker died, by the next
    trial number otherwise.
    """
    return sum(map(_counts, study.get_trials(deepcopy=False)))


def _counts(trial):
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and "diverged" in trial.user_attrs)


def run(study, objective, trials, say=None, poll=1.0):
    """Run trials in this process until the study holds ``trials`` (see :func:`counted`); returns how many ran.

    ``say(line)`` after each trial. A worker starts a trial only while the
    counted trials, those running on other workers and those queued to run
    again fall short of ``trials``; otherwise it waits (checking every
    ``poll`` seconds) until they finish, or until one is found stale (its
    worker died: no heartbeat for the grace period), failed and queued
    again, which this worker then runs. Two workers that start the last
    trial at the same instant both get a trial number; the higher one is
    ended at once as a FAIL marked ``surplus`` and not counted. So the study
    ends with ``trials`` counted trials and none left running. A rerun after
    Ctrl-C runs only the missing trials.
    """
    ran, full = [], [False]
    adopt_running(study)

    def guarded(trial):
        # Workers starting together can overfill the study: every trial checks the trials ahead of it (one read
        # of the study, small beside a trial's training; a check skipped on an older tally let a 19th of 18 in).
        if _Tally(study, below=trial.number).may_count >= trials:
            trial.set_user_attr(SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number} was not needed: the study had its {trials} trials")
        return objective(trial)

    def after(study, trial):
        if SURPLUS not in trial.user_attrs:
            ran.append(trial.number)
            if say is not None:
                say(describe(trial))
        tally = _Tally(study, trials=trials)
        if not tally.room:
            full[0] = True
            study.stop()

    waiting = False
    while True:
        fail_stale(study)
        tally = _Tally(study, trials=trials)
        if tally.counted >= trials:
            break
        if not tally.room:
            if say is not None and not waiting:
                say(f"waiting for the {tally.running} trials running on other workers")
            waiting = True
            time.sleep(poll)
            continue
        full[0] = waiting = False
        try:
            study.optimize(guarded, n_trials=None, callbacks=[after], gc_after_trial=False, catch=(SurplusTrial,))
        except Exception as exc:
            # Another worker saw no heartbeat of this one for the grace period (a stalled machine or network),
            # failed its trial and queued it again: the result of this run of it is dropped.
            taken = _taken_over(exc)
            if taken is None:
                raise
            if say is not None:
                say(f"a trial of this worker was declared dead by another one and is run again ({taken})")
            continue
        if not full[0]:
            break  # the sampler stopped the study: a finished grid
    return len(ran)


def _taken_over(exc):
    """The error saying that a trial of this worker was finished by another one, or None.

    Optuna says "Cannot tell a FAIL trial" (UpdateFinishedTrialError where
    the two writes cross), and in Optuna 5 then replaces that error with an
    AssertionError of its own while logging it.
    """
    while exc is not None:
        if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) or (
                isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a")):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class SurplusTrial(Exception):
    """A trial started when the trials ahead of it already make the study's total."""


SURPLUS = "surplus"  # the user attribute of such a trial


class _Tally:
    """The study's trials (those numbered below ``below``, if given) by what they mean for its total.

    counted (see :func:`counted`), running (on a live worker: not stale),
    waiting (queued to rerun); ``may_count`` is their sum. ``room``: whether
    a trial should start: one is queued, or ``may_count < trials``; ``left``
    is ``trials - may_count``.
    """

    def __init__(self, study, trials=None, below=None):
        states = optuna.trial.TrialState
        every = [t for t in study.get_trials(deepcopy=False) if below is None or t.number < below]
        running = [t.number for t in every if t.state == states.RUNNING]
        stale = set(stale_trials(study)) if running else set()  # a query, needed only beside running trials
        self.counted = sum(map(_counts, every))
        self.running = sum(number not in stale for number in running)
        self.waiting = sum(t.state == states.WAITING for t in every)
        self.may_count = self.counted + self.running + self.waiting
        if trials is not None:
            self.left = trials - self.may_count
            self.room = self.waiting > 0 or self.left > 0


def describe(trial):
    """One line for a finished trial."""
    values = "  ".join(f"{name}={value:.3g}" for name, value in trial.params.items())
    seconds = f"{trial.duration.total_seconds():.1f} s" if trial.duration else ""
    state = trial.state.name
    if state == "COMPLETE":
        return f"trial {trial.number:3d}: val acc {trial.value:.4f}  {values}  {seconds}"
    if state == "PRUNED":
        epoch = max(trial.intermediate_values, default=0)
        return f"trial {trial.number:3d}: pruned at epoch {epoch} (val acc {trial.value:.4f})  {values}  {seconds}"
    reason = trial.user_attrs.get("diverged", "failed")
    return f"trial {trial.number:3d}: {state.lower()}: {reason}  {values}  {seconds}"
