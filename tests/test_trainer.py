"""The Trainer: exact epochs, reproducibility, divergence, checkpoints and resuming."""

import os
import signal
import time
from collections import OrderedDict

import numpy as np
import pytest

import xpnet
from xpnet import to_device, to_numpy
from xpnet.layers import Affine, Relu, SoftmaxWithLoss
from xpnet.nets import MultiLayerNet, SimpleConvNet
from xpnet.trainer import Trainer, TrainingDivergedError


def blobs(rng, n=120, features=6, classes=3):
    """Separable clusters: a problem any working trainer solves."""
    centers = rng.standard_normal((classes, features)) * 3
    t = rng.integers(0, classes, n)
    x = (centers[t] + rng.standard_normal((n, features))).astype(np.float32)
    return x, t


def make_trainer(rng, epochs=3, mini_batch_size=16, **kwargs):
    x, t = blobs(rng)
    net = MultiLayerNet(6, [10], 3)
    options = {"optimizer": "Adam", "optimizer_param": {"lr": 0.01}, "verbose": False, "seed": 1, **kwargs}
    return Trainer(net, x[:90], t[:90], x[90:], t[90:], epochs=epochs, mini_batch_size=mini_batch_size, **options)


def seeded_trainer(epochs, **kwargs):
    """The same data, initial weights and shuffles every time it is called."""
    xpnet.seed(0)
    return make_trainer(np.random.default_rng(0), epochs=epochs, **kwargs)


def assert_same_run(trainer, reference):
    """The same losses step by step and the same final parameters (float32 tolerance)."""
    np.testing.assert_allclose(trainer.train_loss_list, reference.train_loss_list, rtol=1e-5)
    for k in reference.network.params:
        np.testing.assert_allclose(to_numpy(trainer.network.params[k]), to_numpy(reference.network.params[k]),
                                   rtol=1e-5, err_msg=k)


def test_an_epoch_is_one_pass_without_replacement(rng):
    trainer = make_trainer(rng)
    batches = trainer._batches(epoch=1)
    assert [len(b) for b in batches] == [16] * 5 + [10]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(90))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(trainer._batches(epoch=2)))


def test_training_learns_and_records_what_the_book_records(device, rng):
    xpnet.set_device(device)
    trainer = make_trainer(rng, epochs=5).train()
    assert len(trainer.train_loss_list) == 5 * 6
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == len(trainer.epoch_times) == 5
    assert all(isinstance(v, float) for v in trainer.train_loss_list)
    assert trainer.train_loss_list[-1] < trainer.train_loss_list[0] / 2
    assert trainer.test_acc_list[-1] >= 0.9


