"""Data sets: the IDX reader, the MNIST cache and its errors, the embedded digits. No test touches the network."""

import gzip
import hashlib
import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from xpnet.datasets import (DatasetError, load_digits, load_fashion_mnist, load_mnist, load_mnist_test_split,
                            read_idx, write_idx)
from xpnet import fileio
from xpnet.datasets import digits, mnist

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_shared_mnist = pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                                        reason=f"the MNIST test files are not in {SHARED_MNIST}")


# --- IDX ------------------------------------------------------------------------------------


@needs_shared_mnist
def test_the_real_mnist_test_files():
    images = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and list(labels[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(labels).sum() == 10000 and np.bincount(labels).min() > 800


@needs_shared_mnist
@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_the_expected_checksums_are_those_of_the_real_files(name):
    assert hashlib.sha256((SHARED_MNIST / name).read_bytes()).hexdigest() == mnist.DATASETS["mnist"]["sha256"][name]


def test_read_idx_takes_a_file_object_and_detects_gzip_by_its_magic_bytes(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "gzipped-but-named.idx").write_bytes((tmp_path / "a.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "gzipped-but-named.idx"), array)
    with open(tmp_path / "a.gz", "rb") as f:
        np.testing.assert_array_equal(read_idx(f), array)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, shape, suffix):
    array = (np.arange(np.prod(shape)) - 3).astype(dtype).reshape(shape)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_a_truncated_idx_file_names_the_sizes(tmp_path):
    path = tmp_path / "cut.idx"
    write_idx(path, np.zeros((10, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    expected = r"cut.idx: 35 bytes of data, but the header's shape \(10, 4\) of uint8 needs 40"
    with pytest.raises(DatasetError, match=expected):
        read_idx(path)


def test_a_truncated_header_is_reported(tmp_path):
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x02"))
    with pytest.raises(DatasetError, match=r"short.idx.gz: truncated header \(8 bytes, 16 needed for 3 dimensions\)"):
        read_idx(path)


def test_write_idx_refuses_a_type_idx_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="not int64"):
        write_idx(tmp_path / "a.idx", np.zeros(3, np.int64))


def test_a_bad_magic_is_not_an_idx_file(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetError, match="bad.idx: not an IDX file"):
        read_idx(path)


def test_a_damaged_gzip_is_reported(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")[:-6])
    with pytest.raises(DatasetError, match="broken.gz: the gzip stream is damaged or truncated"):
        read_idx(path)


def test_a_gzip_with_one_flipped_byte_is_reported_as_damaged(tmp_path):
    path = tmp_path / "flipped.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # inside the deflate stream: zlib.error or a CRC failure, depending on the byte
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="flipped.gz: the gzip stream is damaged or truncated"):
        read_idx(path)


def test_a_flipped_byte_in_a_stored_block_is_reported_as_damaged(tmp_path):
    path = tmp_path / "stored.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc", compresslevel=0))
    raw = bytearray(path.read_bytes())
    raw[11] ^= 0x40  # the stored block's length: zlib.error "invalid stored block lengths"
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="stored.gz: the gzip stream is damaged or truncated"):
        read_idx(path)


def test_idx_sizes_whose_product_overflows_are_reported(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(struct.pack(">BBBB4I", 0, 0, 0x08, 4, *(2**16,) * 4))  # 2**64 values: 0 in 64-bit arithmetic
    with pytest.raises(DatasetError, match=r"huge.idx: 0 bytes of data, but the header's shape \(65536, 65536, 65536, 65536\) "
                                           r"of uint8 needs 18446744073709551616"):
        read_idx(path)


# --- MNIST download, cache and errors (with a fake network) -----------------------------------


@pytest.fixture(params=["mnist", "fashion-mnist"])
def fake_mirror(request, tmp_path, monkeypatch):
    """Small IDX files served by a replacement for the download function; their checksums made the expected ones."""
    rng = np.random.default_rng(0)
    served = tmp_path / "served"
    served.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5, dtype=np.uint8)}
    sums, content_sums = {}, {}
    for name, array in arrays.items():
        write_idx(served / name, array)
        sums[name] = hashlib.sha256((served / name).read_bytes()).hexdigest()
        content_sums[name] = hashlib.sha256(gzip.decompress((served / name).read_bytes())).hexdigest()
    dataset = request.param
    spec = {"mirrors": ("https://first.invalid/data/", "https://second.invalid/data/"), "sha256": sums,
            "idx_sha256": content_sums}
    monkeypatch.setitem(mnist.DATASETS, dataset, spec)
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "cache"))
    fetched, broken = [], set()

    def fetch(url, dest):
        fetched.append(url)
        mirror, name = url.rsplit("/", 1)
        Path(dest).write_bytes(b"a damaged copy" if mirror + "/" in broken else (served / name).read_bytes())

    monkeypatch.setattr(mnist, "_fetch", fetch)
    load = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}[dataset]
    return {"arrays": arrays, "fetched": fetched, "served": served, "cache": tmp_path / "cache" / dataset,
            "dataset": dataset, "load": load, "mirrors": spec["mirrors"], "broken": broken}


