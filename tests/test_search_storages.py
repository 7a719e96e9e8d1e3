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
from mounts import tmpfs
from search_workers import meeting

pytestmark = [
    pytest.mark.skipif(find_spec("optuna") is None or find_spec("matplotlib") is None,
                       reason="xpnet search needs optuna and matplotlib: pip install 'xpnet[search]'"),
    pytest.mark.slow,  # worker processes and a PostgreSQL server: CI runs them with -m slow
]

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


def _missing(reason):
    """Skip, or fail where XPNET_REQUIRE_POSTGRES is set (CI, which installs the server)."""
    (pytest.fail if os.environ.get("XPNET_REQUIRE_POSTGRES") else pytest.skip)(reason)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 for this module, run as the postgres user where the tests run as root."""
    if find_spec("psycopg") is None:
        _missing("PostgreSQL storages need psycopg 3: pip install 'xpnet[postgres]'")
    programs = _postgres_programs()
    if programs is None:
        _missing("no PostgreSQL server programs (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on the PATH: "
                 "apt-get install postgresql")
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            _missing("running as root, and there is no postgres user to run the server as")
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


@pytest.fixture(scope="module")
def redis_server():
    """A Redis server on 127.0.0.1 for this module, keeping nothing on disk: its URL. Skips where it is missing."""
    if find_spec("redis") is None:
        pytest.skip("the Redis journal needs the redis package: pip install 'xpnet[redis]'")
    program = shutil.which("redis-server")
    if program is None:
        pytest.skip("no redis-server program (Debian: apt-get install redis-server)")
    port = _free_port()
    server = subprocess.Popen([program, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def new_storage(kind, request, tmp_path):
    """A new, empty storage: a PostgreSQL database, a journal file or Redis journal, or an SQLite file."""
    if kind == "postgresql":
        return request.getfixturevalue("postgres").url()
    if kind == "redis":
        url = request.getfixturevalue("redis_server")
        databases = getattr(new_storage, "redis_databases", 0) + 1  # Redis has 16 numbered databases
        new_storage.redis_databases = databases
        return f"{url}/{databases % 16}"
    if kind == "journal":
        return f"journal:{tmp_path / 'xpnet-search.log'}"
    return f"sqlite:///{tmp_path / 'xpnet-search.db'}"


# --- workers --------------------------------------------------------------------------


def worker(storage, out, *args, meet=None):
    """An ``xpnet search`` process on ``storage``, its output in ``out/worker-PID.log``.

    ``meet=(workers, point)`` has it meet the others at that point (see ``search_workers``).
    """
    search = ["search", "--storage", storage, "--study-name", "s", "--quiet", "--heartbeat", HEARTBEAT,
              "--grace", GRACE, "--out", out, *args]
    command = ([sys.executable, "-m", "xpnet", *map(str, search)] if meet is None
               else meeting(Path(out) / f"meeting-{meet[1]}", *meet, *search))
    Path(out).mkdir(exist_ok=True)
    log = tempfile.NamedTemporaryFile("w+", dir=out, prefix="worker-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=out)
    process.log = Path(log.name)
    log.close()
    return process


def finish(workers, timeout=120):
    codes = [w.wait(timeout=timeout) for w in workers]
    assert codes == [0] * len(workers), "\n".join(w.log.read_text() for w in workers)


def load(storage, name="s"):
    from xpnet.tools.search.storage import open_storage
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(storage, HEARTBEAT, GRACE))


def counted(trials):
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


# --- many workers, one study -------------------------------------------------------------


@pytest.mark.slow  # 5 to 25 s each, with the machine's load: three worker processes start
@pytest.mark.parametrize("kind", ["postgresql", "journal", "redis"])
def test_three_workers_share_one_study_with_no_trial_lost_or_counted_twice(kind, request, tmp_path):
    shared_storage = new_storage(kind, request, tmp_path)
    workers = [worker(shared_storage, tmp_path, "--quick", "--trials", 12, "--epochs", 5, meet=(3, "first-trial"))
               for _ in range(3)]
    finish(workers)
    trials = load(shared_storage).trials
    done = counted(trials)
    # The total is respected: workers wait for the others' running trials instead of starting more. A trial
    # started by two workers at the same instant as the last one is stopped before training, and not counted.
    assert len(done) == 12
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert sorted(done + surplus, key=lambda t: t.number) == trials  # none failed otherwise, running or waiting
    assert all(t.state.name == "FAIL" and not t.params for t in surplus)
    assert len({tuple(sorted(t.params.items())) for t in done}) == 12  # each trial's values drawn once
    workers_used = {t.user_attrs["worker"] for t in done}
    assert len(workers_used) >= 2, "one worker ran every trial: nothing was shared"
    for w in workers:  # each worker reports the whole study
        assert "12 complete, 0 pruned" in w.log.read_text()


@pytest.mark.slow  # two worker processes
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_worker_refused_by_the_study_another_worker_is_making_in_a_new_file_leaves_that_study_whole(
        kind, request, tmp_path):
    storage = new_storage(kind, request, tmp_path)  # workers that open a new file at the same instant
    workers = {epochs: worker(storage, tmp_path, "--quick", "--trials", 2, "--epochs", epochs,
                              meet=(2, "opening")) for epochs in (1, 2)}
    ended = {epochs: (w.wait(timeout=120), w.log.read_text()) for epochs, w in workers.items()}
    # One made the study; the other, with other settings, is refused, whichever came first.
    assert sorted(code for code, _ in ended.values()) == [0, 1], ended
    made = next(epochs for epochs, (code, _) in ended.items() if code == 0)
    refused = 3 - made
    assert f"was made with epochs {made} (now {refused})" in ended[refused][1]
    study = load(storage)
    assert study.user_attrs["xpnet"]["epochs"] == made
    assert len(counted(study.trials)) == 2


@pytest.mark.slow  # about 10 s each: two worker starts and the grace period
@pytest.mark.parametrize("kind", ["postgresql", "journal", "redis", "sqlite"])
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
        running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"  # and training
                   and t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and len(t.params) == 2]
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
    # SQLite's clock, which Optuna reads for the heartbeats, counts whole seconds: a heartbeat is stale up to
    # a second later there.
    second = datetime.timedelta(seconds=1)
    clock = second if kind == "sqlite" else 0 * second
    survivors_start = min(t.datetime_start for t in counted(trials)
                          if t.user_attrs["worker"].split(":")[-1] in {str(w.pid) for w in survivors})
    longest = max(t.duration for t in counted(trials))
    assert lost.datetime_complete - killed_at >= (GRACE - HEARTBEAT) * second
    stale = max(killed_at + GRACE * second + clock, survivors_start)
    assert lost.datetime_complete <= stale + longest + 2 * second, (
        lost.datetime_complete - killed_at, survivors_start - killed_at, longest)
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == killed]
    assert [(t.state.name, t.params) for t in reruns] == [("COMPLETE", lost.params)], [
        (t.number, t.state.name, t.user_attrs, t.datetime_start, t.datetime_complete) for t in trials]
    assert len(counted(trials)) == 5  # the study still completes, with its total
    others = [t for t in trials if t.state.name != "COMPLETE" and t.number != killed]
    assert all(t.user_attrs.get("surplus") for t in others)  # begun with the last trial by the other survivor
    report = survivors[0].log.read_text()
    assert "5 complete, 0 pruned" in report and "1 rerun: worker lost" in report
    assert report.count("0 running, 0 stale") == 1


# --- SQLite stays the default and needs no network ----------------------------------------


def test_sqlite_is_the_default_and_a_search_runs_without_any_network(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to run the search in a network namespace of its own")
    command = ["unshare", "--net", sys.executable, "-m", "xpnet", "search", "--quick", "--quiet", "--out", tmp_path]
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"in sqlite:///{tmp_path / 'xpnet-search.db'}:" in result.stdout
    assert "4 complete" in result.stdout


# --- errors: one line naming the cause and the fix ----------------------------------------------


@pytest.fixture
def search(capsys):
    """``search(*ARGS)``: ``xpnet search --quick --quiet ARGS`` in this process: (exit status, standard error)."""
    from xpnet.tools.cli import main

    def run(*args):
        capsys.readouterr()
        code = main(["search", "--quick", "--quiet", *map(str, args)])
        return code, capsys.readouterr().err

    return run


def search_process(*args, block=()):
    """``xpnet search --quick --quiet ARGS`` in a new process where MODULES cannot be imported."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({list(block)!r})); from xpnet.tools.cli import main; "
            f"sys.exit(main(['search', '--quick', '--quiet', *sys.argv[1:]]))")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr


