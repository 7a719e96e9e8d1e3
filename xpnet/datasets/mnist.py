"""MNIST and Fashion-MNIST: downloaded once from working mirrors, checked, cached, loaded as the book does.

Files are cached under ``$XPNET_DATA`` or ``~/.cache/xpnet``, one folder per
data set, with atomic writes (a partial download never takes a file's
place). The parsed arrays are kept beside them as ``.npz`` (never pickle).

What is promised about the files:

* A file is accepted when its *content* is the published one: the SHA-256
  of the published ``.gz`` file, or else the SHA-256 of its decompressed
  IDX bytes (so a copy gzipped again, or not gzipped, is as good).
* A file that fails the check is never deleted: a verified copy is fetched
  beside it first, and only then is the old file moved aside, as
  ``<name>.rejected`` (``.rejected-2``, ... when that exists). Offline, it
  stays where it is.
* The ``.npz`` cache is used only when its arrays are exactly those of the
  verified IDX files (shapes, dtypes, label range and the checksum of
  their IDX encoding); otherwise it is rebuilt from the files, with a
  warning that says why. A folder where the cache cannot be written (read
  only, full) works without it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from urllib.request import urlopen

import numpy as np
from tqdm import tqdm

from ..fileio import atomic_write
from .errors import DatasetError
from .idx import content_sha256, idx_content, read_idx

__all__ = ["load_mnist", "load_fashion_mnist", "load_mnist_test_split", "data_home", "DATASETS"]

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# yann.lecun.com refuses downloads (HTTP 403); these mirrors serve the same bytes.
# SHA-256 of the published .gz files, from tensorflow/datasets (url_checksums/mnist.txt and
# url_checksums/fashion_mnist.txt), where they sit beside the files' sizes. The two MNIST t10k
# values agree with a copy of the files made apart from those mirrors; the Fashion-MNIST ones belong to the files whose
# MD5s the Fashion-MNIST README publishes (8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
# "idx_sha256": SHA-256 of the decompressed IDX files, as several independent projects list them
# (MNIST: 47,040,016, 60,008, 7,840,016 and 10,008 bytes; the two t10k values were computed from
# that copy; the Fashion-MNIST ones are those of the files with the README's MD5s).
DATASETS = {
    "mnist": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "idx_sha256": {
            "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
    "fashion-mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        "idx_sha256": {
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    },
}


def data_home() -> Path:
    """``$XPNET_DATA``, else ``~/.cache/xpnet``."""
    return Path(os.environ.get("XPNET_DATA") or Path.home() / ".cache" / "xpnet")


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url, dest):
    """Download ``url`` to ``dest`` atomically, with a progress bar. Tests replace this function or ``urlopen``."""
    dest = Path(dest)
    with urlopen(url, timeout=30) as response, atomic_write(dest) as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        # disable=None: a bar on a terminal only, never drawn into a log file
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False, disable=None) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                bar.update(len(block))


class _FetchError(DatasetError):
    """A file no mirror could deliver; ``causes`` are the distinct reasons, without the URLs."""

    def __init__(self, name, errors, causes):
        self.causes = tuple(dict.fromkeys(causes))
        super().__init__(f"could not fetch {name}: " + "; ".join(errors),
                         summary=f"could not fetch {name} ({'; '.join(self.causes)})")


def _problem(path, name, spec):
    """None when ``path`` holds the published content of ``name``, else what is wrong, in a few words."""
    if _sha256(path) == spec["sha256"][name]:
        return None  # the published .gz file itself
    try:
        _, content = idx_content(path)
    except DatasetError as exc:
        return str(exc).removeprefix(f"{path}: ")
    if hashlib.sha256(content).hexdigest() == spec["idx_sha256"][name]:
        return None  # the published content, gzipped again or not at all
    return f"SHA-256 of the file and of its {len(content):,} decompressed bytes match neither published value"


def _aside(path: Path) -> Path:
    """A free name beside ``path`` for a file that failed its check: ``.rejected``, then ``.rejected-2``, ..."""
    candidate, n = path.with_name(path.name + ".rejected"), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.rejected-{n}")
    return candidate


def _ensure_file(name, folder, spec):
    """The path of a verified copy of ``name``: the one in ``folder``, else one downloaded beside it.

    A file already there that fails the check is left untouched until a
    verified download exists; then it is renamed aside, never deleted.
    """
    path = folder / name
    problem = _problem(path, name, spec) if path.exists() else None
    if path.exists() and problem is None:
        return path
    if problem is not None:
        warnings.warn(f"{path} is corrupt or truncated, or not the published file ({problem}); kept as {_aside(path)} "
                      f"once a verified copy replaces it (left where it is otherwise)", stacklevel=5)
    download = folder / (name + ".download")
    errors, causes = [], []
    for mirror in spec["mirrors"]:
        try:
            _fetch(mirror + name, download)
        except Exception as exc:  # offline, HTTP error, ...
            errors.append(f"{mirror + name}: {exc}")
            causes.append(f"{type(exc).__name__}: {exc}")
            continue
        if _problem(download, name, spec) is None:
            if path.exists():
                os.replace(path, _aside(path))
            os.replace(download, path)
            return path
        download.unlink()  # our own download, not a file of the user's
        errors.append(f"{mirror + name}: the download's SHA-256 does not match {spec['sha256'][name]}")
        causes.append("the download's SHA-256 does not match")
        warnings.warn(errors[-1], stacklevel=5)
    raise _FetchError(name, errors, causes)


_KEYS = ("x_train", "t_train", "x_test", "t_test")
_CLASSES = 10


def _cache_problem(arrays, spec):
    """None when the cached arrays are exactly the verified IDX files' content, else what differs."""
    for key in _KEYS:
        if key not in arrays:
            return f"has no {key}"
        if arrays[key].dtype != np.uint8:
            return f"{key} is {arrays[key].dtype}, expected uint8"
    for x, t in (("x_train", "t_train"), ("x_test", "t_test")):
        if arrays[x].ndim != 3 or arrays[x].shape[1:] != (28, 28):
            return f"{x} has shape {arrays[x].shape}, expected (N, 28, 28)"
        if arrays[t].ndim != 1:
            return f"{t} has shape {arrays[t].shape}, expected (N,)"
        if len(arrays[t]) != len(arrays[x]):
            return f"{t} has {len(arrays[t])} labels for {len(arrays[x])} images in {x}"
        if len(arrays[t]) and arrays[t].max() >= _CLASSES:
            return f"{t}: labels run up to {arrays[t].max()}, expected 0..{_CLASSES - 1}"
    for key, name in zip(_KEYS, FILES):
        if content_sha256(arrays[key]) != spec["idx_sha256"][name]:
            return f"{key} differs from the verified {name}"
    return None


