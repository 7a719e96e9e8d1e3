"""The pieces the Trainer is made of, each on its own: Ctrl-C, losses, divergence, checkpoints, progress, checks."""

import os
import signal
import threading

import numpy as np
import pytest

import xpnet
from xpnet import to_device, to_numpy
from xpnet.nets import MultiLayerNet
from xpnet.optimizer import SGD, Adam
from xpnet.trainer.checkpointing import EpochClock, load_training, save_training
from xpnet.trainer.checks import check_data, check_labels
from xpnet.trainer.divergence import TrainingDivergedError, check_losses, check_parameters
from xpnet.trainer.interrupt import DeferredInterrupt
from xpnet.trainer.losses import EpochLosses, read_losses
from xpnet.trainer.progress import Progress


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


# --- interrupt ----------------------------------------------------------------------------------


def test_ctrl_c_in_a_step_is_raised_after_it():
    finished = []
    with pytest.raises(KeyboardInterrupt), DeferredInterrupt() as interrupt:
        with interrupt.step():
            ctrl_c()
            finished.append("the step")
        assert interrupt.requested and not interrupt.in_step
        finished.append("its end")
        interrupt.raise_if_requested()
        finished.append("what follows")
    assert finished == ["the step", "its end"]


def test_ctrl_c_between_steps_and_a_second_one_in_a_step_raise_at_once():
    with pytest.raises(KeyboardInterrupt), DeferredInterrupt():
        ctrl_c()
    interrupt = DeferredInterrupt()
    with pytest.raises(KeyboardInterrupt), interrupt:
        with interrupt.step():
            ctrl_c()
            ctrl_c()
    assert interrupt.in_step  # the step was cut short


def test_the_previous_handler_is_back_afterwards_and_other_threads_defer_nothing():
    before = signal.getsignal(signal.SIGINT)
    with DeferredInterrupt():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    seen = []

    def worker():
        with DeferredInterrupt():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


# --- losses ---------------------------------------------------------------------------------------


def test_losses_stay_on_the_device_until_read_then_become_floats(xp):
    losses = EpochLosses([0.75])
    for value in (0.5, 0.25):
        losses.add(xp.asarray(value, dtype=xp.float32))
    pending = losses.take_pending()
    assert losses.pending == [] and len(pending) == 2
    values = read_losses(pending)
    assert values == [0.5, 0.25] and all(type(v) is float for v in values)
    losses.values += values
    assert losses.values == [0.75, 0.5, 0.25]


# --- divergence ----------------------------------------------------------------------------------


def test_the_first_bad_loss_is_named_with_its_step_and_epoch(tmp_path, monkeypatch):
    check_losses([0.5, 0.4], first_step=7, epoch=2)
    with pytest.raises(TrainingDivergedError, match=r"the loss became inf at step 8 \(epoch 2\); "
                                                    r"try a smaller learning rate$"):
        check_losses([0.5, float("inf"), float("nan")], first_step=7, epoch=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingDivergedError, match="no checkpoint was written to run.npz$"):
        check_losses([float("nan")], first_step=1, epoch=1, checkpoint_path="run.npz")
    (tmp_path / "run.npz").write_bytes(b"a good checkpoint")
    with pytest.raises(TrainingDivergedError, match="the last good checkpoint, run.npz, is unchanged"):
        check_losses([float("nan")], first_step=1, epoch=1, checkpoint_path="run.npz")


def test_parameters_that_broke_are_named(xp):
    params = {"W1": xp.ones((2, 2), dtype=xp.float32), "b1": xp.zeros(2, dtype=xp.float32),
              "W2": xp.ones(3, dtype=xp.float32)}
    check_parameters(params, step=4, epoch=1)
    params["W1"][0, 1] = xp.nan
    params["W2"][2] = -xp.inf
    with pytest.raises(TrainingDivergedError, match=r"^W1, W2 became NaN or infinite by the update of step 4 "
                                                    r"\(epoch 1\)"):
        check_parameters(params, step=4, epoch=1)


# --- checkpointing -----------------------------------------------------------------------------------


def test_the_epoch_clock_counts_the_seconds_before_a_resume():
    now = [100.0]
    clock = EpochClock(clock=lambda: now[0])
    assert clock.unfinished(steps_done=0) == 0.0  # between epochs
    clock.start()
    now[0] = 104.0
    assert clock.elapsed() == clock.unfinished(steps_done=3) == 4.0
    resumed = EpochClock(clock=lambda: now[0])
    resumed.resume(4.0)
    assert resumed.unfinished(steps_done=3) == 4.0  # resumed, not yet trained
    resumed.start()
    now[0] = 110.0
    assert resumed.elapsed() == 10.0  # 4 s before the resume, 6 s after


def trained_pair(device):
    """A network and an Adam that took two steps, on ``device``."""
    xpnet.set_device(device)
    network, optimizer = MultiLayerNet(4, [5], 3), Adam(lr=0.003, beta2=0.99)
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    for _ in range(2):
        optimizer.update(network.params, network.gradient(x, np.arange(8) % 3))
    return network, optimizer