def one_line(result):
    code, error = result
    assert code == 1, error
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    return lines[0]


@pytest.mark.parametrize("url, block, message", [
    ("postgresql://me@127.0.0.1/db", ["psycopg"], "no module 'psycopg'): pip install 'xpnet[postgres]'"),
    ("postgresql+psycopg2://me@127.0.0.1/db", ["psycopg2"], "pip install psycopg2-binary, or write postgresql+psycopg://"),
    ("mysql+pymysql://me@127.0.0.1/db", ["pymysql"], "no module 'pymysql'): pip install 'xpnet[mysql]'"),
    ("redis://127.0.0.1:6379", ["redis"], "no module 'redis'): pip install 'xpnet[redis]'"),
    ("nosuchdb://x", [], "not a storage URL"),
])
def test_a_missing_driver_names_the_extra_that_brings_it(tmp_path, url, block, message):
    line = one_line(search_process("--out", tmp_path, "--storage", url, block=block))
    assert line.startswith(f"xpnet search: error: --storage {url}: ") and message in line


def test_a_server_that_does_not_answer_says_so(search, tmp_path):
    if find_spec("psycopg") is None:
        _missing("PostgreSQL storages need psycopg 3: pip install 'xpnet[postgres]'")
    line = one_line(search("--out", tmp_path, "--storage", f"postgresql://me@127.0.0.1:{_free_port()}/db"))
    assert "cannot reach the database server (Connection refused, at 127.0.0.1:" in line
    assert "start it, or check the host and port" in line


