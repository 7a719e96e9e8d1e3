"""Faults injected into real runs: SIGKILL while checkpoints are written, SIGINT at random moments, a full disk and a
read-only folder. Each asserts that the last good checkpoint loads and that a run resumes from it.

The full disk and the read-only folder are small tmpfs mounts made by the test; they need root (where permissions
would not stop root, a mount does), and skip, saying so, elsewhere. Every mount is unmounted at the end.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mounts import tmpfs
from xpnet.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real runs killed and interrupted many times: CI runs them with -m slow

REPO = Path(__file__).resolve().parents[1]

# A run of many one-step epochs whose checkpoints are large (Adam's state of 1.2 million parameters, about 15 MB):
# most of its time is spent writing them, so a kill at a random moment often lands inside a write.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import xpnet
    from xpnet.nets import MultiLayerNet
    from xpnet.trainer import Trainer

    path, epochs, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    xpnet.seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    t = rng.integers(0, 3, 60)
    net = MultiLayerNet(6, [width, width], 3)
    trainer = Trainer(net, x[:40], t[:40], x[40:], t[40:], epochs=epochs, mini_batch_size=20, optimizer="Adam",
                      optimizer_param={"lr": 0.001}, verbose=False, seed=1, checkpoint_path=path,
                      resume=path if os.path.exists(path) else None)
    print("ready", flush=True)
    try:
        trainer.train()
    except KeyboardInterrupt:
        sys.exit(130)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # finished: a late Ctrl-C no longer stops anything
    np.savez(path + ".final.npz", **{k: np.asarray(v) for k, v in net.params.items()})
""")


def start(path, epochs, width):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XPNET_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(epochs), str(width)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline() == "ready\n", child.stderr.read()
    return child


def temporary_files(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp")]


def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint_and_no_pile_of_temporary_files(tmp_path):
    path = tmp_path / "run.npz"
    moments = random.Random(16)
    for _ in range(6):
        child = start(path, 10_000, 550)
        time.sleep(moments.uniform(0.05, 0.6))
        child.kill()
        child.wait()
        assert len(temporary_files(tmp_path)) <= 1  # at most the one write that was cut; earlier ones are removed
        if path.exists():
            checkpoint = load_checkpoint(path)  # whole, never half written
            assert checkpoint.epoch >= 1
    assert path.exists(), "no checkpoint was written in six runs"
    epoch = load_checkpoint(path).epoch
    child = start(path, epoch + 2, 550)  # resumes from the last good checkpoint and finishes
    assert child.wait() == 0, child.stderr.read()
    assert load_checkpoint(path).epoch == epoch + 2 and temporary_files(tmp_path) == []


def test_sigint_at_random_moments_resumes_to_the_straight_run(tmp_path):
    EPOCHS = 100  # about 1.5 s of checkpointed epochs: longer than the 0.3 s before the first Ctrl-C
    straight = tmp_path / "straight.npz"
    child = start(straight, EPOCHS, 40)
    assert child.wait() == 0, child.stderr.read()
    path = tmp_path / "run.npz"
    moments, statuses = random.Random(22), []
    for _ in range(4):
        child = start(path, EPOCHS, 40)
        time.sleep(moments.uniform(0.0, 0.3))
        child.send_signal(signal.SIGINT)
        statuses.append(child.wait())
        assert statuses[-1] in (0, 130), child.stderr.read()
    assert 130 in statuses  # at least one run was cut
    child = start(path, EPOCHS, 40)
    assert child.wait() == 0, child.stderr.read()
    expected, resumed = np.load(str(straight) + ".final.npz"), np.load(str(path) + ".final.npz")
    for name in expected.files:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)


def xpnet_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XPNET_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "xpnet", *args], capture_output=True, text=True, env=env)


def test_a_full_disk_keeps_the_last_good_checkpoint_and_fails_before_training(tmp_path):
    with tmpfs(tmp_path / "disk") as disk:
        ckpt, plot = disk / "mlp.npz", disk / "curves.png"
        assert xpnet_cli("train", "--model", "mlp", "--epochs", "1", "--save", str(ckpt), "--quiet").returncode == 0
        good = ckpt.read_bytes()
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        for option, path in (("--save", ckpt), ("--plot", plot)):
            result = xpnet_cli("train", "--model", "mlp", "--epochs", "2", "--resume", str(ckpt), option, str(path),
                               "--quiet")
            assert result.returncode == 1
            assert result.stderr.strip() == f"xpnet train: error: [Errno 28] No space left on device: '{path}'"
        assert ckpt.read_bytes() == good and not plot.exists() and temporary_files(disk) == []
        filler.unlink()
        assert load_checkpoint(ckpt).epoch == 1
        result = xpnet_cli("train", "--model", "mlp", "--epochs", "2", "--resume", str(ckpt), "--save", str(ckpt),
                           "--quiet")
        assert result.returncode == 0 and load_checkpoint(ckpt).epoch == 2


def test_a_read_only_folder_fails_before_training_and_keeps_the_checkpoint(tmp_path):
    with tmpfs(tmp_path / "ro") as folder:
        ckpt = folder / "mlp.npz"
        assert xpnet_cli("train", "--model", "mlp", "--epochs", "1", "--save", str(ckpt), "--quiet").returncode == 0
        good = ckpt.read_bytes()
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result = xpnet_cli("train", "--model", "mlp", "--epochs", "2", "--resume", str(ckpt), "--save", str(ckpt),
                           "--quiet")
        assert result.returncode == 1
        assert result.stderr.strip() == f"xpnet train: error: [Errno 30] Read-only file system: '{ckpt}'"
        assert ckpt.read_bytes() == good and load_checkpoint(ckpt).epoch == 1