def test_the_same_seed_on_the_same_device_gives_the_same_run(device, rng):
    xpnet.set_device(device)
    x, t = blobs(rng)
    runs = []
    for _ in range(2):
        xpnet.seed(3)
        net = MultiLayerNet(6, [10], 3)
        runs.append(Trainer(net, x, t, x, t, epochs=2, mini_batch_size=16, optimizer="SGD", verbose=False).train())
    assert runs[0].train_loss_list == runs[1].train_loss_list
    for k in runs[0].network.params:
        np.testing.assert_array_equal(to_numpy(runs[0].network.params[k]), to_numpy(runs[1].network.params[k]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings on the way to inf
def test_a_diverging_loss_stops_with_the_step_and_keeps_the_checkpoint(device, rng, tmp_path):
    xpnet.set_device(device)
    path = tmp_path / "run.npz"
    trainer = make_trainer(rng, epochs=3, checkpoint_path=path, log_every=1)
    trainer.train()
    good = path.read_bytes()
    trainer.epochs = 4
    trainer.optimizer.lr = 1e30  # blows the weights up within a step or two
    with pytest.raises(TrainingDivergedError, match=r"the loss became (nan|inf) at step \d+ \(epoch 4\).*unchanged"):
        trainer.train()
    assert path.read_bytes() == good


def test_weights_broken_by_an_epochs_last_update_are_caught_before_the_checkpoint(device, rng, tmp_path):
    xpnet.set_device(device)
    path = tmp_path / "run.npz"
    trainer = make_trainer(rng, epochs=2, checkpoint_path=path)
    real_step, calls = trainer.train_step, []

    def step(x, t):
        calls.append(1)
        loss = real_step(x, t)  # computed before the update: finite
        if len(calls) == 12:  # the last of epoch 2
            trainer.network.params["W2"][0, 0] = np.inf
        return loss

    trainer.train_step = step
    trainer.epochs = 1
    trainer.train()
    good = path.read_bytes()
    trainer.epochs = 2
    with pytest.raises(TrainingDivergedError, match=r"W2 became NaN or infinite by the update of step 12 \(epoch 2\)"
                                                    r".*unchanged"):
        trainer.train()
    assert path.read_bytes() == good
    assert len(trainer.epoch_times) == len(trainer.test_acc_list) == 1  # the broken epoch is not recorded


def test_checkpoint_and_resume_continue_where_training_stopped(device, rng, tmp_path):
    xpnet.set_device(device)
    path = tmp_path / "ckpt.npz"
    straight = seeded_trainer(4).train()
    first = seeded_trainer(2, checkpoint_path=path).train()
    assert first.current_epoch == 2
    xpnet.seed(99)  # the resumed run gets everything it needs from the checkpoint
    resumed = make_trainer(np.random.default_rng(0), epochs=4, resume=path)
    assert resumed.current_epoch == 2 and len(resumed.test_acc_list) == 2
    resumed.train()
    assert_same_run(resumed, straight)


def ctrl_c():
    """A real Ctrl-C: SIGINT to this process, handled by the Trainer before the next bytecode."""
    os.kill(os.getpid(), signal.SIGINT)


def interrupt_at(trainer, call, how):
    """Make the ``call``-th training step be interrupted: by a real SIGINT in mid-step, or a KeyboardInterrupt."""
    calls = {"n": 0}
    real_step = trainer.train_step

    def step(x, t):
        calls["n"] += 1
        if calls["n"] == call:
            if how == "sigint":  # Ctrl-C between the gradient and the update
                grads = trainer.network.gradient(x, t)
                ctrl_c()
                trainer.optimizer.update(trainer.network.params, grads)
                return trainer.network.last_layer.loss
            raise KeyboardInterrupt  # cut the step short, as a second Ctrl-C would
        return real_step(x, t)

    trainer.train_step = step


def interrupted_run(tmp_path, arrange, where, **options):
    """A seeded 3-epoch run interrupted as ``arrange(trainer)`` sets up, whose checkpoint must have stopped at
    ``where`` (epoch, step); returns the trainer resumed from it (not yet trained) and a straight run."""
    from xpnet.checkpoint import load_checkpoint

    path = tmp_path / "interrupted.npz"
    straight = seeded_trainer(3, **options).train()
    trainer = seeded_trainer(3, checkpoint_path=path, **options)
    arrange(trainer)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    checkpoint = load_checkpoint(path)
    assert (checkpoint.epoch, checkpoint.meta["step"]) == where
    resumed = make_trainer(np.random.default_rng(0), epochs=3, resume=path, **options)
    assert resumed.test_acc_list == straight.test_acc_list[:where[0]]
    return resumed, straight


def assert_resumes_to(resumed, straight):
    resumed.train()
    assert_same_run(resumed, straight)
    assert resumed.test_acc_list == straight.test_acc_list
    assert len(resumed.epoch_times) == len(straight.epoch_times) and min(resumed.epoch_times) > 0


def test_an_epoch_cut_by_ctrl_c_is_timed_with_the_seconds_before_and_after_the_resume(rng, tmp_path):
    pause = 0.02  # per step

    def slowed(trainer):
        step = trainer.train_step

        def slow_step(x, t):
            time.sleep(pause)
            return step(x, t)

        trainer.train_step = slow_step

    def arrange(trainer):
        slowed(trainer)
        interrupt_at(trainer, 9, "sigint")  # the third of six steps in the second epoch

    resumed, straight = interrupted_run(tmp_path, arrange, (1, 3))
    slowed(resumed)
    resumed.train()
    assert len(resumed.epoch_times) == 3
    # Five of its six steps slept (interrupt_at runs the cut one itself): two before the resume, three after.
    assert resumed.epoch_times[1] >= 5 * pause


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_resume_goes_on_from_that_step(device, rng, tmp_path):
    xpnet.set_device(device)
    # the third of six steps in the second epoch
    resumed, straight = interrupted_run(tmp_path, lambda trainer: interrupt_at(trainer, 9, "sigint"), (1, 3))
    assert (resumed.current_epoch, resumed.epoch_step, resumed.optimizer.iter) == (1, 3, 9)
    assert_resumes_to(resumed, straight)


@pytest.mark.parametrize("call, log_every, where", [
    (9, 20, (1, 3)),  # mid-epoch, with losses still on the device
    (10, 2, (1, 4)),  # on a step whose loss was just read
    (12, 20, (2, 0)),  # on the last step of an epoch: the epoch is finished and evaluated first
])
def test_ctrl_c_anywhere_in_an_epoch_resumes_to_the_same_run(device, rng, tmp_path, call, log_every, where):
    xpnet.set_device(device)
    assert_resumes_to(*interrupted_run(tmp_path, lambda trainer: interrupt_at(trainer, call, "sigint"), where,
                                       log_every=log_every))


def test_ctrl_c_while_the_last_losses_of_an_epoch_are_read_waits_for_the_end_of_the_epoch(device, rng, tmp_path):
    xpnet.set_device(device)

    def arrange(trainer):
        read = trainer._read_losses

        def interrupted_read(pending, first_step):
            if trainer.current_epoch == 1 and trainer.epoch_step == trainer.iter_per_epoch:
                ctrl_c()  # where a GPU run spends its time: waiting for the loss
            return read(pending, first_step)

        trainer._read_losses = interrupted_read

    assert_resumes_to(*interrupted_run(tmp_path, arrange, (2, 0)))


def test_ctrl_c_between_an_epochs_last_step_and_its_end_resumes_by_finishing_the_epoch(device, rng, tmp_path):
    import contextlib

    xpnet.set_device(device)

    def arrange(trainer):
        protected = trainer._interrupt.step

        @contextlib.contextmanager
        def step():
            if trainer.current_epoch == 1 and trainer.epoch_step == trainer.iter_per_epoch:
                raise KeyboardInterrupt  # Ctrl-C in the instant between the two
            with protected():
                yield

        trainer._interrupt.step = step

    assert_resumes_to(*interrupted_run(tmp_path, arrange, (1, 6)))  # 6 steps per epoch


def test_ctrl_c_during_the_evaluation_keeps_the_epochs_accuracies(device, rng, tmp_path):
    xpnet.set_device(device)

    def arrange(trainer):
        evaluate = trainer._evaluate

        def interrupted_evaluation():
            if trainer.current_epoch == 2:
                ctrl_c()
            evaluate()

        trainer._evaluate = interrupted_evaluation

    assert_resumes_to(*interrupted_run(tmp_path, arrange, (2, 0)))


def test_a_step_cut_short_leaves_the_last_checkpoint_as_it_was(device, rng, tmp_path):
    xpnet.set_device(device)
    path = tmp_path / "interrupted.npz"
    trainer = make_trainer(rng, epochs=3, checkpoint_path=path)
    interrupt_at(trainer, 8, "raise")  # in the second epoch
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    from xpnet.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    assert (checkpoint.epoch, checkpoint.meta["step"]) == (1, 0)


def test_resume_keeps_the_checkpoints_hyperparameters_except_those_given(rng, tmp_path):
    path = tmp_path / "ckpt.npz"
    make_trainer(rng, epochs=1, checkpoint_path=path, optimizer_param={"lr": 0.003, "beta2": 0.99}).train()
    x, t = blobs(rng)
    kept = Trainer(MultiLayerNet(6, [10], 3), x, t, x, t, optimizer="Adam", verbose=False, resume=path)
    assert (kept.optimizer.lr, kept.optimizer.beta2, kept.optimizer.iter) == (0.003, 0.99, 6)
    given = Trainer(MultiLayerNet(6, [10], 3), x, t, x, t, optimizer="Adam", optimizer_param={"lr": 0.05},
                    verbose=False, resume=path)
    assert (given.optimizer.lr, given.optimizer.beta2, given.optimizer.iter) == (0.05, 0.99, 6)


def test_optimizer_param_with_an_optimizer_object_is_refused(rng):
    from xpnet.optimizer import SGD

    x, t = blobs(rng)
    with pytest.raises(ValueError, match="optimizer_param is for an optimizer given by name; SGD was given as an object"):
        Trainer(MultiLayerNet(6, [4], 3), x, t, x, t, optimizer=SGD(0.1), optimizer_param={"lr": 0.5}, verbose=False)


def test_labels_are_checked_once_before_training(device, rng):
    xpnet.set_device(device)
    x, t = blobs(rng)
    with pytest.raises(ValueError, match="training labels run from 3 to 5, but the network has 3 outputs"):
        Trainer(MultiLayerNet(6, [4], 3), x, t + 3, x, t, verbose=False)
    with pytest.raises(ValueError, match="test labels run from -1 to 1, but the network has 3 outputs"):
        Trainer(MultiLayerNet(6, [4], 3), x, t, x, t - 1, verbose=False)
    with pytest.raises(ValueError, match="training data: 120 examples but 119 labels"):
        Trainer(MultiLayerNet(6, [4], 3), x, t[:-1], x, t, verbose=False)


def test_a_column_of_index_labels_trains_like_a_vector_of_them(device, rng):
    xpnet.set_device(device)
    x, t = blobs(rng)
    runs = []
    for labels in (t, t.reshape(-1, 1)):
        xpnet.seed(0)
        trainer = Trainer(MultiLayerNet(6, [10], 3), x[:90], labels[:90], x[90:], labels[90:], epochs=5,
                          mini_batch_size=16, optimizer="Adam", optimizer_param={"lr": 0.01}, verbose=False, seed=1)
        runs.append(trainer.train())
    np.testing.assert_allclose(runs[1].train_loss_list, runs[0].train_loss_list, rtol=1e-6)
    assert runs[1].test_acc_list == runs[0].test_acc_list and runs[1].test_acc_list[-1] >= 0.9


class BookStyleNet:
    """A network as the book's chapter scripts write their own: layers over float64 arrays in an OrderedDict,
    ``accuracy(x, t)`` without a batch size, and no ``device``, ``state`` or ``load_state``."""

    def __init__(self, rng, device):
        self.params = to_device({"W1": 0.3 * rng.standard_normal((6, 10)), "b1": np.zeros(10),
                                 "W2": 0.3 * rng.standard_normal((10, 3)), "b2": np.zeros(3)}, device)
        self.layers = OrderedDict(Affine1=Affine(self.params["W1"], self.params["b1"]), Relu1=Relu(),
                                  Affine2=Affine(self.params["W2"], self.params["b2"]))
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        x = to_device(x, xpnet.backend.device_of(self.params["W1"]))
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), to_device(t, xpnet.backend.device_of(self.params["W1"])))

    def accuracy(self, x, t):
        return float((to_numpy(self.predict(x)).argmax(axis=1) == to_numpy(t)).mean())

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}