def _read_cache(cache, spec):
    """The cached arrays when they pass :func:`_cache_problem`, else None (with a warning that says why)."""
    try:
        with np.load(cache, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        warnings.warn(f"{cache} is unreadable ({exc}); parsing the IDX files again", stacklevel=5)
        return None
    problem = _cache_problem(arrays, spec)
    if problem is not None:
        warnings.warn(f"{cache}: {problem}; rebuilding it from the verified IDX files", stacklevel=5)
        return None
    return {k: arrays[k] for k in _KEYS}


def _write_cache(cache, arrays):
    """Write the cache if the folder takes it; a read-only or full folder works without one."""
    try:
        with atomic_write(cache) as f:
            np.savez(f, **arrays)
    except OSError as exc:
        warnings.warn(f"cannot write the cache {cache} ({type(exc).__name__}: {exc}); the IDX files will be read "
                      f"again next time", stacklevel=5)


def _load_arrays(dataset):
    """The four arrays of a data set (uint8), through the .npz cache."""
    spec = DATASETS[dataset]
    folder = data_home() / dataset
    if not folder.is_dir():
        folder.mkdir(parents=True)
    cache = folder / f"{dataset}.npz"
    if cache.exists():
        arrays = _read_cache(cache, spec)
        if arrays is not None:
            return arrays
    paths, missing = {}, []
    for name in FILES:
        try:
            paths[name] = _ensure_file(name, folder, spec)
        except DatasetError as exc:
            missing.append((name, exc))
    if missing:
        listed = ", ".join(n for n, _ in missing)
        urls = "\n".join(f"  {name}: " + " or ".join(m + name for m in spec["mirrors"]) for name, _ in missing)
        causes = dict.fromkeys(c for _, e in missing for c in getattr(e, "causes", (str(e),)))
        raise DatasetError(
            f"{dataset}: missing {listed}.\n"
            f"Put the files by hand in {folder}, downloaded from\n{urls}\n"
            f"or connect to the internet and call again. Details: " + "; ".join(str(e) for _, e in missing),
            summary=f"{dataset}: missing {listed} in {folder} (download failed: {'; '.join(causes)}); "
                    f"put the files there by hand (from {spec['mirrors'][0]}), "
                    f"set XPNET_DATA to a folder whose {dataset}/ holds them, or connect to the internet and run again",
        )
    arrays = dict(zip(_KEYS, (read_idx(paths[name]) for name in FILES)))
    _write_cache(cache, arrays)
    return arrays


def _prepare(x, t, normalize, flatten, one_hot_label):
    """The book's conversions: (N, 784) or (N, 1, 28, 28); float32 in [0, 1] or uint8; one-hot float32."""
    x = x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, *x.shape[1:])
    if normalize:
        x = x.astype(np.float32) / 255.0
    if one_hot_label:
        t = np.eye(10, dtype=np.float32)[t]
    return x, t


