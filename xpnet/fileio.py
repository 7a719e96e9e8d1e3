"""Files written whole or not at all: checkpoints, the data set cache, reports and pictures.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(folder, "notes.txt"), "w") as f:
    ...     _ = f.write("all of it, or nothing")
    >>> os.listdir(folder)
    ['notes.txt']
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """A file object whose contents take the place of ``path`` only when the ``with`` block completes.

    The block writes to a temporary file beside ``path`` (``.NAME.*.tmp``,
    in the same folder, so the rename cannot cross file systems); it is
    flushed to disk, then renamed over ``path`` (``os.replace``, atomic on
    POSIX and Windows), and the folder is synced so that the rename
    survives a crash where the system allows it. An exception in the block,
    or a crash, leaves ``path`` as it was and no temporary file behind.
    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says
    otherwise); the file is written at exactly ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes new files: mode 'wb' or 'w', not {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    tmp = tempfile.NamedTemporaryFile(mode, dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                      delete=False, encoding=encoding)
    try:
        with tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    _fsync_folder(folder)


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
