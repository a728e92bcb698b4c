"""Image datasets from files on disk: MNIST, Fashion-MNIST, SVHN, CIFAR-10/100 and ImageFolder trees.

Files are read in their official formats by small readers here (so a truncated or corrupt file gets an
error naming it); torchvision is used to download them when ``--download`` is given. The folder layout
is torchvision's, so an existing torchvision data root works as it is:

- mnist:          <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
- fashion_mnist:  <root>/FashionMNIST/raw/ (same four files)
- cifar10:        <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}
- cifar100:       <root>/cifar-100-python/{train,test}
- svhn:           <root>/{train,test}_32x32.mat
- imagefolder:    <root>/train/<class>/<image> and <root>/val/<class>/<image> (ImageNet style)
"""
from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from . import files
from ..errors import DataError
from .base import DataInfo, RawData

IDX_MAX_BYTES = 2 ** 32
"""Largest IDX payload read (4 GiB): above it a header is taken as damaged rather than read."""
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def _missing(name: str, root: Path, expected: list[Path]) -> DataError:
    lines = "\n  ".join(str(p) for p in expected)
    return DataError(f"dataset {name!r} not found under {root}. Expected:\n  {lines}\n"
                     f"Pass --download to fetch it, or --data-root DIR (or $SSL_RAY_DATA) where it already is.")


