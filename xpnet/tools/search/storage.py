"""Where a search keeps its trials: ``--storage`` opened with heartbeats, and its errors said in one line.

The forms of ``--storage`` (see docs/search.md for commands):

* ``sqlite:///PATH``, the default (``OUT/xpnet-search.db``): one machine,
  offline. Optuna advises against SQLite for many parallel workers.
* ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``: PostgreSQL. With
  SQLAlchemy 2.1 this means the psycopg 3 driver (``pip install
  'xpnet[postgres]'``); ``postgresql+psycopg://`` means it with any
  SQLAlchemy 2; ``postgresql+psycopg2://`` needs psycopg2.
* ``mysql+pymysql://USER[:PASSWORD]@HOST[:PORT]/DB``: MySQL through PyMySQL
  (``pip install 'xpnet[mysql]'``); plain ``mysql://`` needs mysqlclient.
* ``journal:PATH``: Optuna's journal file, for workers on many machines that
  share a file system (NFS, Lustre) and no database server.
* ``redis://HOST[:PORT][/DB]``: the same journal kept in Redis (``pip install
  'xpnet[redis]'``).

Every storage gets heartbeats: a worker records one for its running trial
every ``heartbeat`` seconds, and a trial without one for ``grace`` seconds
(its worker was killed, or its machine lost) is set to FAIL by the next
worker that starts a trial, and queued to run again with the same values
(Optuna's ``RetryFailedTrialCallback``). Optuna's database storages keep the
heartbeats in a table, with the database server's clock; its journal
storage has none in Optuna 5, so :class:`HeartbeatJournalStorage` adds them
as a system attribute of the trial, with the workers' clocks (which must
then agree to well within the grace period, as NTP keeps them).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat  # the interface Optuna's own storages implement
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

__all__ = ["StorageError", "open_storage", "opening", "storage_file", "shown", "explain", "is_storage_error", "adopt_running",
           "fail_stale", "stale_trials", "HeartbeatJournalStorage", "QuietRDBStorage", "SafeJournalFileBackend", "RERUN_OF"]

RERUN_OF = "rerun_of"  # the user attribute of a rerun trial: the number of the trial whose worker died
MAX_RERUNS = 3  # a trial whose workers die more often than this (it kills them?) is not run again

# The driver each URL needs, as the name of its module -> how to install it.
DRIVERS = {
    "psycopg": "pip install 'xpnet[postgres]' (psycopg 3)",
    "psycopg2": "pip install psycopg2-binary, or write postgresql+psycopg:// and pip install 'xpnet[postgres]'",
    "pymysql": "pip install 'xpnet[mysql]' (PyMySQL)",
    "MySQLdb": "pip install mysqlclient, or write mysql+pymysql:// and pip install 'xpnet[mysql]'",
    "redis": "pip install 'xpnet[redis]'",
}


class StorageError(ValueError):
    """A storage that cannot be used, said in one line: the URL (password hidden), the cause and the fix."""


def shown(url):
    """The URL with its password replaced by ``***``, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def storage_file(url):
    """The local file behind an SQLite or journal-file URL, or None for a server."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):].split("?")[0])
    return None


@contextmanager
def opening(url):
    """Take turns with other workers while opening a storage file and making its studies; yield whether it is new.

    Workers that start together on a new SQLite file or journal file hold its
    folder locked (``flock``) from the moment they look for the file until
    their studies are in it: each finds the file with its studies made, or
    makes them alone. One that fails while making a new file removes it (a
    full disk leaves no empty database), knowing that no other worker has
    it open. Where the folder cannot be locked (a file system without
    ``flock`` on folders, such as some NFS mounts), nothing is removed: an
    empty file is better than a study lost. A server (PostgreSQL, MySQL,
    Redis) needs no lock: yields False.
    """
    file = storage_file(url)
    if file is None:
        yield False
        return
    try:
        folder = os.open(file.parent, os.O_RDONLY)
    except OSError:  # no such folder: opening the storage says so, in its own words
        folder = None
    try:
        locked = folder is not None and _lock(folder)
        new = not file.exists()
        try:
            yield new
        except BaseException:
            if new and locked:
                _remove_database(file)
            raise
    finally:
        if folder is not None:
            os.close(folder)  # and with it the lock


def _lock(fd):
    """Wait for an exclusive ``flock`` on ``fd``; False where the file system has none to give."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError:
        return False


def _remove_database(file):
    """Remove a database file, with SQLite's and the journal's extras."""
    for path in (file, *(file.with_name(file.name + extra) for extra in ("-journal", "-wal", "-shm", ".lock"))):
        try:
            path.unlink()
        except OSError:
            pass


def _retry_callback():
    """Optuna's retry of a heartbeat-stale trial, recording the number of the trial it reruns."""
    storages = optuna.storages
    retry_class = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    retry = retry_class(max_retry=MAX_RERUNS)

    def rerun(study, trial):
        trial.user_attrs = {**trial.user_attrs, RERUN_OF: trial.user_attrs.get(RERUN_OF, trial.number)}
        retry(study, trial)

    return rerun


