"""xpnet.fileio.atomic_write, the one file writer: whole files, through links, with ordinary modes, no litter."""

import os
import stat
import subprocess
import sys
import time

import pytest

from xpnet.fileio import atomic_write, check_writable, remove_stale


def write(path, data=b"new"):
    with atomic_write(path) as f:
        f.write(data)


def test_a_write_through_a_symbolic_link_replaces_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "runs" / "ckpt.npz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    write(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(target.parent)) == ["ckpt.npz"]


def test_a_dangling_link_gets_its_target_written(tmp_path):
    link = tmp_path / "latest.npz"
    link.symlink_to(tmp_path / "first.npz")
    write(link)
    assert link.is_symlink() and (tmp_path / "first.npz").read_bytes() == b"new"


def test_a_new_file_gets_the_umasks_ordinary_mode_and_a_replaced_one_keeps_its_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        write(tmp_path / "a.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o644
        os.umask(0o077)
        write(tmp_path / "b.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o600
        os.chmod(tmp_path / "a.npz", 0o640)
        write(tmp_path / "a.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o640
    finally:
        os.umask(previous)


def test_errors_name_the_users_path_not_the_temporary_file(tmp_path):
    missing = tmp_path / "no" / "such" / "ckpt.npz"
    with pytest.raises(FileNotFoundError) as caught:
        write(missing)
    assert caught.value.filename == str(missing) and ".tmp" not in str(caught.value)
    with pytest.raises(FileNotFoundError) as caught:
        check_writable(missing)
    assert caught.value.filename == str(missing)
    with pytest.raises(IsADirectoryError) as caught:
        check_writable(tmp_path)
    assert caught.value.filename == str(tmp_path)


def test_check_writable_leaves_the_file_and_the_folder_as_they_were(tmp_path):
    (tmp_path / "ckpt.npz").write_bytes(b"good")
    check_writable(tmp_path / "ckpt.npz")
    check_writable(tmp_path / "new.png")
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"] and (tmp_path / "ckpt.npz").read_bytes() == b"good"


def dead_pid():
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_killed_writes_are_removed_by_the_next_write(tmp_path):
    stale = tmp_path / f".ckpt.npz.{dead_pid()}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    old = time.time() - 60
    os.utime(stale, (old, old))
    running = tmp_path / f".ckpt.npz.{os.getppid()}.def456.tmp"  # a writer that is still alive
    running.write_bytes(b"being written")
    other = tmp_path / f".other.npz.{dead_pid()}.ghi789.tmp"  # another file's: not this write's business
    other.write_bytes(b"x")
    write(tmp_path / "ckpt.npz")
    assert not stale.exists() and running.exists() and other.exists()
    assert remove_stale(tmp_path / "other.npz") == [str(other)]
    assert sorted(os.listdir(tmp_path)) == [running.name, "ckpt.npz"]


def test_an_error_in_the_block_leaves_the_old_file_and_no_temporary_file(tmp_path):
    (tmp_path / "ckpt.npz").write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "ckpt.npz") as f:
            f.write(b"half")
            raise RuntimeError("the disk is full")
    assert os.listdir(tmp_path) == ["ckpt.npz"] and (tmp_path / "ckpt.npz").read_bytes() == b"good"