class FourMethodNet:
    """Nothing but params, gradient, loss and accuracy (no predict, no last_layer)."""

    def __init__(self, inner):
        self.params, self.gradient, self.accuracy = inner.params, inner.gradient, inner.accuracy
        self.loss_calls = 0
        self._loss = inner.loss

    def loss(self, x, t):
        self.loss_calls += 1
        return self._loss(x, t)


def test_a_network_of_the_books_own_style_trains_on_the_device_of_its_parameters(device, rng):
    x, t = blobs(rng)
    net = BookStyleNet(rng, device)
    w1 = net.params["W1"]
    trainer = Trainer(net, x[:90], t[:90], x[90:], t[90:], epochs=5, mini_batch_size=16, optimizer="Adam",
                      optimizer_param={"lr": 0.01}, verbose=False, seed=1).train()
    assert net.params["W1"] is w1 and xpnet.backend.device_of(w1) == device and w1.dtype == np.float64
    assert trainer.train_loss_list[-1] < trainer.train_loss_list[0] / 2 and trainer.test_acc_list[-1] >= 0.9


def test_a_network_with_only_the_four_methods_trains_and_checkpoints(device, rng, tmp_path):
    xpnet.set_device(device)
    x, t = blobs(rng)
    net = FourMethodNet(MultiLayerNet(6, [10], 3))
    trainer = Trainer(net, x[:90], t[:90], x[90:], t[90:], epochs=2, mini_batch_size=30, verbose=False,
                      checkpoint_path=tmp_path / "run.npz").train()
    assert net.loss_calls == len(trainer.train_loss_list) == 6  # the loss after each update, as the book reads it
    resumed = Trainer(FourMethodNet(MultiLayerNet(6, [10], 3)), x[:90], t[:90], x[90:], t[90:], epochs=2,
                      mini_batch_size=30, verbose=False, resume=tmp_path / "run.npz")
    for name, value in net.params.items():
        np.testing.assert_array_equal(to_numpy(resumed.network.params[name]), to_numpy(value))