def _find(base: Path, stem: str) -> Path | None:
    for cand in (base / stem, base / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not. The header's shape bounds what is read (a file that
    decompresses to more is refused, not read to its end)."""
    files.regular_file(path, "dataset file", DataError)  # a FIFO would block the reader forever
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0:2] != b"\x00\x00" or head[2] != 0x08:
                raise ValueError(f"bad magic number {int.from_bytes(head, 'big'):#x}")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) != 4 * ndim:
                raise ValueError("the header is cut short")
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            n = math.prod(shape)
            if n > IDX_MAX_BYTES:
                raise ValueError(f"shape {shape} declares {n:,} bytes (MNIST's largest file holds 47 million)")
            data = f.read(n + 1)
        if len(data) != n:
            raise ValueError(f"expected {n} bytes of data for shape {shape}, found {len(data)}"
                             + (" or more" if len(data) > n else ""))
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)
    except (OSError, ValueError, EOFError, IndexError, zlib.error) as e:  # zlib.error: a bad deflate body
        raise DataError(f"corrupt dataset file {path}: {e}") from None


def load_mnist(root: Path, download: bool = False, *, fashion: bool = False) -> RawData:
    name = "fashion_mnist" if fashion else "mnist"
    folder = "FashionMNIST" if fashion else "MNIST"
    raw = Path(root) / folder / "raw"
    paths = [_find(raw, f) for f in MNIST_FILES]
    if any(p is None for p in paths) and download:
        import torchvision

        cls = torchvision.datasets.FashionMNIST if fashion else torchvision.datasets.MNIST
        _download(name, lambda: (cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)),
                  root)
        paths = [_find(raw, f) for f in MNIST_FILES]
    if any(p is None for p in paths):
        raise _missing(name, Path(root), [raw / f for f in MNIST_FILES])
    xtr, ytr, xte, yte = (read_idx(p) for p in paths if p is not None)
    for x, y, p in ((xtr, ytr, paths[0]), (xte, yte, paths[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"corrupt dataset file {p}: {len(x)} images but {len(y)} labels")
    for y, p in ((ytr, paths[1]), (yte, paths[3])):
        if len(y) and int(y.max()) > 9:  # uint8: never below 0
            raise DataError(f"corrupt dataset file {p}: labels outside 0..9 (found {int(y.max())})")
    classes = (("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot") if fashion else tuple(str(i) for i in range(10)))
    info = DataInfo(name, (1, 28, 28), 10, "image", classes)
    return RawData(info, xtr[:, None].copy(), ytr.astype(np.int64), xte[:, None].copy(), yte.astype(np.int64))


def _unpickle(path: Path) -> dict:
    files.regular_file(path, "dataset file", DataError)
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")  # noqa: S301 - official CIFAR format, local file
    except Exception as e:  # pickle raises many types on corrupt input
        raise DataError(f"corrupt dataset file {path}: {e}") from None


def _cifar_arrays(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    try:
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[label_key], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"corrupt dataset file {path}: {e}") from None
    if len(x) != len(y):
        raise DataError(f"corrupt dataset file {path}: {len(x)} images but {len(y)} labels")
    return x, y


def load_cifar(root: Path, download: bool = False, *, num_classes: int = 10) -> RawData:
    name = f"cifar{num_classes}"
    if num_classes == 10:
        base = Path(root) / "cifar-10-batches-py"
        train_files = [base / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [base / "test_batch"]
        key = b"labels"
    else:
        base = Path(root) / "cifar-100-python"
        train_files, test_files, key = [base / "train"], [base / "test"], b"fine_labels"
    expected = train_files + test_files
    if not all(p.exists() for p in expected) and download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
        _download(name, lambda: cls(str(root), train=True, download=True), root)
    if not all(p.exists() for p in expected):
        raise _missing(name, Path(root), expected)
    tr = [_cifar_arrays(p, key) for p in train_files]
    te = [_cifar_arrays(p, key) for p in test_files]
    xtr, ytr = np.concatenate([a for a, _ in tr]), np.concatenate([b for _, b in tr])
    xte, yte = np.concatenate([a for a, _ in te]), np.concatenate([b for _, b in te])
    for y in (ytr, yte):  # the test labels too: a bad test batch would silently corrupt test_error
        if y.min(initial=0) < 0 or y.max(initial=0) >= num_classes:
            raise DataError(f"corrupt dataset files in {base}: labels outside 0..{num_classes - 1}")
    info = DataInfo(name, (3, 32, 32), num_classes, "image")
    return RawData(info, xtr, ytr, xte, yte)


def load_svhn(root: Path, download: bool = False) -> RawData:
    mats = [Path(root) / "train_32x32.mat", Path(root) / "test_32x32.mat"]
    if not all(p.exists() for p in mats) and download:
        import torchvision

        _download("svhn", lambda: (torchvision.datasets.SVHN(str(root), split="train", download=True),
                                   torchvision.datasets.SVHN(str(root), split="test", download=True)), root)
    if not all(p.exists() for p in mats):
        raise _missing("svhn", Path(root), mats)
    import scipy.io

    out = []
    for p in mats:
        files.regular_file(p, "dataset file", DataError)
        try:
            m = scipy.io.loadmat(p)
            x = np.transpose(np.asarray(m["X"], dtype=np.uint8), (3, 2, 0, 1))  # H,W,C,N -> N,C,H,W
            y = np.asarray(m["y"], dtype=np.int64).reshape(-1) % 10  # SVHN stores digit 0 as label 10
        except Exception as e:  # scipy raises several types on corrupt .mat files
            raise DataError(f"corrupt dataset file {p}: {e}") from None
        if len(x) != len(y):
            raise DataError(f"corrupt dataset file {p}: {len(x)} images but {len(y)} labels")
        out.append((np.ascontiguousarray(x), y))
    info = DataInfo("svhn", (3, 32, 32), 10, "image", tuple(str(i) for i in range(10)))
    return RawData(info, out[0][0], out[0][1], out[1][0], out[1][1])


def load_imagefolder(root: Path, download: bool = False, *, size: int = 32, train_dir: str = "train",
                     test_dir: str = "val", grayscale: bool = False) -> RawData:
    """An ImageNet-style tree: <root>/<train_dir>/<class>/*.jpg and <root>/<test_dir>/<class>/*.jpg,
    resized to size x size (kept in memory as uint8: meant for subsets, not the whole ImageNet)."""
    tr, te = Path(root) / train_dir, Path(root) / test_dir
    if not tr.is_dir() or not te.is_dir():
        raise _missing("imagefolder", Path(root), [tr / "<class>/<image>", te / "<class>/<image>"])
    classes = sorted(d.name for d in tr.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DataError(f"imagefolder: {tr} must hold one folder per class (found {len(classes)})")
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp"}

    def read(split: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for ci, c in enumerate(classes):
            for p in sorted((split / c).glob("*")) if (split / c).is_dir() else []:
                if p.suffix.lower() not in exts:
                    continue
                a = files.read_image(p, "L" if grayscale else "RGB", (size, size), "image file", DataError)
                xs.append(a[None] if grayscale else a.transpose(2, 0, 1))
                ys.append(ci)
        if not xs:
            raise DataError(f"imagefolder: no images found under {split}")
        return np.stack(xs), np.asarray(ys, dtype=np.int64)

    xtr, ytr = read(tr)
    xte, yte = read(te)
    info = DataInfo("imagefolder", (1 if grayscale else 3, size, size), len(classes), "image", tuple(classes))
    return RawData(info, xtr, ytr, xte, yte)


LOCK_FILE = ".ssl_ray_download.lock"


def _download(name: str, fetch: Callable[[], object], root: Path) -> None:
    """Run `fetch` holding an exclusive lock on <root>/.ssl_ray_download.lock: several trials starting on a
    fresh node with --download take turns, and the later ones find the files there (torchvision checks
    before it downloads) instead of writing the same archive at once."""
    import fcntl

    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, also if this process dies
        _fetch(name, fetch)


def _fetch(name: str, fetch: Callable[[], object]) -> None:
    try:
        fetch()
    except Exception as e:  # network errors come in many types
        raise DataError(f"could not download {name!r}: {e}") from None


def register_all(register: Callable[..., None]) -> None:
    register("mnist", lambda root, download: load_mnist(root, download),
             "MNIST 28x28 digits (torchvision layout under --data-root)", val_size=5000, needs_files=True)
    register("fashion_mnist", lambda root, download: load_mnist(root, download, fashion=True),
             "Fashion-MNIST 28x28 (torchvision layout)", val_size=5000, needs_files=True)
    register("cifar10", lambda root, download: load_cifar(root, download, num_classes=10),
             "CIFAR-10 32x32 colour (python pickle batches)", val_size=5000, needs_files=True)
    register("cifar100", lambda root, download: load_cifar(root, download, num_classes=100),
             "CIFAR-100 32x32 colour, fine labels", val_size=5000, needs_files=True)
    register("svhn", load_svhn, "SVHN 32x32 house numbers (train/test .mat files)", val_size=5000,
             needs_files=True)
    register("imagefolder", load_imagefolder,
             "ImageNet-style folder tree <root>/train/<class>/*, <root>/val/<class>/*, resized",
             val_size=1000, options={"size": 32, "train_dir": "train", "test_dir": "val", "grayscale": False},
             needs_files=True)