def names(urls):
    return [url.rsplit("/", 1)[1] for url in urls]


def test_downloads_once_then_uses_the_cache(fake_mirror):
    (x, t), (xt, tt) = fake_mirror["load"]()
    assert x.shape == (20, 784) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert xt.shape == (5, 784) and t.dtype == np.uint8
    np.testing.assert_array_equal(t, fake_mirror["arrays"]["train-labels-idx1-ubyte.gz"])
    np.testing.assert_allclose(xt * 255, fake_mirror["arrays"]["t10k-images-idx3-ubyte.gz"].reshape(5, 784), atol=1e-4)
    assert sorted(names(fake_mirror["fetched"])) == sorted(mnist.FILES)
    assert all(url.startswith(fake_mirror["mirrors"][0]) for url in fake_mirror["fetched"])
    fake_mirror["load"]()
    assert len(fake_mirror["fetched"]) == 4  # the second call fetched nothing
    assert (fake_mirror["cache"] / f"{fake_mirror['dataset']}.npz").exists()
    cached = sorted(p.name for p in fake_mirror["cache"].iterdir())
    assert cached == sorted([*mnist.FILES, f"{fake_mirror['dataset']}.npz"])  # no temporary file left behind


def test_the_cache_holds_no_pickle(fake_mirror):
    fake_mirror["load"]()
    with np.load(fake_mirror["cache"] / f"{fake_mirror['dataset']}.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["t_test", "t_train", "x_test", "x_train"]
        assert all(f[k].dtype == np.uint8 for k in f.files)


def test_shapes_and_dtypes_as_in_the_book(fake_mirror):
    (x, t), (xt, tt) = fake_mirror["load"](normalize=False, flatten=False, one_hot_label=True)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.uint8 and xt.shape == (5, 1, 28, 28)
    assert t.shape == (20, 10) and t.dtype == np.float32 and (t.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(t.argmax(axis=1), fake_mirror["arrays"]["train-labels-idx1-ubyte.gz"])
    (x, t), _ = fake_mirror["load"](normalize=True, flatten=False)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32 and t.shape == (20,) and t.dtype == np.uint8


def test_an_unreadable_npz_cache_is_reported_and_rebuilt(fake_mirror):
    fake_mirror["load"]()
    cache = fake_mirror["cache"] / f"{fake_mirror['dataset']}.npz"
    cache.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match=r"npz is unreadable \(.*\); parsing the IDX files again"):
        (x, _), _ = fake_mirror["load"]()
    assert x.shape == (20, 784) and len(fake_mirror["fetched"]) == 4
    with np.load(cache, allow_pickle=False) as f:
        assert f["x_train"].shape == (20, 28, 28)


def test_a_truncated_cached_file_is_reported_and_fetched_again(fake_mirror):
    cache = fake_mirror["cache"]
    cache.mkdir(parents=True)
    good = (fake_mirror["served"] / "t10k-images-idx3-ubyte.gz").read_bytes()
    (cache / "t10k-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="t10k-images-idx3-ubyte.gz is corrupt or truncated"):
        _, (xt, _) = fake_mirror["load"]()
    assert "t10k-images-idx3-ubyte.gz" in names(fake_mirror["fetched"]) and xt.shape == (5, 784)
    assert (cache / "t10k-images-idx3-ubyte.gz").read_bytes() == good
    assert (cache / "t10k-images-idx3-ubyte.gz.rejected").read_bytes() == good[: len(good) // 2]  # moved, not deleted


def test_a_bad_download_is_reported_and_the_next_mirror_tried(fake_mirror):
    first, second = fake_mirror["mirrors"]
    fake_mirror["broken"].add(first)
    with pytest.warns(UserWarning, match="SHA-256 does not match"):
        (x, _), _ = fake_mirror["load"]()
    assert x.shape == (20, 784)
    assert [url.startswith(second) for url in fake_mirror["fetched"]] == [False, True] * 4


def test_a_download_with_the_wrong_checksum_everywhere_is_refused(fake_mirror):
    fake_mirror["broken"].update(fake_mirror["mirrors"])
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="SHA-256 does not match"):
        fake_mirror["load"]()
    assert not list(fake_mirror["cache"].glob("*.gz"))


def offline(url, dest):
    raise OSError("Name or service not known")


def regzipped(data):
    """The same IDX content in another gzip stream (another level and time stamp): other bytes, other SHA-256."""
    return gzip.compress(gzip.decompress(data), compresslevel=1, mtime=1234567890)


def put_files(fake_mirror, change=None):
    """The served files in the cache folder, as a user would put them there; ``change(name, data)`` alters them."""
    cache = fake_mirror["cache"]
    cache.mkdir(parents=True, exist_ok=True)
    for name in mnist.FILES:
        data = (fake_mirror["served"] / name).read_bytes()
        (cache / name).write_bytes(change(name, data) if change else data)
    return cache


def test_a_regzipped_file_with_the_published_content_is_accepted_offline(fake_mirror, monkeypatch):
    cache = put_files(fake_mirror, lambda name, data: regzipped(data))
    mine = {name: (cache / name).read_bytes() for name in mnist.FILES}
    assert all(mine[n] != (fake_mirror["served"] / n).read_bytes() for n in mnist.FILES)  # the gz bytes differ
    monkeypatch.setattr(mnist, "_fetch", offline)
    (x, t), _ = fake_mirror["load"](normalize=False, flatten=False)
    np.testing.assert_array_equal(x[:, 0], fake_mirror["arrays"]["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(t, fake_mirror["arrays"]["train-labels-idx1-ubyte.gz"])
    assert {name: (cache / name).read_bytes() for name in mnist.FILES} == mine


def test_an_uncompressed_file_with_the_published_content_is_accepted(fake_mirror, monkeypatch):
    cache = put_files(fake_mirror, lambda name, data: gzip.decompress(data) if "labels" in name else data)
    monkeypatch.setattr(mnist, "_fetch", offline)
    (_, t), _ = fake_mirror["load"]()
    np.testing.assert_array_equal(t, fake_mirror["arrays"]["train-labels-idx1-ubyte.gz"])


def other_content(name, data):
    """A valid IDX file of the right shape whose content is not the published one."""
    array = read_idx(io.BytesIO(data))
    array[0] ^= 1
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as f:
        f.write(gzip.decompress(data)[:-array.size] + array.tobytes())
    return out.getvalue()


def test_offline_a_file_that_fails_the_check_is_left_as_it_was(fake_mirror, monkeypatch):
    cache = put_files(fake_mirror, lambda name, data: other_content(name, data) if "t10k-labels" in name else data)
    mine = (cache / "t10k-labels-idx1-ubyte.gz").read_bytes()
    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.warns(UserWarning, match="t10k-labels-idx1-ubyte.gz is corrupt or truncated, or not the published file"), \
            pytest.raises(DatasetError, match=r"missing t10k-labels-idx1-ubyte\.gz"):
        fake_mirror["load"]()
    assert (cache / "t10k-labels-idx1-ubyte.gz").read_bytes() == mine
    assert sorted(p.name for p in cache.iterdir()) == sorted(mnist.FILES)


def test_a_file_that_fails_the_check_is_kept_beside_the_verified_copy_that_replaces_it(fake_mirror):
    cache = put_files(fake_mirror, lambda name, data: other_content(name, data) if "t10k-labels" in name else data)
    mine = (cache / "t10k-labels-idx1-ubyte.gz").read_bytes()
    with pytest.warns(UserWarning, match=r"t10k-labels-idx1-ubyte.gz is corrupt or truncated, or not the published file "
                                         r"\(.*\); kept as .*t10k-labels-idx1-ubyte.gz.rejected"):
        _, (_, tt) = fake_mirror["load"]()
    np.testing.assert_array_equal(tt, fake_mirror["arrays"]["t10k-labels-idx1-ubyte.gz"])
    assert names(fake_mirror["fetched"]) == ["t10k-labels-idx1-ubyte.gz"]
    served = (fake_mirror["served"] / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert (cache / "t10k-labels-idx1-ubyte.gz").read_bytes() == served
    assert (cache / "t10k-labels-idx1-ubyte.gz.rejected").read_bytes() == mine


def test_a_second_rejected_file_never_replaces_the_first(fake_mirror):
    cache = put_files(fake_mirror)
    (cache / "train-labels-idx1-ubyte.gz").write_bytes(b"first")
    (cache / "train-labels-idx1-ubyte.gz.rejected").write_bytes(b"kept from before")
    with pytest.warns(UserWarning, match="kept as .*train-labels-idx1-ubyte.gz.rejected-2"):
        fake_mirror["load"]()
    assert (cache / "train-labels-idx1-ubyte.gz.rejected").read_bytes() == b"kept from before"
    assert (cache / "train-labels-idx1-ubyte.gz.rejected-2").read_bytes() == b"first"


def test_a_bad_download_never_touches_the_users_file(fake_mirror):
    cache = put_files(fake_mirror, lambda name, data: data[: len(data) // 2] if "t10k-images" in name else data)
    mine = (cache / "t10k-images-idx3-ubyte.gz").read_bytes()
    fake_mirror["broken"].update(fake_mirror["mirrors"])
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="SHA-256 does not match"):
        fake_mirror["load"]()
    assert (cache / "t10k-images-idx3-ubyte.gz").read_bytes() == mine
    assert sorted(p.name for p in cache.iterdir()) == sorted(mnist.FILES)


@needs_shared_mnist
@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_the_expected_content_checksums_are_those_of_the_real_files(name):
    content = gzip.decompress((SHARED_MNIST / name).read_bytes())
    assert hashlib.sha256(content).hexdigest() == mnist.DATASETS["mnist"]["idx_sha256"][name]


@needs_shared_mnist
def test_load_mnist_test_split_accepts_a_regzipped_copy(tmp_path):
    for name in mnist.FILES[2:]:
        (tmp_path / name).write_bytes(regzipped((SHARED_MNIST / name).read_bytes()))
    (_, t), _ = load_mnist_test_split(tmp_path)
    assert list(t[:5]) == [7, 2, 1, 0, 4]


# --- the .npz cache: checked against the verified files, rebuilt when it does not match -------------


def rewrite_cache(fake_mirror, **changes):
    cache = fake_mirror["cache"] / f"{fake_mirror['dataset']}.npz"
    with np.load(cache) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    return cache


def train_labels(fake_mirror):
    return fake_mirror["arrays"]["train-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("change, problem", [
    (lambda a: {"t_train": a[:-3]}, r"t_train has 17 labels for 20 images in x_train"),
    (lambda a: {"t_train": np.where(np.arange(20) == 4, 12, a).astype(np.uint8)}, r"t_train: labels run up to 12, expected 0\.\.9"),
    (lambda a: {"t_train": a.astype(np.int64)}, r"t_train is int64, expected uint8"),
    (lambda a: {"t_train": a.reshape(20, 1)}, r"t_train has shape \(20, 1\), expected \(N,\)"),
    (lambda a: {"x_train": np.zeros((20, 784), np.uint8)}, r"x_train has shape \(20, 784\), expected \(N, 28, 28\)"),
    (lambda a: {"t_train": None}, r"has no t_train"),
    (lambda a: {"t_train": (a + 1) % 10}, r"t_train differs from the verified train-labels-idx1-ubyte\.gz"),
])
def test_a_cache_that_does_not_match_the_verified_files_is_rebuilt(fake_mirror, change, problem):
    fake_mirror["load"]()
    cache = rewrite_cache(fake_mirror, **change(train_labels(fake_mirror)))
    with pytest.warns(UserWarning, match=f"{re.escape(str(cache))}: {problem}; rebuilding it from the verified IDX files"):
        (_, t), _ = fake_mirror["load"]()
    np.testing.assert_array_equal(t, train_labels(fake_mirror))
    assert t.dtype == np.uint8
    with np.load(cache) as f:  # the rebuilt cache holds the verified arrays again
        np.testing.assert_array_equal(f["t_train"], train_labels(fake_mirror))
    assert len(fake_mirror["fetched"]) == 4  # the IDX files were at hand: nothing fetched again


def test_a_bad_cache_without_the_files_and_offline_is_refused(fake_mirror, monkeypatch):
    fake_mirror["load"]()
    for name in mnist.FILES:
        (fake_mirror["cache"] / name).unlink()
    cache = rewrite_cache(fake_mirror, t_train=train_labels(fake_mirror)[:-3])
    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.warns(UserWarning, match="17 labels for 20 images"), pytest.raises(DatasetError, match="missing"):
        fake_mirror["load"]()
    assert cache.exists()  # left for the user to look at; never returned


# --- a read-only data folder ------------------------------------------------------------------------


@pytest.fixture
def read_only_files(monkeypatch):
    """Every new file fails as in a read-only folder (the tests run as root, where permissions do not stop writes)."""
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(fileio.tempfile, "NamedTemporaryFile", refuse)


def test_a_read_only_folder_with_verified_files_works_without_the_cache(fake_mirror, read_only_files):
    cache = put_files(fake_mirror)
    before = sorted(p.name for p in cache.iterdir())
    with pytest.warns(UserWarning, match=r"cannot write the cache .*\.npz \(OSError: \[Errno 30\] Read-only file "
                                         r"system\); the IDX files will be read again next time"):
        (x, t), _ = fake_mirror["load"]()
    assert x.shape == (20, 784)
    np.testing.assert_array_equal(t, train_labels(fake_mirror))
    assert fake_mirror["fetched"] == [] and sorted(p.name for p in cache.iterdir()) == before




def test_offline_the_error_says_what_is_missing_and_where_to_put_it(fake_mirror, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.raises(DatasetError) as info:
        fake_mirror["load"]()
    message = str(info.value)
    assert "missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz" in message
    assert f"Put the files by hand in {fake_mirror['cache']}" in message
    for name in mnist.FILES:
        for mirror in fake_mirror["mirrors"]:
            assert mirror + name in message
    assert "Name or service not known" in message


def test_offline_the_error_also_has_a_one_line_summary_for_the_command_line(fake_mirror, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.raises(DatasetError) as info:
        fake_mirror["load"]()
    summary = info.value.summary
    assert "\n" not in summary and "\n" in str(info.value)  # the Python API keeps the full text
    dataset = fake_mirror["dataset"]
    assert summary.startswith(f"{dataset}: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                              f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in {fake_mirror['cache']} "
                              "(download failed: OSError: Name or service not known); ")
    assert f"put the files there by hand (from {fake_mirror['mirrors'][0]})" in summary
    assert f"set XPNET_DATA to a folder whose {dataset}/ holds them" in summary


def test_a_one_line_dataset_error_is_its_own_summary():
    assert DatasetError("x.idx: not an IDX file").summary == "x.idx: not an IDX file"


def test_offline_only_the_absent_files_are_listed(fake_mirror, monkeypatch):
    cache = fake_mirror["cache"]
    cache.mkdir(parents=True)
    for name in mnist.FILES[1:]:
        (cache / name).write_bytes((fake_mirror["served"] / name).read_bytes())
    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.raises(DatasetError, match=r"missing train-images-idx3-ubyte\.gz\.\n"):
        fake_mirror["load"]()


class FakeResponse(io.BytesIO):
    """What urlopen returns, enough for _fetch: headers, read and a context manager."""

    def __init__(self, data, fail_after=None):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(size)


def test_fetch_writes_the_whole_file_atomically(tmp_path, monkeypatch):
    data = bytes(range(256)) * 1000
    monkeypatch.setattr(mnist, "urlopen", lambda url, timeout: FakeResponse(data))
    mnist._fetch("https://mirror.invalid/file.gz", tmp_path / "file.gz")
    assert (tmp_path / "file.gz").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["file.gz"]


def test_an_interrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    data = bytes(200_000)
    monkeypatch.setattr(mnist, "urlopen", lambda url, timeout: FakeResponse(data, fail_after=65536))
    with pytest.raises(ConnectionResetError):
        mnist._fetch("https://mirror.invalid/file.gz", tmp_path / "file.gz")
    assert list(tmp_path.iterdir()) == []


# --- the MNIST test split and the embedded digits ----------------------------------------------


@needs_shared_mnist
def test_load_mnist_test_split_from_a_folder():
    (x, t), (xt, tt) = load_mnist_test_split(SHARED_MNIST, flatten=False)
    assert x.shape == (8000, 1, 28, 28) and xt.shape == (2000, 1, 28, 28)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert t.shape == (8000,) and t.dtype == np.uint8 and list(t[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(t, minlength=10).sum() + np.bincount(tt, minlength=10).sum() == 10000


@needs_shared_mnist
def test_load_mnist_test_split_options():
    (x, t), (xt, tt) = load_mnist_test_split(SHARED_MNIST, train_size=9000, normalize=False, one_hot_label=True)
    assert x.shape == (9000, 784) and x.dtype == np.uint8 and xt.shape == (1000, 784)
    assert t.shape == (9000, 10) and t.dtype == np.float32 and list(t[:5].argmax(axis=1)) == [7, 2, 1, 0, 4]
    with pytest.raises(ValueError, match="train_size"):
        load_mnist_test_split(SHARED_MNIST, train_size=10000)


@needs_shared_mnist
def test_load_mnist_test_split_defaults_to_the_mnist_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    for name in mnist.FILES[2:]:
        (tmp_path / "mnist" / name).write_bytes((SHARED_MNIST / name).read_bytes())
    (x, _), (xt, _) = load_mnist_test_split()
    assert len(x) == 8000 and len(xt) == 2000


@needs_shared_mnist
def test_load_mnist_test_split_refuses_a_corrupt_file(tmp_path):
    for name in mnist.FILES[2:]:
        (tmp_path / name).write_bytes((SHARED_MNIST / name).read_bytes())
    with open(tmp_path / "t10k-labels-idx1-ubyte.gz", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: SHA-256 mismatch"):
        load_mnist_test_split(tmp_path)


def test_load_mnist_test_split_without_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is missing") as info:
        load_mnist_test_split(tmp_path)
    assert str(tmp_path) in str(info.value) and "https://ossci-datasets.s3.amazonaws.com/mnist/" in str(info.value)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "mnist"))):
        load_mnist_test_split()


def test_the_embedded_digits():
    (x, t), (xt, tt) = load_digits()
    assert x.shape == (1438, 64) and xt.shape == (359, 64)  # 1,797 rows; index % 5 == 4 is the test split
    assert x.dtype == np.float32 and xt.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert set(np.unique(t)) == set(range(10)) and set(np.unique(tt)) == set(range(10))
    assert t.dtype == np.uint8 and tt.dtype == np.uint8 and t.shape == (1438,)
    (x4, _), (xt4, _) = load_digits(normalize=False, flatten=False, one_hot_label=False)
    assert x4.shape == (1438, 1, 8, 8) and xt4.shape == (359, 1, 8, 8) and x4.dtype == np.uint8 and x4.max() == 16
    np.testing.assert_array_equal(x4.reshape(-1, 64) / np.float32(16), x)
    (xf, _), (_, one_hot) = load_digits(flatten=False, one_hot_label=True)
    assert xf.shape == (1438, 1, 8, 8) and xf.dtype == np.float32
    assert one_hot.shape == (359, 10) and one_hot.dtype == np.float32
    np.testing.assert_array_equal(one_hot.argmax(axis=1), tt)


def test_the_digits_split_is_every_fifth_row():
    with gzip.open(digits.DIGITS_PATH, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    assert table.shape == (1797, 65)
    (_, t), (_, tt) = load_digits()
    np.testing.assert_array_equal(tt, table[4::5, -1])
    np.testing.assert_array_equal(t, np.delete(table[:, -1], np.s_[4::5]))


def test_the_embedded_digits_file_is_the_documented_one():
    readme = (digits.DIGITS_PATH.parent / "README.md").read_text()
    assert hashlib.sha256(digits.DIGITS_PATH.read_bytes()).hexdigest() in readme