def _load(dataset, normalize, flatten, one_hot_label):
    a = _load_arrays(dataset)
    return (_prepare(a["x_train"], a["t_train"], normalize, flatten, one_hot_label),
            _prepare(a["x_test"], a["t_test"], normalize, flatten, one_hot_label))


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    """MNIST as ``(x_train, t_train), (x_test, t_test)``: 60,000 and 10,000 handwritten digits.

    The book's signature and shapes: images (N, 784) with ``flatten``, else
    (N, 1, 28, 28); float32 in [0, 1] with ``normalize``, else uint8;
    labels uint8 class indices (N,), or float32 one-hot rows (N, 10).

    Unlike the book: the files come from mirrors that work today (not
    yann.lecun.com, which answers 403), their content is checked against the
    published SHA-256 (a corrupt or truncated file is reported, a verified
    copy fetched, and the bad file kept beside it as ``.rejected``), every
    write is atomic (a temporary file, then a rename), and the parsed arrays
    are cached as ``.npz`` under ``$XPNET_DATA`` or ``~/.cache/xpnet``, never
    pickled, and used only while they match the verified files.
    Offline, :class:`DatasetError` says which files are missing, the folder
    to put them in and the URLs to get them from.
    """
    return _load("mnist", normalize, flatten, one_hot_label)


def load_fashion_mnist(normalize=True, flatten=True, one_hot_label=False):
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): the shapes, dtypes and options of :func:`load_mnist`."""
    return _load("fashion-mnist", normalize, flatten, one_hot_label)


def load_mnist_test_split(path=None, train_size=8000, normalize=True, flatten=True, one_hot_label=False):
    """The 10,000 real MNIST *test* images, split into the first ``train_size`` and the rest.

    A small real data set that needs no download when the two t10k files are
    at hand: ``path`` is a folder holding t10k-images-idx3-ubyte.gz and
    t10k-labels-idx1-ubyte.gz (default: the MNIST cache folder, where
    :func:`load_mnist` keeps them). Their content is checked (the
    published SHA-256, of the .gz file or of its decompressed bytes). Returns
    ``(x_train, t_train), (x_test, t_test)`` of ``train_size`` and
    ``10000 - train_size`` images, with the conversions of :func:`load_mnist`.
    """
    folder = Path(path) if path is not None else data_home() / "mnist"
    spec = DATASETS["mnist"]
    arrays = []
    for name in FILES[2:]:
        file = folder / name
        if not file.exists():
            urls = ", ".join(m + name for m in spec["mirrors"])
            raise DatasetError(f"{file} is missing: put the MNIST test files (t10k-images-idx3-ubyte.gz, "
                               f"t10k-labels-idx1-ubyte.gz) in {folder}, or pass their folder; "
                               f"{name} can be downloaded from {urls}")
        problem = _problem(file, name, spec)
        if problem is not None:
            raise DatasetError(f"{file}: SHA-256 mismatch, the file is corrupt or not the published one ({problem}; "
                               f"expected {spec['sha256'][name]}, or {spec['idx_sha256'][name]} decompressed)")
        arrays.append(read_idx(file))
    x, t = arrays
    if not 0 < train_size < len(x):
        raise ValueError(f"train_size must be between 1 and {len(x) - 1}, got {train_size}")
    return (_prepare(x[:train_size], t[:train_size], normalize, flatten, one_hot_label),
            _prepare(x[train_size:], t[train_size:], normalize, flatten, one_hot_label))