def open_storage(url, heartbeat=60, grace=120):
    """The Optuna storage for ``url`` (see the module's docstring), recording heartbeats every ``heartbeat`` s.

    A running trial without a heartbeat for ``grace`` seconds is failed and
    rerun. Raises :class:`StorageError` with the cause and the fix.
    """
    with warnings.catch_warnings():  # heartbeats and reruns are "experimental" in Optuna since 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(url, heartbeat, grace)


def _open(url, heartbeat, grace):
    if heartbeat < 1 or grace <= heartbeat:
        raise StorageError(f"the grace period ({grace} s) must exceed the heartbeat interval ({heartbeat} s), "
                           f"and the interval be at least 1 s")
    try:
        if url.startswith("journal:"):
            path = storage_file(url)
            if not str(path):
                raise StorageError("--storage journal:PATH needs a PATH, e.g. journal:/shared/xpnet-search.log")
            if not path.parent.is_dir():
                raise StorageError(f"--storage {url}: the folder {path.parent} does not exist: create it, "
                                   f"or give another PATH")
            # A worker that holds the file's lock for the grace period is dead, as one without a heartbeat is.
            lock = JournalFileSymlinkLock(str(path), grace_period=grace)
            return HeartbeatJournalStorage(SafeJournalFileBackend(str(path), lock), heartbeat, grace,
                                           _retry_callback())
        if url.startswith(("redis://", "rediss://", "unix://")):
            from optuna.storages.journal import JournalRedisBackend

            return HeartbeatJournalStorage(JournalRedisBackend(url), heartbeat, grace, _retry_callback())
        return _open_database(url, heartbeat, grace)
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(explain(exc, url)) from None


def _open_database(url, heartbeat, grace):
    """An RDBStorage; workers that start together on a new database race to create its tables, and retry."""
    if url.startswith("sqlite:"):
        connect_args = {"timeout": 60}  # wait up to 60 s for the lock: a few worker processes can share a file
    elif url.startswith(("postgresql", "mysql")) and "connect_timeout" not in url:
        connect_args = {"connect_timeout": 10}  # a server that does not answer fails in 10 s, not in minutes
    else:
        connect_args = {}
    callback_argument = ("heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
                         else "failed_trial_callback")
    for attempt in range(10):
        try:
            storage = QuietRDBStorage(url, engine_kwargs={"connect_args": connect_args}, heartbeat_interval=heartbeat,
                                      grace_period=grace, **{callback_argument: _retry_callback()})
            if url.startswith("sqlite:"):
                _serialize(storage.engine)
            return storage
        except Exception as exc:
            racing = any(words in str(exc) for words in ("already exists", "UNIQUE constraint", "duplicate key",
                                                         "database is locked"))
            if not racing or attempt == 9:
                raise
            time.sleep(0.1 * (attempt + 1))


def _serialize(engine):
    """Make every SQLite transaction take the write lock when it begins (SQLAlchemy's recipe for SQLite).

    Python's sqlite3 starts a transaction only at the first write, so two
    workers could both read that a trial is WAITING (or RUNNING but stale)
    and both take it (or both queue its rerun): SQLite ignores SELECT ... FOR
    UPDATE, which guards the same step on PostgreSQL and MySQL.
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def no_implicit_transactions(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections made so far lack the first hook


def _causes(exc):
    """The exception and those it was raised from or during, outermost first."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _first_line(exc):
    text = str(exc).strip()
    text = re.sub(r"^\(\S+\)\s*", "", text)  # SQLAlchemy's "(sqlite3.OperationalError) ..." prefix
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    # psycopg's 'connection failed: connection to server at "H", port P failed: FATAL:  CAUSE' -> 'CAUSE (at H:P)'
    found = re.match(r'connection failed: connection to server at "([^"]*)", port (\d+) failed: (?:FATAL:\s*)?(.*)', line)
    return f"{found[3]}, at {found[1]}:{found[2]}" if found else " ".join(line.split())