def test_a_refused_login_hides_the_password_and_a_missing_database_says_how_to_create_it(search, postgres, tmp_path):
    url = postgres.url()
    refused = url.replace("postgres@", "nobody:s3cret@")
    line = one_line(search("--out", tmp_path, "--storage", refused))
    assert "the server refused the login (role \"nobody\" does not exist" in line
    assert "s3cret" not in line and "nobody:***@" in line
    line = one_line(search("--out", tmp_path, "--storage", url.rsplit("/", 1)[0] + "/nosuchdb"))
    assert 'database "nosuchdb" does not exist' in line and "createdb NAME" in line


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_a_study_refuses_a_worker_with_other_settings(search, kind, request, tmp_path):
    storage = new_storage(kind, request, tmp_path)
    assert search("--out", tmp_path, "--storage", storage, "--trials", 1)[0] == 0
    line = one_line(search("--out", tmp_path, "--storage", storage, "--epochs", 3))
    assert "study 'xpnet-search' in" in line and "was made with epochs 2 (now 3)" in line
    assert "use the same options, or another --study-name" in line


def test_a_search_that_fails_before_its_first_trial_leaves_no_empty_database(search, tmp_path):
    # mnist-t10k reads its files from --data-dir: an empty folder fails as an offline download would.
    out = tmp_path / "out"
    assert "mnist" in one_line(search("--out", out, "--dataset", "mnist-t10k", "--data-dir", tmp_path))
    assert not (out / "xpnet-search.db").exists()
    line = one_line(search("--out", out, "--storage", f"journal:{tmp_path / 'missing' / 'j.log'}"))
    assert "the folder" in line and "does not exist" in line


# --- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of 1 MiB, mounted for the test (needs root) and unmounted after it."""
    with tmpfs(tmp_path / "disk", size="1m") as folder:
        yield folder


def fill(folder):
    """Write zeros into ``folder`` until its disk is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(64 * 1024))
        except OSError:
            pass


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_disk_full_from_the_start_gives_one_line_and_leaves_nothing_behind(search, kind, small_disk):
    fill(small_disk)
    out = small_disk / "out"
    storage = [] if kind == "sqlite" else ["--storage", f"journal:{small_disk / 'j.log'}"]
    line = one_line(search("--out", out, *storage))
    assert "the disk is full" in line and "free space on it" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "out"] and not list(out.iterdir())


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_disk_filling_up_mid_search_gives_one_line_and_the_same_command_continues_once_space_is_freed(
        search, kind, small_disk, tmp_path):
    out = small_disk / "out"
    storage = f"sqlite:///{out / 'xpnet-search.db'}" if kind == "sqlite" else f"journal:{small_disk / 'j.log'}"
    args = ["--storage", storage, "--out", out, "--epochs", 1, "--heartbeat", HEARTBEAT, "--grace", GRACE]
    command = [sys.executable, "-m", "xpnet", "search", "--quick", "--trials", "500", *map(str, args)]
    with open(tmp_path / "worker.log", "w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and log.seek(0) == 0 and log.read().count("val acc") < 3:
            time.sleep(0.05)
        fill(small_disk)
        assert process.wait(timeout=60) == 1
        error = process.stderr.read()
        process.stderr.close()
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1, error
    assert f"--storage {storage}: the disk is full" in error
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    (small_disk / "filler").unlink()
    done = len(counted(load(storage, "xpnet-search").trials))
    assert done >= 3  # the finished trials are kept
    more = search(*args, "--trials", done + 2)
    assert more[0] == 0, more[1]
    assert len(counted(load(storage, "xpnet-search").trials)) == done + 2


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_worker_stalled_past_the_grace_period_drops_its_result_and_runs_the_rerun(kind, tmp_path, monkeypatch):
    import optuna
    from xpnet.tools.search import storage as storages, study as studies

    for storage_class in (storages.QuietRDBStorage, storages.HeartbeatJournalStorage):  # one heartbeat, then none
        def first_only(self, trial_id, record=storage_class.record_heartbeat, recorded=set()):
            if trial_id not in recorded:
                recorded.add(trial_id)
                record(self, trial_id)
        monkeypatch.setattr(storage_class, "record_heartbeat", first_only)
    url = new_storage(kind, None, tmp_path)
    study = optuna.create_study(study_name="s", storage=storages.open_storage(url, HEARTBEAT, GRACE))
    other_worker = optuna.load_study(study_name="s", storage=storages.open_storage(url, HEARTBEAT, GRACE))

    def objective(trial):
        if storages.RERUN_OF in trial.user_attrs:
            return 0.7
        time.sleep(GRACE + 1)  # a stalled machine: no heartbeat for longer than the grace period
        storages.fail_stale(other_worker)  # what another worker does before its next trial
        return 0.5

    said = []
    assert studies.run(study, objective, 1, say=said.append) == 1
    assert [(t.state.name, t.value, t.user_attrs.get(storages.RERUN_OF)) for t in study.trials] == [
        ("FAIL", None, None), ("COMPLETE", 0.7, 0)]
    assert "declared dead by another one and is run again" in said[0]