def test_a_run_saved_mid_epoch_resumes_with_its_state_history_and_seconds(device, tmp_path):
    network, optimizer = trained_pair(device)
    history = {"train_loss_list": [1.1, 1.0, 0.9], "train_acc_list": [0.5], "test_acc_list": [0.4],
               "epoch_times": [2.5]}
    save_training(tmp_path / "run.npz", network, optimizer, epoch=1, step=1, examples=4, seed=7, epoch_seconds=1.25,
                  history=history)
    xpnet.seed(1)
    other, fresh = MultiLayerNet(4, [5], 3), Adam()
    said = []
    resumed = load_training(tmp_path / "run.npz", other, fresh, train_size=8, batch_size=3, say=said.append)
    assert (resumed.epoch, resumed.step, resumed.examples, resumed.seed, resumed.epoch_seconds) == (1, 1, 4, 7, 1.25)
    assert resumed.history == history
    for name, value in network.params.items():
        np.testing.assert_array_equal(to_numpy(other.params[name]), to_numpy(value))
    assert (fresh.lr, fresh.beta2, fresh.iter) == (0.003, 0.99, 2) and said == []


def test_hyperparameters_kept_on_resume_are_said(tmp_path):
    network, optimizer = trained_pair("cpu")
    save_training(tmp_path / "run.npz", network, optimizer, epoch=1, step=0, seed=7, epoch_seconds=0.0, history={})
    said, fresh = [], Adam(lr=0.05)
    resumed = load_training(tmp_path / "run.npz", network, fresh, train_size=8, batch_size=4, keep=("lr",),
                            say=said.append)
    assert (fresh.lr, fresh.beta2) == (0.05, 0.99)
    assert said == ["resuming with lr=0.05 (the checkpoint's was 0.003)"]
    assert resumed.epoch_seconds == 0.0  # saved between epochs


def test_a_checkpoint_of_another_optimizer_or_of_more_data_is_refused(tmp_path):
    network, optimizer = trained_pair("cpu")
    path = tmp_path / "run.npz"
    save_training(path, network, optimizer, epoch=1, step=3, examples=12, seed=7, epoch_seconds=0.5, history={})
    with pytest.raises(ValueError, match="holds the state of Adam, but this run uses SGD"):
        load_training(path, network, SGD(), train_size=16, batch_size=4)
    with pytest.raises(ValueError, match=r"stopped after 12 examples \(3 steps\) of an epoch, but this run has 8 "
                                         r"training examples"):
        load_training(path, network, Adam(), train_size=8, batch_size=4)


def test_the_position_in_an_epoch_is_its_examples_seen_whatever_the_batch_size(tmp_path):
    network, optimizer = trained_pair("cpu")
    path = tmp_path / "run.npz"
    save_training(path, network, optimizer, epoch=1, step=3, examples=12, ranks=2, seed=7, epoch_seconds=0.5,
                  history={})
    assert load_training(path, network, Adam(), train_size=16, batch_size=5).examples == 12
    save_training(path, network, optimizer, epoch=1, step=3, seed=7, epoch_seconds=0.5, history={})
    # a checkpoint that does not record them (written before they were): step batches of this run's size
    assert load_training(path, network, Adam(), train_size=16, batch_size=4).examples == 12


# --- progress --------------------------------------------------------------------------------------


def test_the_bar_goes_to_stderr_and_the_lines_to_stdout_each_only_where_asked(capsys):
    for bar, lines in ((True, True), (False, False), (False, True)):
        progress = Progress(bar=bar, lines=lines)
        progress.start_epoch(4, "epoch 1/1", done=1)
        progress.step()
        progress.step(loss=0.25, examples_per_second=1234.0)
        progress.end_epoch()
        progress.say("epoch 1/1: done")
        out, err = capsys.readouterr()
        assert ("epoch 1/1" in err and "loss=0.2500" in err and "ex/s=1,234" in err) == bar
        assert ("epoch 1/1: done" in out) == lines
        if not bar:
            assert err == ""


# --- checks --------------------------------------------------------------------------------------------


def test_data_and_labels_are_checked_against_each_other_and_the_network():
    network = MultiLayerNet(4, [5], 3)
    x = np.zeros((6, 4), dtype=np.float32)
    check_data("training", x, np.zeros(6, dtype=int))
    check_labels(network, x, np.arange(6) % 3, "training")
    check_labels(network, x, np.eye(3, dtype=np.float32)[np.arange(6) % 3], "training")
    with pytest.raises(ValueError, match="training data is empty"):
        check_data("training", x[:0], np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="test one-hot labels have 4 columns but the network has 3 outputs"):
        check_labels(network, x, np.zeros((6, 4), dtype=np.float32), "test")
    with pytest.raises(ValueError, match="test labels: index labels must be integers, got dtype float32"):
        check_labels(network, x, np.zeros(6, dtype=np.float32), "test")


def test_labels_on_the_device_are_checked_on_the_host(device):
    xpnet.set_device(device)
    network = MultiLayerNet(4, [5], 3)
    x = np.zeros((6, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="training labels run from 0 to 5, but the network has 3 outputs"):
        check_labels(network, x, to_device(np.arange(6), device), "training")
