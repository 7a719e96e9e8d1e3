"""Data sets: the IDX reader, the MNIST cache and its errors, the embedded digits. No test touches the network."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from xpnet.datasets import DatasetError, load_digits, load_mnist, load_mnist_test_split, read_idx, write_idx
from xpnet.datasets import mnist

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
    with pytest.raises(DatasetError, match=r"cut.idx: 35 bytes of data, but the header's shape \(10, 4\) of uint8 needs 40"):
        read_idx(path)


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


# --- MNIST download, cache and errors (with a fake network) -----------------------------------


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """Small IDX files served by a replacement for the download function; their checksums made the expected ones."""
    rng = np.random.default_rng(0)
    served = tmp_path / "served"
    served.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5, dtype=np.uint8)}
    sums = {}
    for name, array in arrays.items():
        write_idx(served / name, array)
        sums[name] = hashlib.sha256((served / name).read_bytes()).hexdigest()
    spec = {"mirrors": ("https://mirror.invalid/mnist/",), "sha256": sums}
    monkeypatch.setitem(mnist.DATASETS, "mnist", spec)
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "cache"))
    fetched = []

    def fetch(url, dest):
        fetched.append(url.rsplit("/", 1)[1])
        Path(dest).write_bytes((served / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(mnist, "_fetch", fetch)
    return {"arrays": arrays, "fetched": fetched, "served": served, "cache": tmp_path / "cache" / "mnist"}


def test_load_mnist_downloads_once_then_uses_the_cache(fake_mirror):
    (x, t), (xt, tt) = load_mnist()
    assert x.shape == (20, 784) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert xt.shape == (5, 784) and t.dtype == np.uint8
    np.testing.assert_array_equal(t, fake_mirror["arrays"]["train-labels-idx1-ubyte.gz"])
    assert sorted(fake_mirror["fetched"]) == sorted(mnist.FILES)
    load_mnist()
    assert len(fake_mirror["fetched"]) == 4  # the second call fetched nothing
    assert (fake_mirror["cache"] / "mnist.npz").exists()


def test_load_mnist_shapes_as_in_the_book(fake_mirror):
    (x, t), _ = load_mnist(normalize=False, flatten=False, one_hot_label=True)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.uint8
    assert t.shape == (20, 10) and t.dtype == np.float32 and (t.sum(axis=1) == 1).all()


def test_a_corrupt_cached_file_is_reported_and_fetched_again(fake_mirror):
    cache = fake_mirror["cache"]
    cache.mkdir(parents=True)
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="t10k-labels-idx1-ubyte.gz is corrupt or truncated"):
        load_mnist()
    assert "t10k-labels-idx1-ubyte.gz" in fake_mirror["fetched"]


def test_a_download_with_the_wrong_checksum_is_refused(fake_mirror):
    (fake_mirror["served"] / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match="SHA-256 does not match"):
        load_mnist()
    assert not (fake_mirror["cache"] / "train-labels-idx1-ubyte.gz").exists()


def test_offline_the_error_says_what_is_missing_and_where_to_put_it(fake_mirror, monkeypatch):
    def offline(url, dest):
        raise OSError("Name or service not known")

    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.raises(DatasetError) as info:
        load_mnist()
    message = str(info.value)
    assert "missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert f"Put the files by hand in {fake_mirror['cache']}" in message
    assert "https://mirror.invalid/mnist/" in message


# --- the MNIST test split and the embedded digits ----------------------------------------------


@needs_shared_mnist
def test_load_mnist_test_split_from_a_folder():
    (x, t), (xt, tt) = load_mnist_test_split(SHARED_MNIST, flatten=False)
    assert x.shape == (8000, 1, 28, 28) and xt.shape == (2000, 1, 28, 28)
    assert list(t[:3]) == [7, 2, 1]


def test_load_mnist_test_split_without_the_files(tmp_path):
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is missing"):
        load_mnist_test_split(tmp_path)


def test_the_embedded_digits():
    (x, t), (xt, tt) = load_digits()
    assert x.shape == (1438, 64) and xt.shape == (359, 64)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert set(np.unique(t)) == set(range(10)) and tt.dtype == np.uint8
    (x4, _), _ = load_digits(normalize=False, flatten=False, one_hot_label=False)
    assert x4.shape == (1438, 1, 8, 8) and x4.dtype == np.uint8 and x4.max() == 16
    _, (_, one_hot) = load_digits(one_hot_label=True)
    assert one_hot.shape == (359, 10)


def test_the_digits_split_is_fixed():
    (_, first), _ = load_digits()
    (_, again), _ = load_digits()
    np.testing.assert_array_equal(first, again)
