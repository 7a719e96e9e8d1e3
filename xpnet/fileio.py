"""Files written whole or not at all: checkpoints, the data set cache, reports and pictures.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(folder, "notes.txt"), "w") as f:
    ...     _ = f.write("all of it, or nothing")
    >>> os.listdir(folder)
    ['notes.txt']

What a write promises:

- ``path`` is replaced only when the ``with`` block completes; an error, a
  full disk or a crash leaves it as it was (never a 0-byte or half file);
- a symbolic link is followed: the file it points to is replaced and the
  link stays a link (as ``open(path, "w")`` would do);
- the new file gets the mode an ordinary new file gets under the process's
  umask (0644 under umask 022), or keeps the mode of the file it replaces;
- errors name ``path``, never the hidden temporary file;
- temporary files left by a write that was killed (SIGKILL, a power cut)
  are removed by the next write of the same file (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time

__all__ = ["atomic_write", "check_writable", "remove_stale", "target_of"]


def target_of(path):
    """The file a write of ``path`` replaces: ``path`` with its symbolic links followed (as a string)."""
    return os.path.realpath(os.fspath(path))


def _prefix(target):
    """Temporary files of ``target`` are ``.NAME.PID.RANDOM.tmp`` beside it: the pid tells a dead writer's."""
    return f".{os.path.basename(target)}."


def _umask():
    """The process's umask, read without changing it where the system tells it (Linux), else set and reset."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(target):
    """The mode of the file ``target`` replaces, else that of an ordinary new file under the umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process: alive
        return True
    return True


def remove_stale(path, before=None):
    """Remove the temporary files that earlier, killed writes of ``path`` left beside it; returns their names.

    A temporary file is stale when the process named in it (``.NAME.PID.*.tmp``)
    no longer exists and it was last changed before ``before`` (seconds since
    the epoch; default: now). Files of running writers are left alone. A
    folder shared between machines (NFS) may hold a file of a process alive
    on another machine whose pid is free here: give such runs their own files.
    """
    target = target_of(path)
    folder, prefix = os.path.dirname(target), _prefix(target)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.[^.]+\.tmp")
    before = time.time() if before is None else before
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        full = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            if os.lstat(full).st_mtime < before:
                os.unlink(full)
                removed.append(full)
    return removed


def _named(exc, tmp_name, path):
    """``exc`` naming ``path`` where it named the temporary file (or nothing), of the same type."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (tmp_name, None) \
            and exc.filename != path and tmp_name is not None:
        return type(exc)(exc.errno, exc.strerror, os.fspath(path))
    return exc


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """A file object whose contents take the place of ``path`` only when the ``with`` block completes.

    The block writes to a temporary file beside the target (``.NAME.PID.*.tmp``,
    in the same folder, so the rename cannot cross file systems); it is
    flushed to disk, then renamed over the target (``os.replace``, atomic on
    POSIX and Windows), and the folder is synced so that the rename
    survives a crash where the system allows it. The target is ``path`` with
    its symbolic links followed. An exception in the block leaves the target
    as it was and no temporary file behind; those of earlier writes that
    were killed are removed first (:func:`remove_stale`). ``mode`` is
    ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise); the
    file is written at exactly ``path`` (no suffix is added), with the mode
    of the file it replaces or, for a new file, 0666 less the umask.
    OSErrors name ``path``, not the temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes new files: mode 'wb' or 'w', not {mode!r}")
    path = os.fspath(path)
    target = target_of(path)
    folder = os.path.dirname(target)
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    started = time.time()
    remove_stale(target, before=started)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    file_mode = _mode_for(target)
    tmp_name = None
    try:
        tmp = tempfile.NamedTemporaryFile(mode, dir=folder, prefix=f"{_prefix(target)}{os.getpid()}.",
                                          suffix=".tmp", delete=False, encoding=encoding)
        tmp_name = tmp.name
        try:
            with tmp:
                os.fchmod(tmp.fileno(), file_mode)
                yield tmp
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
    except OSError as exc:
        named = _named(exc, tmp_name if tmp_name is not None else exc.filename, path)
        if named is exc:
            raise
        raise named from exc
    _fsync_folder(folder)


def check_writable(path):
    """Raise the OSError a write of ``path`` would meet (missing or read-only folder, a full disk, a folder in
    its place), naming ``path``; writes and removes a small temporary file beside it, and leaves ``path`` as it
    is. For options like ``--save`` and ``--plot``: check them before the work, not after."""
    path = os.fspath(path)
    target = target_of(path)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile("wb", dir=os.path.dirname(target), prefix=f"{_prefix(target)}{os.getpid()}.",
                                         suffix=".tmp") as probe:
            tmp_name = probe.name
            probe.write(b"\0" * 4096)  # a page: a full file system refuses it at the flush
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        named = _named(exc, tmp_name if tmp_name is not None else exc.filename, path)
        if named is exc:
            raise
        raise named from exc


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (POSIX); not possible, and not needed, everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
