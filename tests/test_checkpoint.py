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
    ("text", r"cannot be read as an \.npz archive"),
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