class CountingNet(MultiLayerNet):
    """A MultiLayerNet that records how many examples each accuracy call saw."""

    def accuracy(self, x, t, batch_size=100):
        self.seen = getattr(self, "seen", []) + [len(x)]
        return super().accuracy(x, t, batch_size)


def test_the_final_test_accuracy_is_measured_over_the_whole_test_set_as_the_book_does(rng, capsys):
    x, t = blobs(rng, n=150)
    net = CountingNet(6, [10], 3)
    trainer = Trainer(net, x[:90], t[:90], x[90:], t[90:], epochs=2, mini_batch_size=30,
                      evaluate_sample_num_per_epoch=20, verbose=True).train()
    assert net.seen == [20, 20, 20, 20, 60]  # train and test samples per epoch, then the whole test set
    assert len(trainer.test_acc_list) == 2
    assert trainer.final_test_acc == net.accuracy(x[90:], t[90:])
    assert f"test acc: {trainer.final_test_acc:.4f}" in capsys.readouterr().out


def test_the_final_test_accuracy_is_the_last_epochs_when_that_was_over_the_whole_test_set(rng):
    x, t = blobs(rng)
    net = CountingNet(6, [10], 3)
    trainer = Trainer(net, x[:90], t[:90], x[90:], t[90:], epochs=2, mini_batch_size=30, verbose=False).train()
    assert net.seen == [90, 30, 90, 30] and trainer.final_test_acc == trainer.test_acc_list[-1]


