"""A small tmpfs for the tests of full disks and read-only folders."""

import contextlib
import os
import shutil
import subprocess

import pytest


@contextlib.contextmanager
def tmpfs(folder, size="4m"):
    """A tmpfs of ``size`` mounted at the new folder ``folder`` for the block, always unmounted.

    Mounting needs root (where permissions would not stop root, a mount does); elsewhere the test skips, saying so.
    """
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (a full disk and a read-only folder cannot be made otherwise)")
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
