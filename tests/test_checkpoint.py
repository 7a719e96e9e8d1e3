"""Checkpoints: round trips from any device, no pickle, no CuPy needed to read, atomic writes, clear errors."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xpnet import checkpoint, to_device, to_numpy
from xpnet.backend import device_of
from xpnet.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_params,
    restore_params,
    save_checkpoint,
    save_params,
)
from xpnet.optimizer import Adam

ROOT = Path(__file__).resolve().parents[1]


def network_params(rng, device, dtype=np.float32):
    shapes = {"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,), "BatchNorm1.running_mean": (3,)}
    return {k: to_device(rng.standard_normal(s).astype(dtype), device) for k, s in shapes.items()}


def trained_adam(params, device, steps=2):
    optimizer = Adam(lr=0.01)
    for _ in range(steps):
        optimizer.update(params, {k: v * 0.5 for k, v in params.items()})
    return optimizer


# --- round trips ------------------------------------------------------------------------------


def test_round_trip_of_params_optimizer_epoch_and_meta(device, rng, tmp_path):
    path = tmp_path / "ckpt.npz"
    params = network_params(rng, device)
    optimizer = trained_adam(params, device)
    history = json.dumps({"train_loss_list": [2.3, 1.9]})
    save_checkpoint(path, params, optimizer=optimizer, epoch=3, seed=7, history=history, note="run A", tf32=False)

    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint)
    assert (loaded.epoch, loaded.version, loaded.optimizer_name) == (3, FORMAT_VERSION, "Adam")
    assert loaded.meta == {"seed": 7, "history": history, "note": "run A", "tf32": False}
    assert set(loaded.params) == set(params)
    for k, v in loaded.params.items():
        assert type(v) is np.ndarray and v.dtype == np.float32
        np.testing.assert_array_equal(v, to_numpy(params[k]))
    expected_state = optimizer.state_dict()
    assert set(loaded.optimizer_state) == set(expected_state)
    for k, v in expected_state.items():
        if "/" in k:
            np.testing.assert_array_equal(loaded.optimizer_state[k], v)
        else:
            assert loaded.optimizer_state[k] == v and type(loaded.optimizer_state[k]) is type(v), k


def test_resuming_from_a_checkpoint_gives_the_same_next_step(device, rng, tmp_path):
    path = tmp_path / "ckpt.npz"
    params = network_params(rng, device)
    optimizer = trained_adam(params, device)
    save_checkpoint(path, params, optimizer=optimizer, epoch=1)

    fresh = network_params(np.random.default_rng(1), device)
    originals = dict(fresh)
    loaded = load_checkpoint(path)
    restore_params(fresh, loaded.params)
    resumed = Adam(lr=0.5)
    resumed.load_state_dict(loaded.optimizer_state)

    grads = {k: v * 0.25 for k, v in params.items()}
    optimizer.update(params, grads)
    resumed.update(fresh, {k: to_device(to_numpy(v), device) for k, v in grads.items()})
    for k in params:
        assert fresh[k] is originals[k]
        np.testing.assert_array_equal(to_numpy(fresh[k]), to_numpy(params[k]))


def test_params_only_files(device, rng, tmp_path):
    path = tmp_path / "params.npz"
    params = network_params(rng, device)
    save_params(path, params)
    loaded = load_params(path)
    assert set(loaded) == set(params)
    for k in params:
        np.testing.assert_array_equal(loaded[k], to_numpy(params[k]))
    assert load_checkpoint(path).optimizer_name is None and load_checkpoint(path).epoch == 0
    # the parameters of a full checkpoint load the same way
    save_checkpoint(tmp_path / "full.npz", params, optimizer=trained_adam(params, device), epoch=2)
    assert set(load_params(tmp_path / "full.npz")) == set(params)


def test_the_file_is_a_plain_npz_without_pickle(device, rng, tmp_path):
    path = tmp_path / "ckpt.npz"
    params = network_params(rng, device)
    save_checkpoint(path, params, optimizer=trained_adam(params, device), epoch=5, seed=1)
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    assert all(not v.dtype.hasobject for v in entries.values())
    assert int(entries["xpnet/format_version"]) == FORMAT_VERSION and int(entries["xpnet/epoch"]) == 5
    assert str(entries["xpnet/optimizer"]) == "Adam"
    assert {k for k in entries if k.startswith("params/")} == {"params/" + k for k in params}
    assert "optimizer/m/W1" in entries and entries["optimizer/lr"].ndim == 0


@pytest.mark.parametrize("writer", ["checkpoint", "params"])
def test_a_file_written_from_any_device_loads_without_cupy(device, rng, tmp_path, writer):
    path = tmp_path / "ckpt.npz"
    params = network_params(rng, device)
    if writer == "checkpoint":
        save_checkpoint(path, params, optimizer=trained_adam(params, device), epoch=2)
    else:
        save_params(path, params)
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "from xpnet.checkpoint import load_checkpoint\n"
        f"c = load_checkpoint({str(path)!r})\n"
        "assert all(type(v).__module__ == 'numpy' for v in c.params.values())\n"
        "assert all(type(v).__module__ == 'numpy' for v in c.optimizer_state.values() if hasattr(v, 'shape'))\n"
        "print(c.epoch, c.optimizer_name, sorted(c.params), c.params['W1'].dtype)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = "2 Adam" if writer == "checkpoint" else "0 None"
    assert result.stdout.split("[")[0].strip() == expected
    assert result.stdout.strip().endswith("float32")


# --- restoring into a network's arrays ---------------------------------------------------------


def test_restore_params_copies_in_place_on_the_parameters_device_and_dtype(device, rng):
    params = network_params(rng, device)
    originals = dict(params)
    host = {k: rng.standard_normal(v.shape) for k, v in params.items()}  # float64 on the host
    restore_params(params, host)
    for k, v in params.items():
        assert v is originals[k] and v.dtype == np.float32 and device_of(v) == device
        np.testing.assert_allclose(to_numpy(v), host[k].astype(np.float32))


def test_wrong_keys_are_named_and_nothing_is_copied(device, rng):
    params = network_params(rng, device)
    before = {k: to_numpy(v).copy() for k, v in params.items()}
    loaded = {k: to_numpy(v) for k, v in params.items() if k != "W2"}
    loaded["W3"] = np.zeros((3, 2), np.float32)
    with pytest.raises(CheckpointError, match=r"^run\.npz: .*missing parameters \['W2'\]; unexpected parameters \['W3'\]$"):
        restore_params(params, {k: v + 1 for k, v in loaded.items()}, where="run.npz")
    for k, v in params.items():
        np.testing.assert_array_equal(to_numpy(v), before[k])


def test_wrong_shapes_are_named(device, rng):
    params = network_params(rng, device)
    loaded = {k: to_numpy(v) for k, v in params.items()}
    loaded["W1"] = np.zeros((5, 3), np.float32)
    loaded["b2"] = np.zeros((2, 1), np.float32)
    with pytest.raises(CheckpointError, match=r"shape mismatches 'W1': expected \(4, 3\), found \(5, 3\), "
                                              r"'b2': expected \(2,\), found \(2, 1\)") as info:
        restore_params(params, loaded)
    assert isinstance(info.value, ValueError) and info.value.where == "checkpoint"


# --- atomic writes ------------------------------------------------------------------------------


def failing_savez(file, **entries):
    """Writes part of an archive, then fails, as a full disk or a crash would."""
    file.write(b"PK\x03\x04 half an archive")
    raise OSError(28, "No space left on device")


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(rng, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    params = network_params(rng, "cpu")
    save_checkpoint(path, params, epoch=1)
    good = path.read_bytes()
    monkeypatch.setattr(checkpoint.np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, params, epoch=2)
    with pytest.raises(OSError, match="No space left"):
        save_params(tmp_path / "new.npz", params)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]
    monkeypatch.undo()
    assert load_checkpoint(path).epoch == 1


def test_the_file_is_written_at_exactly_the_given_path(rng, tmp_path):
    save_params(tmp_path / "weights.bin", network_params(rng, "cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
    assert set(load_params(str(tmp_path / "weights.bin"))) == set(network_params(rng, "cpu"))


def test_unsaveable_values_are_refused_before_writing(rng, tmp_path):
    path = tmp_path / "ckpt.npz"
    with pytest.raises(ValueError, match="metadata must be JSON-serializable"):
        save_checkpoint(path, network_params(rng, "cpu"), network=object())
    with pytest.raises(ValueError, match="params: 'W' is an object array"):
        save_params(path, {"W": np.array([None, 1], dtype=object)})
    assert list(tmp_path.iterdir()) == []


# --- files that are not checkpoints --------------------------------------------------------------


def write_npz(path, **entries):
    with open(path, "wb") as f:
        np.savez(f, **entries)
    return path


def header(version=FORMAT_VERSION, kind="checkpoint"):
    return {"xpnet/format_version": np.asarray(version), "xpnet/kind": np.asarray(kind),
            "xpnet/optimizer": np.asarray(""), "xpnet/meta": np.asarray("{}")}


def test_a_newer_format_version_is_refused(tmp_path):
    path = write_npz(tmp_path / "future.npz", **header(version=FORMAT_VERSION + 1), **{"params/W": np.ones(2)})
    with pytest.raises(CheckpointError, match=r"future\.npz: format version 2 is newer than this xpnet reads \(up to 1\); upgrade xpnet"):
        load_checkpoint(path)


@pytest.mark.parametrize("case, reason", [
    ("an npz of plain arrays", r"not an xpnet checkpoint: no 'xpnet/format_version' entry \(entries: W1, b1\)"),
    ("a single npy array", r"not an xpnet checkpoint: a single \.npy array"),
    ("text", r"not an xpnet checkpoint: not an \.npz archive \(it begins with b'epoch=3\\n'\)"),
    ("a truncated checkpoint", r"cannot be read as an \.npz archive \(BadZipFile"),
    ("pickled object arrays", r"cannot be read as an \.npz archive \(ValueError: .*pickle"),
    ("an unknown entry", r"unexpected entries \['extra'\] for format version 1"),
    ("damaged metadata", r"damaged metadata"),
    ("an unknown kind", r"unknown kind 'model'"),
])
def test_files_that_are_not_checkpoints_are_refused_with_the_reason(tmp_path, case, reason):
    path = tmp_path / "file.npz"
    if case == "an npz of plain arrays":
        write_npz(path, W1=np.ones(2), b1=np.ones(1))
    elif case == "a single npy array":
        np.save(open(path, "wb"), np.ones(3))
    elif case == "text":
        path.write_text("epoch=3\n")
    elif case == "a truncated checkpoint":
        save_params(tmp_path / "good.npz", {"W": np.ones((50, 50))})
        path.write_bytes((tmp_path / "good.npz").read_bytes()[:2000])
    elif case == "pickled object arrays":
        write_npz(path, **header(), **{"params/W": np.array([{"a": 1}], dtype=object)})
    elif case == "an unknown entry":
        write_npz(path, **header(), extra=np.ones(1))
    elif case == "damaged metadata":
        write_npz(path, **{**header(), "xpnet/meta": np.asarray("{not json")})
    elif case == "an unknown kind":
        write_npz(path, **header(kind="model"))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {reason}"):
        load_checkpoint(path)


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.npz")


def test_a_text_file_or_random_bytes_are_not_a_checkpoint_and_no_pickle_advice_is_given(tmp_path):
    cases = {"notes.txt": b"epoch=3\nlr=0.01\n", "noise.bin": np.random.default_rng(0).bytes(300), "empty.npz": b""}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: not an xpnet checkpoint") as info:
            load_checkpoint(path)
        assert "pickle" not in str(info.value) and ".npz archive" in str(info.value), str(info.value)


def test_a_pickle_is_named_as_one_and_never_loaded(tmp_path):
    import pickle

    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps({"W1": np.ones(2)}))
    with pytest.raises(CheckpointError, match=r"not an xpnet checkpoint: a Python pickle, which xpnet never "
                                              r"loads") as info:
        load_checkpoint(path)
    assert "allow_pickle" not in str(info.value)


# --- arrays of the wrong kind, and values that are not finite --------------------------------------


@pytest.mark.parametrize("bad", [np.ones((4, 3), bool), np.ones((4, 3), np.int64), np.ones((4, 3), np.complex64),
                                 np.full((4, 3), "0.5")], ids=["bool", "int64", "complex64", "str"])
def test_a_parameter_that_is_not_floating_point_is_refused(tmp_path, bad):
    path = write_npz(tmp_path / "ckpt.npz", **header(), **{"xpnet/epoch": np.asarray(1), "params/W1": bad,
                                                           "params/b1": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=rf"params/W1 is {bad.dtype} \(4, 3\); expected a floating-point "
                                              r"array \(float32 or float64\)"):
        load_checkpoint(path)


def test_optimizer_state_arrays_of_the_wrong_kind_are_refused(rng, tmp_path):
    params = network_params(rng, "cpu")
    optimizer = trained_adam(params, "cpu")
    save_checkpoint(tmp_path / "good.npz", params, optimizer=optimizer, epoch=1)
    with np.load(tmp_path / "good.npz") as f:
        entries = {k: f[k] for k in f.files}
    entries["optimizer/m/W1"] = entries["optimizer/m/W1"] > 0
    path = write_npz(tmp_path / "ckpt.npz", **entries)
    with pytest.raises(CheckpointError, match=r"optimizer/m/W1 is bool \(4, 3\); expected a floating-point array"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_parameters_that_are_not_finite_are_refused_on_load(rng, tmp_path, value):
    params = {k: to_numpy(v) for k, v in network_params(rng, "cpu").items()}
    params["W2"][1, 0] = params["W2"][0, 1] = value
    save_params(tmp_path / "params.npz", params)
    with pytest.raises(CheckpointError, match=r"params/W2 holds 2 NaN or infinite values of 6; values of a "
                                              r"diverged run are never loaded"):
        load_params(tmp_path / "params.npz")


def test_optimizer_state_that_is_not_finite_is_refused_on_load(rng, tmp_path):
    params = network_params(rng, "cpu")
    optimizer = trained_adam(params, "cpu")
    optimizer.v["b1"][0] = np.inf
    save_checkpoint(tmp_path / "ckpt.npz", params, optimizer=optimizer, epoch=1)
    with pytest.raises(CheckpointError, match=r"optimizer/v/b1 holds 1 NaN or infinite values of 3"):
        load_checkpoint(tmp_path / "ckpt.npz")


@pytest.mark.parametrize("bad", [np.ones((4, 3), bool), np.ones((4, 3), np.int32), np.ones((4, 3), np.complex128)],
                         ids=["bool", "int32", "complex128"])
def test_restore_params_refuses_arrays_that_are_not_floating_point_and_copies_nothing(device, rng, bad):
    params = network_params(rng, device)
    before = {k: to_numpy(v).copy() for k, v in params.items()}
    loaded = {k: to_numpy(v) + 1 for k, v in params.items()}
    loaded["W1"] = bad
    with pytest.raises(CheckpointError, match=rf"^run\.npz: the parameters do not fit this network: 'W1' "
                                              rf"is {bad.dtype}, expected float32 like the network's parameter"):
        restore_params(params, loaded, where="run.npz")
    for k, v in params.items():
        np.testing.assert_array_equal(to_numpy(v), before[k])


# --- the training metadata: damaged or tampered values are refused with the entry named -------------


def trainer_checkpoint(path, rng, epoch=2, **meta):
    """A checkpoint as the Trainer writes it, after ``epoch`` epochs of 3 steps, with ``meta`` overriding entries."""
    params = network_params(rng, "cpu")
    history = {"train_loss_list": [2.3, 2.0, 1.8, 1.5, 1.2, 1.1][:3 * epoch], "train_acc_list": [0.5, 0.7][:epoch],
               "test_acc_list": [0.45, 0.66][:epoch], "epoch_times": [1.5, 1.4][:epoch]}
    values = {"step": 0, "seed": 7, "epoch_seconds": 0.0, "history": json.dumps(history), **meta}
    save_checkpoint(path, params, optimizer=trained_adam(params, "cpu"), epoch=epoch, **values)
    return path


def test_the_training_state_of_a_good_checkpoint(rng, tmp_path):
    path = trainer_checkpoint(tmp_path / "ckpt.npz", rng, step=1, epoch_seconds=0.25,
                              history=json.dumps({"train_loss_list": [2.3, 2.0, 1.8, 1.5, 1.2, 1.1, 0.9],
                                                  "train_acc_list": [0.5, 0.7], "test_acc_list": [0.45, 0.66],
                                                  "epoch_times": [1.5, 1.4]}))
    state = load_checkpoint(path).validate(epochs=5, steps_per_epoch=3)
    assert (state.epoch, state.step, state.seed, state.epoch_seconds) == (2, 1, 7, 0.25)
    assert state.history["train_loss_list"][-1] == 0.9 and state.history["test_acc_list"] == [0.45, 0.66]
    assert load_checkpoint(path).validate().epoch == 2  # without a run to compare with: the format only


def test_a_checkpoint_without_its_epoch_is_refused(tmp_path):
    path = write_npz(tmp_path / "ckpt.npz", **header(), **{"params/W": np.ones(2, np.float32)})
    with pytest.raises(CheckpointError, match=r"the entry 'xpnet/epoch' is missing"):
        load_checkpoint(path)
    path = write_npz(tmp_path / "params.npz", **header(kind="params"), **{"params/W": np.ones(2, np.float32)})
    assert load_checkpoint(path).epoch == 0  # a parameters file has no epoch


def test_a_negative_epoch_is_refused(tmp_path):
    path = write_npz(tmp_path / "ckpt.npz", **header(), **{"xpnet/epoch": np.asarray(-3), "params/W": np.ones(2)})
    with pytest.raises(CheckpointError, match=r"the entry 'xpnet/epoch' must be >= 0, got -3"):
        load_checkpoint(path)


def test_an_epoch_beyond_the_run_is_refused(rng, tmp_path):
    path = trainer_checkpoint(tmp_path / "ckpt.npz", rng, history="{}")
    entries = dict(np.load(path))
    entries["xpnet/epoch"] = np.asarray(1000)
    write_npz(path, **entries)
    checkpoint = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: the checkpoint is at epoch 1000, beyond "
                                              r"this run's 20 epochs; give more epochs to train on from it"):
        checkpoint.validate(epochs=20, steps_per_epoch=3)


def test_a_step_beyond_the_epoch_is_refused(rng, tmp_path):
    path = trainer_checkpoint(tmp_path / "ckpt.npz", rng, step=4)
    with pytest.raises(CheckpointError, match=r"the checkpoint stopped after step 4 of an epoch, but this run has 3 "
                                              r"steps per epoch"):
        load_checkpoint(path).validate(epochs=5, steps_per_epoch=3)


@pytest.mark.parametrize("meta, message", [
    ({"step": "abc"}, r"meta 'step' must be an integer >= 0, got 'abc'"),
    ({"step": -1}, r"meta 'step' must be an integer >= 0, got -1"),
    ({"step": 1.5}, r"meta 'step' must be an integer >= 0, got 1.5"),
    ({"seed": "x"}, r"meta 'seed' must be an integer, got 'x'"),
    ({"epoch_seconds": -1.0}, r"meta 'epoch_seconds' must be a finite number >= 0, got -1.0"),
    ({"epoch_seconds": float("nan")}, r"meta 'epoch_seconds' must be a finite number >= 0, got nan"),
    ({"epoch_seconds": "1e3"}, r"meta 'epoch_seconds' must be a finite number >= 0, got '1e3'"),
    ({"history": [1, 2]}, r"meta 'history' must be a JSON object in a string, got a list"),
    ({"history": "[1, 2]"}, r"meta 'history' must be a JSON object in a string, got a list"),
    ({"history": "{oops"}, r"meta 'history' is not valid JSON \(Expecting property name"),
    ({"history": json.dumps({"train_loss_list": {"a": 1}})}, r"history 'train_loss_list' must be a list of "
                                                             r"numbers, got a dict"),
    ({"history": json.dumps({"train_loss_list": [1.0, "2"]})}, r"history 'train_loss_list' must be a list of "
                                                               r"finite numbers, got '2' at 1"),
    ({"history": json.dumps({"train_acc_list": [0.5, 1.5]})}, r"history 'train_acc_list' holds 1.5 at 1; an "
                                                              r"accuracy lies in \[0, 1\]"),
    ({"history": json.dumps({"epoch_times": [1.0, -2.0]})}, r"history 'epoch_times' holds -2.0 at 1; seconds "
                                                            r"are >= 0"),
    ({"history": json.dumps({"train_loss_list": [1.0, None]})}, r"history 'train_loss_list' must be a "
                                                                r"list of finite numbers, got None at 1"),
])
def test_damaged_training_metadata_is_refused_on_load_with_the_entry_named(rng, tmp_path, meta, message):
    path = trainer_checkpoint(tmp_path / "ckpt.npz", rng, **meta)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {message}"):
        load_checkpoint(path)


@pytest.mark.parametrize("history, message", [
    ({"train_acc_list": [0.5]}, r"history 'train_acc_list' has 1 entries for 2 finished epochs"),
    ({"epoch_times": [1.0, 1.0, 1.0]}, r"history 'epoch_times' has 3 entries for 2 finished epochs"),
    ({"train_loss_list": [2.3]}, r"history 'train_loss_list' has 1 losses, too few for 2 finished epochs and 0 "
                                 r"steps of the next"),
])
def test_a_history_that_disagrees_with_the_epoch_is_refused(rng, tmp_path, history, message):
    path = trainer_checkpoint(tmp_path / "ckpt.npz", rng, history=json.dumps(history))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path).validate(epochs=5, steps_per_epoch=3)