def test_the_progress_bar_shows_epoch_loss_and_speed(rng, capsys):
    make_trainer(rng, epochs=1, verbose=True, log_every=2).train()
    err = capsys.readouterr()
    text = err.out + err.err
    assert "epoch 1/1" in text and "loss" in text and "ex/s" in text and "test acc" in text


def test_quiet_training_prints_nothing(rng, capsys):
    make_trainer(rng, epochs=1).train()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_gpu_training_follows_the_cpu_step_for_step(rng):
    """The first steps from the same seed agree within float32 tolerance on both devices."""
    if not xpnet.gpu_available():
        pytest.skip(f"needs a usable GPU to compare with the CPU ({xpnet.gpu_unavailable_reason()})")
    x = rng.random((64, 1, 12, 12), dtype=np.float32)
    t = rng.integers(0, 10, 64)
    losses, params = [], []
    for device in ("cpu", "gpu"):
        xpnet.set_device(device)
        xpnet.seed(11)
        net = SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 8, "filter_size": 3, "pad": 1, "stride": 1},
                            hidden_size=20, weight_init_std="he")
        trainer = Trainer(net, x, t, x, t, epochs=1, mini_batch_size=8, optimizer="Adam",
                          optimizer_param={"lr": 0.001}, verbose=False, seed=5, log_every=1)
        trainer.train()
        losses.append(trainer.train_loss_list)
        params.append({k: to_numpy(v) for k, v in net.params.items()})
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    for k in params[0]:
        np.testing.assert_allclose(params[1][k], params[0][k], rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.slow
def test_the_training_example_runs_on_the_device_xpnet_device_names(device):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "XPNET_DEVICE": "cpu" if device == "cpu" else "gpu"}
    run = subprocess.run([sys.executable, str(repo / "examples" / "train_convnet.py")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"device: {device}"
    assert float(lines[-1].split()[-1]) >= 0.95, lines[-1]


def visited_rows(trainer):
    """Record the rows of x_train that each training step receives (host copies, in order)."""
    seen, real_step = [], trainer.train_step

    def step(x, t):
        seen.append(to_numpy(x))
        return real_step(x, t)

    trainer.train_step = step
    return seen


def test_a_resume_with_another_batch_size_goes_on_from_the_examples_seen(device, tmp_path):
    xpnet.set_device(device)
    path = tmp_path / "run.npz"
    trainer = seeded_trainer(3, checkpoint_path=path)
    interrupt_at(trainer, 6 + 2, "sigint")  # after 2 steps of 16 examples of epoch 2 (6 steps per epoch)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    from xpnet.checkpoint import load_checkpoint

    assert load_checkpoint(path).meta["examples"] == 2 * 16
    x, t = blobs(np.random.default_rng(0))
    resumed = Trainer(MultiLayerNet(6, [10], 3), x[:90], t[:90], x[90:], t[90:], epochs=3, mini_batch_size=10,
                      optimizer="Adam", optimizer_param={"lr": 0.01}, verbose=False, resume=path)
    rows = visited_rows(resumed)
    resumed.train()
    order = [np.random.default_rng([1, epoch]).permutation(90) for epoch in (2, 3)]
    expected = np.concatenate([x[order[0][32:]], x[order[1]]])
    np.testing.assert_array_equal(np.concatenate(rows), expected)  # no example skipped, none seen twice
    assert [len(r) for r in rows] == [10] * 5 + [8] + [10] * 9  # the rest of epoch 2, then all of epoch 3
    assert len(resumed.train_loss_list) == 6 + 2 + 6 + 9 and len(resumed.test_acc_list) == 3


def test_a_resume_with_another_seed_is_refused_and_without_one_takes_the_checkpoints(device, tmp_path):
    xpnet.set_device(device)
    path = tmp_path / "run.npz"
    seeded_trainer(1, checkpoint_path=path).train()  # seed 1
    with pytest.raises(ValueError, match=r"trained with seed 1, but this run asks for seed 2; resume with the "
                                         r"checkpoint's seed"):
        seeded_trainer(2, resume=path, seed=2)
    assert seeded_trainer(2, resume=path, seed=1).seed == 1
    assert seeded_trainer(2, resume=path, seed=None).seed == 1


# --- reliability: dropout on resume, divergence, checked and all-or-nothing resumes, counts ------------------


def dropout_run(tmp_path, epochs, **kwargs):
    """DeepConvNet (dropout after its hidden layers) on 40 8x8 images: seeded data, weights, shuffles and masks."""
    from xpnet.nets import DeepConvNet

    xpnet.seed(0)
    x, t = blobs(np.random.default_rng(0), n=40, features=64)
    x = x.reshape(40, 1, 8, 8)
    net = DeepConvNet(input_dim=(1, 8, 8), hidden_size=10, output_size=3)
    return Trainer(net, x[:30], t[:30], x[30:], t[30:], epochs=epochs, mini_batch_size=10, optimizer="SGD",
                   optimizer_param={"lr": 0.01}, verbose=False, seed=3, **kwargs)


def test_a_network_with_dropout_resumed_from_a_checkpoint_equals_the_straight_run_bit_for_bit(tmp_path):
    straight = dropout_run(tmp_path, 2).train()
    path = tmp_path / "half.npz"
    dropout_run(tmp_path, 1, checkpoint_path=path).train()
    xpnet.seed(123)  # the masks of the resumed run come from the checkpoint, not from this
    resumed = dropout_run(tmp_path, 2, resume=path)
    resumed.train()
    assert resumed.train_loss_list == straight.train_loss_list
    for name, value in straight.network.params.items():
        np.testing.assert_array_equal(to_numpy(resumed.network.params[name]), to_numpy(value), err_msg=name)


def test_a_run_that_diverges_but_stays_finite_stops_and_keeps_the_good_checkpoint(rng, tmp_path):
    path = tmp_path / "run.npz"
    trainer = make_trainer(rng, epochs=2, checkpoint_path=path, optimizer="SGD", optimizer_param={"lr": 0.1})
    trainer.train()
    good = path.read_bytes()
    finite = []
    real_step = trainer.train_step

    def step(x, t):  # the losses of --lr 1e6: huge but finite
        real_step(x, t)
        finite.append(1e24)
        return np.float32(1e24)

    trainer.train_step, trainer.epochs = step, 4
    with pytest.raises(TrainingDivergedError, match=r"the loss is 1e\+24 for 6 steps up to step 18 \(epoch 3\), more than 100 "
                                                    r"times the first loss .*the run diverged.*unchanged"):
        trainer.train()
    assert path.read_bytes() == good and trainer.current_epoch == 2


def test_a_loss_far_above_its_start_for_ten_steps_in_a_row_stops_within_the_epoch(rng):
    trainer = make_trainer(rng, epochs=1, log_every=1)
    trainer.x_train = np.repeat(trainer.x_train, 3, axis=0)  # 270 examples, 17 steps
    trainer.t_train = np.repeat(trainer.t_train, 3, axis=0)
    trainer.train_size, trainer.iter_per_epoch = 270, 17
    real_step, calls = trainer.train_step, []

    def step(x, t):
        calls.append(1)
        loss = real_step(x, t)
        return np.float32(1e6) if len(calls) > 2 else loss

    trainer.train_step = step
    with pytest.raises(TrainingDivergedError, match=r"the loss is 1e\+06 for 10 steps up to step 12 \(epoch 1\)"):
        trainer.train()


def test_a_diverging_run_prints_no_numpy_overflow_warnings(rng, recwarn):
    trainer = make_trainer(rng, epochs=3, optimizer="SGD", optimizer_param={"lr": 1e30}, log_every=1)
    with pytest.raises(TrainingDivergedError):
        trainer.train()
    assert [str(w.message) for w in recwarn if issubclass(w.category, RuntimeWarning)] == []


def test_resume_checks_the_checkpoint_against_the_run_before_restoring_anything(rng, tmp_path):
    from xpnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = tmp_path / "run.npz"
    make_trainer(rng, epochs=2, checkpoint_path=path).train()
    checkpoint = load_checkpoint(path)
    tampered = tmp_path / "epoch1000.npz"
    save_checkpoint(tampered, checkpoint.params, epoch=1000, **checkpoint.meta)
    fresh = make_trainer(np.random.default_rng(0), epochs=3)
    before = {k: v.copy() for k, v in fresh.network.params.items()}
    with pytest.raises(CheckpointError, match=r"epoch1000.npz: the checkpoint is at epoch 1000, beyond this run's 3 "
                                              r"epochs"):
        fresh.load_checkpoint(tampered)
    for name, value in before.items():
        np.testing.assert_array_equal(fresh.network.params[name], value)


def test_a_resume_that_fails_on_the_optimizer_leaves_the_network_and_the_optimizer_unchanged(rng, tmp_path,
                                                                                           monkeypatch):
    from xpnet.optimizer import Adam

    path = tmp_path / "run.npz"
    make_trainer(rng, epochs=2, checkpoint_path=path).train()
    fresh = make_trainer(np.random.default_rng(1), epochs=3)
    before = {k: v.copy() for k, v in fresh.network.params.items()}
    optimizer_before = fresh.optimizer.state_dict()
    host_before = xpnet.backend.host_rng().bit_generator.state
    real_load = Adam.load_state_dict

    def half_load(self, state, device=None):  # the checkpoint's fails half way, after the hyperparameters were set
        real_load(self, state, device)
        if state["iter"]:
            raise ValueError("Adam.load_state_dict: damaged state")

    monkeypatch.setattr(Adam, "load_state_dict", half_load)
    with pytest.raises(ValueError, match="run.npz: Adam.load_state_dict: damaged state"):
        fresh.load_checkpoint(path)
    monkeypatch.setattr(Adam, "load_state_dict", real_load)
    for name, value in before.items():
        np.testing.assert_array_equal(fresh.network.params[name], value, err_msg=name)
    assert fresh.optimizer.state_dict().keys() == optimizer_before.keys()
    assert fresh.optimizer.iter == optimizer_before["iter"] and fresh.optimizer.lr == optimizer_before["lr"]
    assert xpnet.backend.host_rng().bit_generator.state == host_before
    assert fresh.current_epoch == 0


def test_a_checkpoint_of_another_network_is_named_on_resume(rng, tmp_path):
    from xpnet.checkpoint import CheckpointError

    path = tmp_path / "mlp.npz"
    make_trainer(rng, epochs=1, checkpoint_path=path).train()
    x, t = blobs(np.random.default_rng(0), features=16)
    other = SimpleConvNet(input_dim=(1, 4, 4), conv_param={"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1},
                          hidden_size=5, output_size=3)
    with pytest.raises(CheckpointError, match="the checkpoint holds a MultiLayerNet, but this run trains a "
                                              "SimpleConvNet"):
        Trainer(other, x.reshape(-1, 1, 4, 4), t, x.reshape(-1, 1, 4, 4), t, epochs=2, verbose=False, resume=path)


@pytest.mark.parametrize("epochs, mini_batch_size", [(2.7, 16), (0, 16), (True, 16), (2, 16.5), (2, "16")])
def test_epochs_and_batch_sizes_are_whole_numbers(rng, epochs, mini_batch_size):
    with pytest.raises(ValueError, match=r"(epochs|mini_batch_size) must be a whole number >= 1, got "):
        make_trainer(rng, epochs=epochs, mini_batch_size=mini_batch_size)


def test_a_batch_larger_than_the_training_set_is_a_warning_saying_what_an_epoch_is(rng):
    with pytest.warns(UserWarning, match=r"the batch size 500 is larger than the training set \(90 examples\): each "
                                         r"epoch is one step of all 90 examples"):
        trainer = make_trainer(rng, epochs=1, mini_batch_size=500)
    assert [len(b) for b in trainer._batches(1)] == [90]
