"""Data-parallel training (xpnet.distributed): N ranks under mpiexec train like one process with N times the batch.

The multi-rank tests launch the scripts in tests/mpi/ with ``mpiexec -n 2`` and ``-n 4`` (4 ranks on
2 cores is fine: MPICH oversubscribes), one BLAS and OpenMP thread per rank, each under a timeout, and
compare what they wrote with one process computed here. The tests below them check the pieces in this
process (a communicator of one rank, fakes for NCCL and for other ranks).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import backend, distributed
from xpnet.distributed.communicator import _NCCLRoute, group_ranks, ranks_text
from xpnet.layers import BatchNormalization, Dropout
from xpnet.nets import MultiLayerNetExtend

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mpi"
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ABORT_SECONDS = 10

_mpi_missing = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC),
    reason="needs mpi4py and mpiexec (pip install 'xpnet[mpi]')" if not HAVE_MPI4PY else "mpiexec not found",
)


def needs_mpi(test):
    """A test that launches mpiexec: skipped without mpi4py and mpiexec, and slow (CI runs it with -m slow)."""
    return pytest.mark.slow(_mpi_missing(test))


def load_scenarios():
    spec = importlib.util.spec_from_file_location("mpi_scenarios", SCRIPTS / "scenarios.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scenarios = load_scenarios()


def mpiexec(ranks, *args, mpi_args=(), timeout=120, launcher=(), **env):
    """Run ``python *args`` on ``ranks`` ranks (``ranks`` None: the MPMD form is in ``args``); returns
    (CompletedProcess, seconds)."""
    full_env = {**os.environ, **ONE_THREAD, "XPNET_DEVICE": "cpu",
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    command = [*launcher, MPIEXEC, *mpi_args]
    command += list(args) if ranks is None else ["-n", str(ranks), sys.executable, *args]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - start


def read_results(out):
    return dict(np.load(out / "result.npz")), json.loads((out / "result.json").read_text())


# --- N ranks against one process ---------------------------------------------------------------------


@pytest.fixture(scope="module", params=[
    pytest.param((2, "cpu"), id="2 ranks"),
    pytest.param((4, "cpu"), id="4 ranks"),
    pytest.param((2, "gpu"), id="2 ranks on the GPU", marks=pytest.mark.gpu),
])
def trained(request, tmp_path_factory):
    """What tests/mpi/train.py wrote, run once per rank count: (ranks, arrays, report)."""
    if not (HAVE_MPI4PY and MPIEXEC):
        pytest.skip("needs mpi4py and mpiexec (pip install 'xpnet[mpi]')")
    ranks, device = request.param
    if device == "gpu" and not backend.gpu_available():
        pytest.skip(f"GPU case skipped: no usable GPU ({backend.gpu_unavailable_reason()})")
    out = tmp_path_factory.mktemp(f"train-{ranks}-{device}")
    result, _ = mpiexec(ranks, str(SCRIPTS / "train.py"), str(out), device, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    arrays, report = read_results(out)
    return ranks, arrays, report


def single_process(name, ranks):
    net, losses = scenarios.train_single(name, ranks)
    return {key: backend.to_numpy(value) for key, value in net.state().items()}, losses


def last_batch_split(name, ranks):
    x, _ = scenarios.data(name, ranks)
    last = len(x) % (ranks * scenarios.PER_RANK)
    return [len(range(last)[distributed.shard_slice(last, r, ranks)]) for r in range(ranks)]


@needs_mpi
@pytest.mark.parametrize("name", ["sgd", "adam", "sgd-empty-rank", "adam-empty-rank"])
def test_n_ranks_with_batch_b_train_like_one_process_with_batch_n_times_b(trained, name):
    ranks, arrays, report = trained
    split = last_batch_split(name, ranks)
    assert len(set(split)) > 1, f"the last batch should split unevenly, got {split}"  # weighting by examples matters
    if "empty-rank" in name:
        assert split[-1] == 0
    expected, expected_losses = single_process(name, ranks)
    for key, value in expected.items():
        np.testing.assert_allclose(arrays[f"{name}/{key}"], value, rtol=1e-4, atol=1e-6, err_msg=f"{name}: {key}")
    np.testing.assert_allclose(report["scenarios"][name]["losses"], expected_losses, rtol=1e-4)


@needs_mpi
def test_the_ranks_start_from_rank_0s_parameters(trained):
    ranks, _, report = trained
    drawn = report["scenarios"]["sgd"]["drawn"]
    assert len(set(drawn)) == ranks  # seeded with seed + rank, each drew other weights; the broadcast made them equal


@needs_mpi
@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_the_ranks_end_with_bit_identical_parameters(trained, name):
    ranks, _, report = trained
    assert len(set(report["scenarios"][name]["parameters"])) == 1
    if scenarios.SCENARIOS[name]["batch_norm"] != "per rank":
        assert len(set(report["scenarios"][name]["trained"])) == 1  # batch-norm statistics too


@needs_mpi
def test_unsynchronized_batch_norm_neither_matches_one_process_nor_keeps_the_statistics_equal(trained):
    ranks, arrays, report = trained
    name = "sgd-unsynchronized-batch-norm"
    expected, _ = single_process(name, ranks)
    assert not np.allclose(arrays[f"{name}/W1"], expected["W1"], rtol=1e-4, atol=1e-6)
    assert len(set(report["scenarios"][name]["trained"])) == ranks  # each rank's running statistics are its own
    assert len(set(report["scenarios"][name]["averaged"])) == 1  # until they are averaged, before evaluation


@needs_mpi
def test_synchronized_batch_norm_layer_equals_one_process_on_images(trained):
    ranks, arrays, _ = trained
    rng = np.random.default_rng(5)
    x = (3.0 + rng.standard_normal((11, 3, 4, 5))).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32) / 11
    layer = BatchNormalization(np.linspace(0.5, 1.5, 3, dtype=np.float32), np.linspace(-0.2, 0.2, 3, dtype=np.float32))
    out = layer.forward(x, train_flg=True)
    dx = layer.backward(dout)
    expected = {"out": out, "dx": dx, "dgamma": layer.dgamma, "dbeta": layer.dbeta}
    for key, value in expected.items():
        np.testing.assert_allclose(arrays[f"batch_norm/{key}"], value, rtol=1e-4, atol=1e-6, err_msg=key)
    for key in ("running_mean", "running_var"):  # every rank holds the single process's statistics
        per_rank = arrays[f"batch_norm/{key}"]
        assert per_rank.shape == (ranks, 3)
        np.testing.assert_allclose(per_rank, np.broadcast_to(getattr(layer, key), per_rank.shape), rtol=1e-5)


@needs_mpi
def test_sharded_accuracy_is_exactly_the_one_process_accuracy(trained):
    _, _, report = trained
    assert report["accuracy"]["sharded"] == report["accuracy"]["one process"]


@needs_mpi
def test_dropout_masks_differ_per_rank_and_come_from_seed_plus_rank(trained):
    ranks, arrays, report = trained
    masks = arrays["dropout/masks"]
    assert len({mask.tobytes() for mask in masks}) == ranks
    if report["device"] == "cpu":
        for rank, mask in enumerate(masks):
            xpnet.seed(report["dropout seed"] + rank)
            np.testing.assert_array_equal(mask, Dropout(0.5).forward(np.ones(64, dtype=np.float32)))


@needs_mpi
def test_the_optimizer_state_is_broadcast_from_rank_0(trained):
    ranks, _, report = trained
    states = report["optimizer"]
    assert len(states) == ranks and all(state == states[0] for state in states)
    assert states[0]["scalars"]["iter"] == 3 and "m/W1" in states[0]["arrays"]


@needs_mpi
@pytest.mark.gpu
def test_one_rank_per_gpu_goes_through_nccl_and_trains_like_one_process(tmp_path):
    if not backend.gpu_available():
        pytest.skip(f"GPU case skipped: no usable GPU ({backend.gpu_unavailable_reason()})")
    if backend.nccl_unavailable_reason() is not None:
        pytest.skip(f"NCCL case skipped: {backend.nccl_unavailable_reason()}")
    ranks = min(len(backend.gpu_devices()), 2)  # one rank per GPU: NCCL refuses two ranks on one GPU
    result, _ = mpiexec(ranks, str(SCRIPTS / "train.py"), str(tmp_path), "gpu", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    arrays, report = read_results(tmp_path)
    assert report["nccl"] is True and report["device"] == "gpu:0"
    for name in ("sgd", "adam"):
        expected, _ = single_process(name, ranks)
        for key, value in expected.items():
            np.testing.assert_allclose(arrays[f"{name}/{key}"], value, rtol=1e-4, atol=1e-6, err_msg=f"{name}: {key}")


# --- failures end the job ------------------------------------------------------------------------------


# --- the Trainer and `xpnet train` on N ranks --------------------------------------------------------


@pytest.fixture(scope="module", params=[pytest.param(2, id="2 ranks"), pytest.param(4, id="4 ranks")])
def trainer_runs(request, tmp_path_factory):
    """What tests/mpi/trainer.py wrote for ``equal`` on N ranks: (ranks, arrays, report)."""
    if not (HAVE_MPI4PY and MPIEXEC):
        pytest.skip("needs mpi4py and mpiexec (pip install 'xpnet[mpi]')")
    ranks, out = request.param, tmp_path_factory.mktemp(f"trainer-{request.param}")
    result, _ = mpiexec(ranks, str(SCRIPTS / "trainer.py"), "equal", str(out), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return ranks, dict(np.load(out / f"equal-{ranks}.npz")), json.loads((out / f"equal-{ranks}.json").read_text())


@needs_mpi
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_trainer_on_n_ranks_trains_like_one_process_with_n_times_the_batch(trainer_runs, name):
    ranks, arrays, report = trainer_runs
    expected, expected_losses = single_process(name, ranks)  # the explicit loop of scenarios.py, one process
    for key, value in expected.items():
        np.testing.assert_allclose(arrays[f"{name}/{key}"], value, rtol=1e-4, atol=1e-6, err_msg=f"{name}: {key}")
    np.testing.assert_allclose(report[name]["losses"], expected_losses, rtol=1e-4)
    assert report[name]["seed"] == [scenarios.SHUFFLE_SEED] * ranks


def trainer_module():
    spec = importlib.util.spec_from_file_location("mpi_trainer", SCRIPTS / "trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_process_trainer(per_rank, epochs, **options):
    """The resume problem of tests/mpi/trainer.py in this process: global batches of 16."""
    from xpnet.trainer import Trainer

    name = trainer_module().RESUME_SCENARIO
    x, t = scenarios.data(name, 2)
    xpnet.seed(scenarios.INIT_SEED)
    return Trainer(scenarios.network(name), x, t, x, t, epochs=epochs, mini_batch_size=per_rank,
                   optimizer=scenarios.optimizer(name), verbose=False, seed=scenarios.SHUFFLE_SEED, **options)


@needs_mpi
def test_a_checkpoint_of_two_ranks_resumes_on_one_rank_and_on_four_like_an_uninterrupted_run(tmp_path):
    straight = one_process_trainer(16, 3).train()
    result, _ = mpiexec(2, str(SCRIPTS / "trainer.py"), "interrupt", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    stopped = json.loads((tmp_path / "interrupt-2.json").read_text())
    # Ctrl-C reached rank 1 alone during step 6; both ranks stopped after it: epoch 2, 2 steps, 32 examples
    assert stopped["stopped"] == [True, True] and stopped["steps"] == [6, 6]
    assert (stopped["epoch"], stopped["step"], stopped["examples"]) == (1, 2, 32)
    assert stopped["saves"] == [2, 0]  # rank 0 alone wrote: after epoch 1 and on the Ctrl-C

    result, _ = mpiexec(4, str(SCRIPTS / "trainer.py"), "resume", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    four = json.loads((tmp_path / "resume-4.json").read_text())
    on_four = dict(np.load(tmp_path / "resume-4.npz"))
    one = one_process_trainer(16, 3, resume=tmp_path / "run.npz").train()
    expected = {key: backend.to_numpy(value) for key, value in straight.network.state().items()}
    for key, value in expected.items():
        np.testing.assert_allclose(on_four[key], value, rtol=1e-4, atol=1e-6, err_msg=f"4 ranks: {key}")
        np.testing.assert_allclose(backend.to_numpy(one.network.state()[key]), value, rtol=1e-4, atol=1e-6,
                                   err_msg=f"1 rank: {key}")
    np.testing.assert_allclose(four["losses"], straight.train_loss_list, rtol=1e-4)
    np.testing.assert_allclose(one.train_loss_list, straight.train_loss_list, rtol=1e-4)
    assert four["test_acc"] == one.test_acc_list == straight.test_acc_list
    assert four["saves"] == [0, 0, 0, 0]


def test_a_trainer_without_a_communicator_and_xpnet_train_in_one_process_do_not_import_mpi4py(tmp_path):
    code = ("import sys; from xpnet.tools.cli import main; "
            "status = main(['train', '--quiet', '--model', 'mlp', '--epochs', '1']); "
            "sys.exit(status or ('mpi4py' in sys.modules) * 7)")
    env = {**os.environ, **ONE_THREAD, "XPNET_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr  # 7: mpi4py was imported


def xpnet_train(ranks, *args, cwd, timeout=120):
    """``xpnet train ARGS`` on ``ranks`` ranks under mpiexec (None: one plain process); (CompletedProcess, seconds)."""
    command = ["-m", "xpnet", "train", "--quiet", *args] if "--progress" not in args else ["-m", "xpnet", "train", *args]
    env = {**os.environ, **ONE_THREAD, "XPNET_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    full = [sys.executable, *command] if ranks is None else [MPIEXEC, "-n", str(ranks), sys.executable, *command]
    start = time.perf_counter()
    result = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - start


@needs_mpi
def test_xpnet_train_on_two_ranks_reaches_one_process_accuracy_and_rank_0_alone_speaks(tmp_path):
    args = ["--dataset", "digits", "--model", "mlp", "--epochs", "3"]
    one, _ = xpnet_train(None, *args, "--batch-size", "100", cwd=tmp_path)
    two, _ = xpnet_train(2, *args, "--batch-size", "50", "--save", "ck.npz", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    result_line = [line for line in two.stdout.splitlines() if line.startswith("test accuracy")]
    assert len(result_line) == 1 and two.stdout.count("checkpoint: ck.npz") == 1  # rank 0 alone prints
    accuracy = result_line[0].split()[2]
    assert accuracy == one.stdout.split("test accuracy ")[1].split()[0]  # the same model, exactly
    assert (tmp_path / "ck.npz").exists()


@needs_mpi
def test_an_error_on_one_rank_of_xpnet_train_aborts_the_job_within_seconds(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    first, _ = xpnet_train(None, "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--save", "ck.npz",
                           cwd=good)
    assert first.returncode == 0, first.stderr
    (bad / "ck.npz").write_text("not a checkpoint")  # rank 1 alone reads this one: it fails, rank 0 goes on
    common = [sys.executable, "-m", "xpnet", "train", "--quiet", "--dataset", "digits", "--model", "mlp",
              "--epochs", "3", "--resume", "ck.npz"]
    result, seconds = mpiexec(None, "-n", "1", "-wdir", str(good), *common, ":", "-n", "1", "-wdir", str(bad),
                              *common, timeout=60)
    assert result.returncode != 0
    assert seconds < ABORT_SECONDS
    assert "xpnet train: error on rank 1 of 2" in result.stderr and "not an xpnet checkpoint" in result.stderr


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_a_raising_rank_aborts_the_job_within_seconds_and_its_message_is_shown(ranks):
    result, seconds = mpiexec(ranks, str(SCRIPTS / "fail.py"), "raise", timeout=60)
    assert result.returncode != 0
    assert seconds < ABORT_SECONDS
    assert f"xpnet.distributed: rank 1 of {ranks}" in result.stderr
    assert "ValueError: rank 1 fails on purpose (raise)" in result.stderr


@needs_mpi
def test_python_m_mpi4py_aborts_a_script_that_does_not_call_init():
    result, seconds = mpiexec(None, "-n", "2", sys.executable, "-m", "mpi4py", str(SCRIPTS / "fail.py"), "plain-raise",
                              timeout=60)
    assert result.returncode != 0
    assert seconds < ABORT_SECONDS
    assert "ValueError: rank 1 fails on purpose (plain-raise)" in result.stderr


@needs_mpi
def test_a_killed_rank_ends_the_job_within_seconds():
    result, seconds = mpiexec(2, str(SCRIPTS / "fail.py"), "kill", timeout=60)
    assert result.returncode != 0
    assert seconds < ABORT_SECONDS


@needs_mpi
def test_a_rank_ending_with_an_error_status_ends_the_job_within_seconds():
    result, seconds = mpiexec(2, str(SCRIPTS / "fail.py"), "exit-status", timeout=60)
    assert result.returncode != 0 and seconds < ABORT_SECONDS
    assert "rank 1 of 2 (host " in result.stderr and "ends with exit status 3; aborting the job" in result.stderr


@needs_mpi
def test_ranks_started_with_different_arguments_are_named_at_start():
    script = str(SCRIPTS / "fail.py")
    result, seconds = mpiexec(None, "-n", "2", sys.executable, script, "same-run", "--epochs", "3", ":",
                              "-n", "1", sys.executable, script, "same-run", "--epochs", "4", timeout=60)
    assert result.returncode != 0 and seconds < ABORT_SECONDS
    assert "the ranks were not started alike: ranks 0, 1: arguments `same-run --epochs 3`" in result.stderr
    assert "rank 2: arguments `same-run --epochs 4`" in result.stderr
    assert "started alike" not in result.stdout


@needs_mpi
def test_ranks_started_alike_pass_the_check():
    result, _ = mpiexec(2, str(SCRIPTS / "fail.py"), "same-run", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("started alike") == 2


# --- two hosts over TCP ----------------------------------------------------------------------------------

HOSTS = ("10.231.7.1", "10.231.7.2")  # addresses inside the namespaces the fixture creates, nowhere else


@pytest.fixture
def two_hosts(tmp_path):
    """Two network namespaces, each a "host" with an eth0 joined by a veth pair to a bridge in a third
    namespace, and an ssh stand-in for mpiexec's launcher that runs a command in a host's namespace.
    Everything is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("making hosts of network namespaces needs root")
    if shutil.which("ip") is None:
        pytest.skip("making hosts of network namespaces needs iproute2's `ip netns`")
    prefix = f"xpnet{os.getpid()}"
    bridge, hosts = prefix + "br", [prefix + "a", prefix + "b"]
    created = []

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)

    try:
        for name in [bridge, *hosts]:
            ip("netns", "add", name)
            created.append(name)
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "link", "set", "br0", "up")
        for index, (name, address) in enumerate(zip(hosts, HOSTS)):
            ip("-n", bridge, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("-n", bridge, "link", "set", f"v{index}", "master", "br0")
            ip("-n", bridge, "link", "set", f"v{index}", "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        pytest.skip(f"network namespaces cannot be made here: `{' '.join(exc.cmd)}`: {exc.stderr.strip()}")
    ssh = tmp_path / "netns-ssh"
    ssh.write_text(
        "#!/bin/sh\n"
        "# mpiexec's launcher calls: netns-ssh [-x] HOST COMMAND; run COMMAND in HOST's namespace\n"
        'while [ "${1#-}" != "$1" ]; do shift; done\n'
        'case "$1" in\n'
        + "".join(f'  {address}) ns={name};;\n' for name, address in zip(hosts, HOSTS))
        + '  *) echo "netns-ssh: no such host: $1" >&2; exit 1;;\n'
        "esac\n"
        "shift\n"
        'exec ip netns exec "$ns" sh -c "$*"\n'
    )
    ssh.chmod(0o755)
    try:
        yield {"namespaces": hosts, "ssh": ssh}
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@needs_mpi
def test_two_ranks_on_two_hosts_over_tcp_train_like_one_process(two_hosts, tmp_path):
    out = tmp_path / "out"
    result, _ = mpiexec(
        None, "-hosts", ",".join(HOSTS), "-n", "2", "-ppn", "1", "-launcher", "ssh",
        "-launcher-exec", str(two_hosts["ssh"]), "-iface", "eth0",
        "-genv", "MPIR_CVAR_NOLOCAL", "1", "-genv", "UCX_TLS", "tcp",  # the network, never shared memory
        sys.executable, str(SCRIPTS / "hosts.py"), str(out),
        launcher=("ip", "netns", "exec", two_hosts["namespaces"][0]), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = json.loads((out / "hosts.json").read_text())
    assert len({rank["namespace"] for rank in ranks}) == 2
    assert all(rank["eth0 bytes received"] > 10_000 for rank in ranks), ranks
    arrays, report = read_results(out)
    expected, _ = single_process("sgd", 2)
    for key, value in expected.items():
        np.testing.assert_allclose(arrays[f"sgd/{key}"], value, rtol=1e-4, atol=1e-6, err_msg=key)
    assert len(set(report["scenarios"]["sgd"]["trained"])) == 1


# --- the pieces, in this process ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comm_self():
    """A communicator of one rank (MPI.COMM_SELF)."""
    if not HAVE_MPI4PY:
        pytest.skip("needs mpi4py (pip install 'xpnet[mpi]')")
    from mpi4py import MPI

    return distributed.Communicator(MPI.COMM_SELF)


class OtherRanks(distributed.Communicator):
    """Rank 0 of a run whose ranks answer ``allgather_object`` with ``answers`` (rank 0's own value first)."""

    def __init__(self, *answers):
        self.rank, self.size, self.host = 0, len(answers) + 1, "here"
        self.answers = list(answers)

    def allgather_object(self, obj):
        return [obj, *self.answers]


def test_the_launcher_is_recognized_from_the_environment_without_starting_mpi():
    assert distributed.launched_size({}) is None
    assert distributed.launched_size({"PMI_RANK": "1", "PMI_SIZE": "4"}) == 4  # MPICH's mpiexec
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2  # Open MPI's mpirun
    assert distributed.launched_size({"PMIX_RANK": "0", "SLURM_NTASKS": "8"}) == 8  # srun --mpi=pmix
    assert distributed.launched_size({"SLURM_NTASKS": "8"}) is None  # a Slurm job step, but no MPI launch


@needs_mpi
def test_under_mpiexec_every_rank_sees_the_launch():
    code = "from xpnet import distributed; print(distributed.launched_size())"
    result, _ = mpiexec(3, "-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "".join(result.stdout.split()) == "333"  # the ranks' lines may interleave


def test_shards_cover_a_batch_once_in_order_and_differ_by_at_most_one():
    for n in range(0, 23):
        for size in (1, 2, 3, 4, 7):
            parts = [distributed.shard_slice(n, rank, size) for rank in range(size)]
            sizes = [p.stop - p.start for p in parts]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_slice_rejects_a_rank_outside_the_run():
    with pytest.raises(ValueError, match="rank must be in 0..size-1, got rank 2 of size 2"):
        distributed.shard_slice(10, 2, 2)


def test_messages_name_the_ranks_of_each_value():
    assert group_ranks(["a", "b", "a", "c"]) == [([0, 2], "a"), ([1], "b"), ([3], "c")]
    assert ranks_text([3]) == "rank 3" and ranks_text([0, 2]) == "ranks 0, 2"


def test_a_rank_started_with_other_arguments_is_named():
    mine = distributed.run_signature(["train", "--epochs", "3"])
    other = {**mine, "argv": ["train", "--epochs", "4"]}
    with pytest.raises(distributed.DistributedError) as error:
        distributed.check_same_run(OtherRanks(mine, other), ["train", "--epochs", "3"])
    assert "ranks 0, 1: arguments `train --epochs 3`" in str(error.value)
    assert "rank 2: arguments `train --epochs 4`" in str(error.value)


def test_a_rank_with_another_xpnet_is_named():
    mine = distributed.run_signature([])
    with pytest.raises(distributed.DistributedError, match=r"rank 1: arguments ``, xpnet 0\.0\.1"):
        distributed.check_same_run(OtherRanks({**mine, "xpnet": "0.0.1"}), [])


def test_networks_of_other_shapes_are_named_before_any_broadcast():
    net = MultiLayerNetExtend(6, [5], 3)
    other = MultiLayerNetExtend(6, [4], 3)
    layout = [(k, tuple(other.state()[k].shape), "float32") for k in sorted(other.state())]
    with pytest.raises(distributed.DistributedError, match=r"the networks .* differ between ranks: rank 0: .*; rank 1: "):
        distributed.broadcast_parameters(OtherRanks(layout), net)


def test_one_rank_computes_what_the_network_computes(comm_self, xp, device):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((9, 6)).astype(np.float32), rng.integers(0, 3, 9)
    net = MultiLayerNetExtend(6, [5], 3, use_batchnorm=True).to(device)
    assert distributed.synchronize_batch_norm(comm_self, net) == 1
    grads, loss = distributed.gradient(comm_self, net, x, t)
    distributed.synchronize_batch_norm(comm_self, net, enabled=False)
    expected = net.gradient(x, t)
    assert list(grads) == list(expected)
    for key in expected:
        assert backend.device_of(grads[key]) == device and grads[key].dtype == np.float32
        np.testing.assert_allclose(backend.to_numpy(grads[key]), backend.to_numpy(expected[key]), rtol=1e-5,
                                   atol=1e-7, err_msg=key)
    assert loss.shape == () and float(loss) == pytest.approx(float(net.last_layer.loss), rel=1e-6)


def test_a_synchronized_network_has_numerical_gradients_that_agree_with_backpropagation(comm_self, xp, device):
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)
    net = MultiLayerNetExtend(6, [5], 3, use_batchnorm=True).to(device)
    distributed.synchronize_batch_norm(comm_self, net)
    numerical, analytic = net.numerical_gradient(x, t), net.gradient(x, t)  # the float64 copy shares the link
    for key in analytic:
        np.testing.assert_allclose(backend.to_numpy(numerical[key]), backend.to_numpy(analytic[key]), rtol=1e-3,
                                   atol=1e-5, err_msg=key)


def test_gradients_are_weighted_by_examples_and_an_empty_global_batch_is_refused(comm_self):
    grads = {"W": np.array([1.0, 2.0], np.float32)}
    averaged, loss = distributed.allreduce_gradients(comm_self, grads, 3, np.float32(0.5))
    np.testing.assert_array_equal(averaged["W"], grads["W"])
    assert averaged["W"] is not grads["W"] and float(loss) == 0.5
    with pytest.raises(ValueError, match="the global batch is empty: no rank had an example"):
        distributed.allreduce_gradients(comm_self, grads, 0)


def test_synchronized_batch_norm_on_one_rank_is_batch_norm(comm_self, xp, device):
    rng = np.random.default_rng(1)
    x = xp.asarray((2.0 + rng.standard_normal((6, 3, 4, 4))).astype(np.float32))
    dout = xp.asarray(rng.standard_normal(x.shape).astype(np.float32))
    gamma, beta = xp.asarray(np.array([0.5, 1.0, 2.0], np.float32)), xp.asarray(np.array([0.1, 0.0, -0.1], np.float32))
    plain, synced = BatchNormalization(gamma, beta), BatchNormalization(gamma, beta)
    synced.sync = distributed.SyncBatchStatistics(comm_self)
    results = []
    for layer in (plain, synced):
        out = layer.forward(x, train_flg=True)
        dx = layer.backward(dout)
        results.append({"out": out, "dx": dx, "dgamma": layer.dgamma, "dbeta": layer.dbeta,
                        "running_mean": layer.running_mean, "running_var": layer.running_var})
    for key, want in results[0].items():
        got = results[1][key]
        assert got.dtype == np.float32 and backend.device_of(got) == device
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), rtol=1e-5, atol=1e-6, err_msg=key)


def test_gradients_of_mixed_dtypes_are_refused(comm_self):
    grads = {"W": np.ones(2, np.float32), "b": np.ones(2, np.float64)}
    with pytest.raises(ValueError, match="must share one dtype, got float32 and float64"):
        distributed.allreduce_gradients(comm_self, grads, 1)


def test_collectives_take_flat_contiguous_buffers(comm_self):
    with pytest.raises(ValueError, match=r"1-D contiguous buffers, got shape \(2, 2\)"):
        comm_self.allreduce_sum(np.ones((2, 2)))


def test_on_the_cpu_nccl_is_not_used_and_the_reason_is_kept(comm_self):
    assert comm_self.start_nccl() is False
    assert comm_self.nccl_reason == "rank 0: its device is the CPU"
    with pytest.raises(distributed.DistributedError, match="NCCL cannot be used: rank 0: its device is the CPU"):
        comm_self.start_nccl(required=True)


class FakeNCCL:
    """Records the calls a cupyx.distributed NCCL communicator receives."""

    def __init__(self):
        self.calls = []

    def all_reduce(self, in_array, out_array, op="sum", stream=None):
        self.calls.append(("all_reduce", in_array is out_array, op))

    def broadcast(self, in_out_array, root=0, stream=None):
        self.calls.append(("broadcast", root))

    def all_gather(self, in_array, out_array, count, stream=None):
        self.calls.append(("all_gather", out_array.shape, count))


def test_the_nccl_route_reduces_in_place_and_gathers_one_row_per_rank():
    nccl, buf = FakeNCCL(), np.ones(5, dtype=np.float32)
    route = _NCCLRoute(nccl)
    assert route.allreduce_sum(buf) is buf and route.broadcast(buf, 2) is buf
    assert route.allgather(buf, 4).shape == (4, 5)
    assert nccl.calls == [("all_reduce", True, "sum"), ("broadcast", 2), ("all_gather", (4, 5), 5)]


def test_nccl_starts_when_every_rank_is_on_a_gpu_of_its_own(comm_self, monkeypatch):
    nccl = FakeNCCL()
    monkeypatch.setattr(backend, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(backend, "gpu_bus_id", lambda device: "0000:3B:00.0")
    monkeypatch.setattr(backend, "nccl_unavailable_reason", lambda: None)
    monkeypatch.setattr(backend, "nccl_process_group", lambda size, rank: nccl if (size, rank) == (1, 0) else None)
    comm = distributed.Communicator(comm_self.mpi_comm)
    assert comm.start_nccl(required=True) and comm.uses_nccl and comm.nccl_reason is None
    comm.allreduce_sum(np.ones(3, np.float32))  # host arrays still go through MPI
    assert nccl.calls == []


def test_nccl_is_refused_for_ranks_that_share_a_gpu_and_told_apart_by_pci_bus_id(comm_self, monkeypatch):
    monkeypatch.setattr(backend, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(backend, "gpu_bus_id", lambda device: "0000:3B:00.0")
    monkeypatch.setattr(backend, "nccl_unavailable_reason", lambda: None)
    comm = distributed.Communicator(comm_self.mpi_comm)
    # each rank sees its GPU as gpu:0 (CUDA_VISIBLE_DEVICES): rank 1 is on another GPU, rank 2 on rank 0's
    others = [(None, comm.host, "0000:5E:00.0", "gpu:0"), (None, comm.host, "0000:3B:00.0", "gpu:0"),
              (None, "elsewhere", "0000:3B:00.0", "gpu:0")]
    monkeypatch.setattr(comm, "allgather_object", lambda obj: [obj, *others])
    assert comm.start_nccl() is False and not comm.uses_nccl
    assert comm.nccl_reason == (f"ranks 0, 2 share the GPU at PCI 0000:3B:00.0 on {comm.host}, and NCCL refuses "
                                f"two ranks on one GPU")


def test_nccl_unavailable_reason_without_a_gpu_names_the_gpu_problem(fake_cupy):
    fake_cupy(lambda: False)
    assert backend.nccl_unavailable_reason().startswith("no usable GPU: CuPy is installed but sees no usable CUDA device")
    with pytest.raises(xpnet.DeviceError, match="NCCL cannot be used: no usable GPU"):
        backend.nccl_process_group(2, 0)


@pytest.fixture
def fake_gpu_cupy(fake_cupy, monkeypatch):
    """A fake CuPy that sees one GPU, with a ``cupy.cuda.nccl`` whose ``available`` is set by the test, and a
    ``cupyx.distributed`` whose ``init_process_group`` records its arguments."""
    cupy = fake_cupy(lambda: True)
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, deviceGetPCIBusId=lambda index: "0000:3B:00.0")
    cuda.nccl = types.ModuleType("cupy.cuda.nccl")
    cuda.nccl.available = True
    cupy.cuda = cuda
    cupyx = types.ModuleType("cupyx")
    cupyx.distributed = types.ModuleType("cupyx.distributed")
    cupyx.distributed.calls = []
    cupyx.distributed.init_process_group = lambda *args, **kwargs: cupyx.distributed.calls.append((args, kwargs))
    for name, module in {"cupy.cuda": cuda, "cupy.cuda.nccl": cuda.nccl, "cupyx": cupyx,
                         "cupyx.distributed": cupyx.distributed}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return cupy, cupyx


def test_without_the_nccl_library_the_reason_names_the_wheel(fake_gpu_cupy):
    cupy, _ = fake_gpu_cupy
    cupy.cuda.nccl.available = False
    assert "install the NCCL wheel for your CUDA version (nvidia-nccl-cu12 or nvidia-nccl-cu13)" in \
        backend.nccl_unavailable_reason()


def test_the_nccl_process_group_meets_through_mpi(fake_gpu_cupy):
    _, cupyx = fake_gpu_cupy
    assert backend.nccl_unavailable_reason() is None
    backend.nccl_process_group(4, 3)
    assert cupyx.distributed.calls == [((4, 3), {"use_mpi": True})]


def test_a_gpu_is_named_by_its_pci_bus_id(fake_gpu_cupy):
    assert backend.gpu_bus_id("gpu:0") == "0000:3B:00.0"
    with pytest.raises(ValueError, match="the CPU has no PCI bus id"):
        backend.gpu_bus_id("cpu")
