"""xpnet search shared by worker processes: PostgreSQL, the journal file, SQLite; workers killed; errors in one line.

A fixture starts a real PostgreSQL server (initdb and pg_ctl as an
unprivileged user, on 127.0.0.1, on a free port, in a temporary folder) and
skips, saying why, where the server's programs or psycopg are missing.
Workers are separate processes running the same command, as on separate
machines. Heartbeats every second with a grace period of 3 s keep the tests
short; the trials are --quick ones on the embedded digits, on the CPU.
"""

import datetime
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    find_spec("optuna") is None or find_spec("matplotlib") is None,
    reason="xpnet search needs optuna and matplotlib: pip install 'xpnet[search]'")

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT, GRACE = 1, 3
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# --- a PostgreSQL server of the tests' own ------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_programs():
    """The folder of initdb, pg_ctl and createdb: Debian's /usr/lib/postgresql/VERSION/bin, or the PATH."""
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda f: int(Path(f).parent.name), reverse=True)
    found = shutil.which("initdb")
    folders += [str(Path(found).resolve().parent)] if found else []
    for folder in folders:
        if all(Path(folder, name).exists() for name in ("initdb", "pg_ctl", "createdb")):
            return Path(folder)
    return None


class PostgresServer:
    """A throwaway server: ``url(database)`` of a new database on it, ``stop()``."""

    def __init__(self, programs, folder, user):
        self.programs, self.folder, self.user, self.port = programs, Path(folder), user, _free_port()
        self.databases = 0

    def _run(self, name, *args):
        command = [str(self.programs / name), *map(str, args)]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.folder)

    def start(self):
        data, options = self.folder / "data", (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                                               f"-c unix_socket_directories={self.folder} -c fsync=off")
        for step in (("initdb", "--auth=trust", "--no-sync", "-U", "postgres", "-D", data),
                     ("pg_ctl", "-w", "-D", data, "-l", self.folder / "server.log", "-o", options, "start")):
            result = self._run(*step)
            if result.returncode:
                log = self.folder / "server.log"
                raise RuntimeError(f"{step[0]} failed: {result.stderr or result.stdout}"
                                   f"{log.read_text() if log.exists() else ''}")

    def url(self, database=None):
        """A URL of a fresh database (or of ``database``, made if missing) on the server."""
        if database is None:
            self.databases += 1
            database = f"test{self.databases}"
        result = self._run("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", database)
        assert result.returncode == 0, result.stderr
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self):
        self._run("pg_ctl", "-D", self.folder / "data", "-m", "immediate", "stop")


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 for this module, run as the postgres user where the tests run as root."""
    if find_spec("psycopg") is None:
        pytest.skip("PostgreSQL storages need psycopg 3: pip install 'xpnet[postgres]'")
    programs = _postgres_programs()
    if programs is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on the "
                    "PATH: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run the server as")
    folder = tempfile.mkdtemp(prefix="xpnet-postgres-")
    if user is not None:
        shutil.chown(folder, user)
    server = PostgresServer(programs, folder, user)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def new_storage(kind, request, tmp_path):
    """A new, empty storage: a PostgreSQL database, a journal file or an SQLite file."""
    if kind == "postgresql":
        return request.getfixturevalue("postgres").url()
    if kind == "journal":
        return f"journal:{tmp_path / 'xpnet-search.log'}"
    return f"sqlite:///{tmp_path / 'xpnet-search.db'}"


# --- workers --------------------------------------------------------------------------


def worker(storage, out, *args):
    """An ``xpnet search`` process on ``storage``, its output in ``out/worker-PID.log``."""
    command = [sys.executable, "-m", "xpnet", "search", "--storage", storage, "--study-name", "s", "--quiet",
               "--heartbeat", str(HEARTBEAT), "--grace", str(GRACE), "--out", str(out), *map(str, args)]
    Path(out).mkdir(exist_ok=True)
    log = tempfile.NamedTemporaryFile("w+", dir=out, prefix="worker-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=out)
    process.log = Path(log.name)
    log.close()
    return process


def finish(workers, timeout=120):
    codes = [w.wait(timeout=timeout) for w in workers]
    assert codes == [0] * len(workers), "\n".join(w.log.read_text() for w in workers)


def load(storage):
    from xpnet.search.storage import open_storage
    import optuna

    return optuna.load_study(study_name="s", storage=open_storage(storage, HEARTBEAT, GRACE))


def counted(trials):
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


# --- many workers, one study -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_three_workers_share_one_study_with_no_trial_lost_or_counted_twice(kind, request, tmp_path):
    shared_storage = new_storage(kind, request, tmp_path)
    workers = [worker(shared_storage, tmp_path, "--quick", "--trials", 15, "--epochs", 5) for _ in range(3)]
    finish(workers)
    trials = load(shared_storage).trials
    done = counted(trials)
    # The total is respected: workers wait for the others' running trials instead of starting more. A trial
    # started by two workers at the same instant as the last one is stopped before training, and not counted.
    assert len(done) == 15
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert sorted(done + surplus, key=lambda t: t.number) == trials  # none failed otherwise, running or waiting
    assert all(t.state.name == "FAIL" and not t.params for t in surplus)
    assert len({tuple(sorted(t.params.items())) for t in done}) == 15  # each trial's values drawn once
    workers_used = {t.user_attrs["worker"] for t in done}
    assert len(workers_used) >= 2, "one worker ran every trial: nothing was shared"
    for w in workers:  # each worker reports the whole study
        assert "15 complete, 0 pruned" in w.log.read_text()


@pytest.mark.slow  # about 10 s each: two worker starts and the grace period
@pytest.mark.parametrize("kind", ["postgresql", "journal", "sqlite"])
def test_a_worker_killed_mid_trial_has_its_trial_failed_within_the_grace_period_and_run_again(
        kind, request, tmp_path):
    storage = new_storage(kind, request, tmp_path)
    args = ["--trials", 5, "--train-size", 500, "--epochs", 60]
    victim = worker(storage, tmp_path, *args)
    study = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and victim.poll() is None:  # wait until the victim is inside a trial
        try:
            study = study or load(storage)
        except Exception:  # the victim has not made the study yet
            time.sleep(0.1)
            continue
        running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                   and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        if running:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the victim never started a trial:\n" + victim.log.read_text())
    victim.send_signal(signal.SIGKILL)
    killed_at = datetime.datetime.now()
    victim.wait()
    killed = running[0].number

    survivors = [worker(storage, tmp_path, *args) for _ in range(2)]
    finish(survivors)
    trials = load(storage).trials
    lost = trials[killed]
    assert lost.state.name == "FAIL"
    # Failed by a survivor once its last heartbeat was GRACE seconds old, not before: at the first start of a
    # trial after that, or within a second while it waits; the survivors' own start can come later still.
    second = datetime.timedelta(seconds=1)
    survivors_start = min(t.datetime_start for t in trials if t.number != killed and t.user_attrs["worker"]
                          .split(":")[-1] in {str(w.pid) for w in survivors})
    longest = max(t.duration for t in counted(trials))
    assert lost.datetime_complete - killed_at >= (GRACE - HEARTBEAT) * second
    assert lost.datetime_complete <= max(killed_at + GRACE * second, survivors_start) + longest + 2 * second, (
        lost.datetime_complete - killed_at, survivors_start - killed_at, longest)
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == killed]
    assert [(t.state.name, t.params) for t in reruns] == [("COMPLETE", lost.params)], [
        (t.number, t.state.name, t.user_attrs, t.datetime_start, t.datetime_complete) for t in trials]
    assert len(counted(trials)) == 5  # the study still completes, with its total
    assert {t.state.name for t in trials} == {"COMPLETE", "FAIL"}
    report = survivors[0].log.read_text()
    assert "5 complete, 0 pruned, 1 failed (1 rerun: worker lost), 0 running, 0 stale" in report