def explain(exc, url):
    """One line for an error from a storage: which storage, the root cause, and what to do.

    Handles a full disk, a server that cannot be reached, a refused login, a
    missing database, a missing driver (naming the extra that brings it) and
    a file that cannot be opened; anything else is its root cause's first line.
    """
    where = f"--storage {shown(url)}"
    chain = _causes(exc)
    root = chain[-1]
    cause = _first_line(root)
    text = " ".join(_first_line(e) for e in chain).lower()
    server = storage_file(url) is None
    for e in chain:
        if isinstance(e, ModuleNotFoundError) and e.name:
            module = e.name.split(".")[0]
            hint = DRIVERS.get(module, f"pip install {module}")
            return f"{where}: the driver for this URL is not installed (no module {module!r}): {hint}"
    if "can't load plugin" in text:
        return f"{where}: not a storage URL ({cause}); see xpnet search --help for the forms of --storage"
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain) or any(
            words in text for words in ("disk is full", "no space left", "could not extend file", "disk full")):
        if server:
            return f"{where}: the database server's disk is full ({cause}): free space on the server"
        return (f"{where}: the disk is full ({cause}): free space on it, or choose --out or --storage on "
                f"another disk")
    if any(words in text for words in ("password authentication failed", "authentication failed", "access denied",
                                       "no pg_hba.conf entry", "role \"", "password is required")):
        return (f"{where}: the server refused the login ({cause}): check the user and password in the URL, "
                f"and that the server lets this user connect from this machine")
    if re.search(r'database "[^"]*" does not exist|unknown database', text):
        return f"{where}: {cause}: create it first (PostgreSQL: createdb NAME; MySQL: CREATE DATABASE NAME)"
    if any(words in text for words in ("connection refused", "could not connect", "can't connect", "timeout expired",
                                       "timed out", "no route to host", "name or service not known",
                                       "could not translate host name", "nodename nor servname",
                                       "connection to server", "error 111", "error -2 connecting")):
        return (f"{where}: cannot reach the database server ({cause}): start it, or check the host and port "
                f"in the URL and that this machine may connect to it")
    if "unable to open database file" in text or "readonly database" in text:
        return (f"{where}: cannot write the database file ({cause}): check that its folder exists and is "
                f"writable")
    return f"{where}: {cause}"


_DRIVER_MODULES = ("sqlalchemy", "sqlite3", "psycopg", "psycopg2", "pymysql", "MySQLdb", "redis")


def is_storage_error(exc):
    """Whether an error came from the storage: its database, its driver, or a full disk under it."""
    for e in _causes(exc):
        if isinstance(e, (optuna.exceptions.StorageInternalError, StorageError)):
            return True
        if type(e).__module__.split(".")[0] in _DRIVER_MODULES:
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    return False


class QuietRDBStorage(RDBStorage):
    """Optuna's RDBStorage, whose heartbeat thread does not print a traceback when a heartbeat cannot be written.

    A full disk or a lost server then fails the trial's own next write,
    which says why in one line; a worker whose heartbeats stay lost has its
    trial failed and rerun by another one.
    """

    def record_heartbeat(self, trial_id):
        try:
            super().record_heartbeat(trial_id)
        except Exception:
            pass


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's journal file, but a write that fails (a full disk) is undone, so the journal stays readable.

    Optuna appends each operation as a line; a line cut short by a full disk
    would make every later line unreadable.
    """

    def append_logs(self, logs):
        import json

        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        self._lock.acquire()
        try:
            fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = 0
                    while written < len(text):  # a write can stop short of a full disk, the next one fails
                        written += os.write(fd, text[written:])
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        finally:
            self._lock.release()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with heartbeats, as its RDBStorage has them.

    A worker records ``time.time()`` as the system attribute
    ``xpnet:heartbeat`` of its running trial every ``heartbeat_interval``
    seconds (one line in the journal). A RUNNING trial whose last heartbeat,
    or its start if later, is more than ``grace_period`` seconds old is
    stale. A rerun copies the attributes of the trial it reruns, so the start
    of the rerun is what counts until its own first heartbeat.
    """

    KEY = "xpnet:heartbeat"

    def __init__(self, backend, heartbeat_interval, grace_period, stale_trial_callback=None):
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id):
        try:
            self.set_trial_system_attr(trial_id, self.KEY, time.time())
        except Exception:
            # Another worker found the trial stale and failed it, or the disk is full: the trial's own next
            # write says so, in one line (a traceback from this thread would not).
            pass

    def _get_stale_trial_ids(self, study_id):
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(trial.system_attrs.get(self.KEY, 0.0), start) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self):
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback

    def get_failed_trial_callback(self):  # the name before Optuna 4.9
        return self.stale_trial_callback


def _heartbeats(study):
    """The storage under the study, if it records heartbeats."""
    storage = getattr(study._storage, "_backend", study._storage)  # RDBStorage sits under Optuna's cache
    return storage if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() else None


def stale_trials(study):
    """Numbers of the RUNNING trials whose heartbeat is older than the grace period (their worker is gone)."""
    storage = _heartbeats(study)
    if storage is None:
        return []
    ids = set(storage._get_stale_trial_ids(study._study_id))
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t._trial_id in ids]


def fail_stale(study):
    """Set the stale trials to FAIL and queue their reruns (what Optuna does before each trial it starts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def adopt_running(study):
    """Fail the stale trials, then give every other RUNNING trial a heartbeat now.

    Optuna's database storages ignore a RUNNING trial that has no heartbeat
    at all: one from a run before heartbeats, or whose worker was killed
    before its first. Recording one now makes it stale after the grace
    period unless its worker is alive and records its own (a live trial only
    gets its heartbeat refreshed).
    """
    storage = _heartbeats(study)
    if storage is None:
        return
    fail_stale(study)
    if isinstance(storage, RDBStorage):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.record_heartbeat(trial._trial_id)
