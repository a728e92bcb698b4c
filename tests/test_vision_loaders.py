"""Tests of the file-based image loaders on small files written here in the datasets' real formats:
MNIST/Fashion-MNIST IDX files (torchvision layout), CIFAR-10/100 python pickles, SVHN .mat files and
ImageFolder trees of PNGs. Pixels and labels must round-trip exactly through
``load_dataset(DataSpec(name, root=...))`` and the memory-mapped cache. No network: download is never
requested.
"""
from __future__ import annotations

import gzip
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_ray.data import BatchStream, DataSpec, eval_tensors, load_dataset, load_splits
from ssl_ray.errors import DataError

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty array cache, and no data root from the environment."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SSL_RAY_CACHE", str(d))
    monkeypatch.delenv("SSL_RAY_DATA", raising=False)
    return d


@pytest.fixture
def root(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def is_cached(a: np.ndarray) -> bool:
    """Served from the memory-mapped .npy cache: a read-only np.memmap."""
    return isinstance(a, np.memmap) and not a.flags.writeable


# --------------------------------------------------------------------------------------------- writers

def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX format by hand: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian int32 dims, then data."""
    assert a.dtype == np.uint8
    return bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">i", d) for d in a.shape) + a.tobytes()


def write_mnist(root: Path, n_train: int = 30, n_test: int = 10, *, folder: str = "MNIST", gz: bool = False,
                seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    rng.shuffle(ytr)
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yte = (np.arange(n_test) % 10).astype(np.uint8)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, a in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                    ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        if gz:
            with gzip.open(raw / f"{stem}.gz", "wb") as f:
                f.write(idx_bytes(a))
        else:
            (raw / stem).write_bytes(idx_bytes(a))
    return xtr, ytr, xte, yte


def cifar_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rows, labels = [], []
    for i in range(1, 6):
        x, y = cifar_rows(per_batch, rng), rng.integers(0, 10, per_batch).tolist()
        d = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": y, b"data": x,
             b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)]}
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(d, protocol=2))
        rows.append(x)
        labels += y
    xte, yte = cifar_rows(n_test, rng), rng.integers(0, 10, n_test).tolist()
    d = {b"batch_label": b"testing batch 1 of 1", b"labels": yte, b"data": xte,
         b"filenames": [f"t_{j}.png".encode() for j in range(n_test)]}
    (base / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
    return np.concatenate(rows), np.asarray(labels), xte, np.asarray(yte)


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x, fine = cifar_rows(n, rng), rng.integers(0, 100, n).tolist()
        fine[0] = 99  # the largest fine label is valid
        d = {b"filenames": [b"f.png"] * n, b"batch_label": split.encode(), b"fine_labels": fine,
             b"coarse_labels": [f // 5 for f in fine], b"data": x}
        (base / split).write_bytes(pickle.dumps(d, protocol=2))
        out += [x, np.asarray(fine)]
    return tuple(out)


def write_svhn(root: Path, n_train: int = 7, n_test: int = 4, seed: int = 0):
    import scipy.io

    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H, W, C, N as in the real files
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # labels 1..10, 10 meaning digit 0
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out += [x, y]
    return tuple(out)


def write_imagefolder(root: Path, size: int = 8, mode: str = "RGB", seed: int = 0) -> dict:
    """root/train/<class>/*.png and root/val/<class>/*.png; returns {split: [(array, class_index), ...]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = ["ant", "bee", "cat"]  # sorted
    counts = {"train": (3, 2, 4), "val": (1, 2, 1)}
    written = {}
    for split, per_class in counts.items():
        written[split] = []
        for ci, (c, n) in enumerate(zip(classes, per_class)):
            d = root / split / c
            d.mkdir(parents=True)
            for j in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                a = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(a, mode=mode).save(d / f"{j:03d}.png")
                written[split].append((a, ci))
        (root / split / "ant" / "notes.txt").write_text("not an image")  # skipped
    return written


# ------------------------------------------------------------------------------------------------ MNIST

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_round_trip_and_cache(root, cache, name, folder, gz):
    xtr, ytr, xte, yte = write_mnist(root, folder=folder, gz=gz)
    raw = load_dataset(DataSpec(name, root=str(root)))
    assert raw.info.name == name and raw.info.input_shape == (1, 28, 28) and raw.info.num_classes == 10
    assert raw.x_train.shape == (30, 1, 28, 28) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train[:, 0], xtr)
    np.testing.assert_array_equal(raw.y_train, ytr.astype(np.int64))
    np.testing.assert_array_equal(raw.x_test[:, 0], xte)
    np.testing.assert_array_equal(raw.y_test, yte)
    assert raw.y_train.dtype == np.int64
    assert any(cache.glob(f"{name}-*/done.json"))

    # The second load is served from the memory-mapped cache: it works with the source files gone.
    shutil.rmtree(root / folder)
    again = load_dataset(DataSpec(name, root=str(root)))
    for a in ("x_train", "y_train", "x_test", "y_test"):
        assert is_cached(getattr(again, a)), a
        np.testing.assert_array_equal(getattr(again, a), getattr(raw, a))
    assert again.info == raw.info
    # ... while bypassing the cache reads the (now missing) files
    with pytest.raises(DataError):
        load_dataset(DataSpec(name, root=str(root)), use_cache=False)


def test_mnist_without_cache_returns_plain_arrays(root):
    xtr, *_ = write_mnist(root)
    raw = load_dataset(DataSpec("mnist", root=str(root)), use_cache=False)
    assert not isinstance(raw.x_train, np.memmap)
    np.testing.assert_array_equal(raw.x_train[:, 0], xtr)


def test_cache_is_keyed_by_root(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    xa, *_ = write_mnist(a, seed=1)
    xb, *_ = write_mnist(b, seed=2)
    np.testing.assert_array_equal(load_dataset(DataSpec("mnist", root=str(a))).x_train[:, 0], xa)
    np.testing.assert_array_equal(load_dataset(DataSpec("mnist", root=str(b))).x_train[:, 0], xb)


@pytest.mark.parametrize("name,files", [
    ("mnist", ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"]),
    ("fashion_mnist", ["FashionMNIST/raw/train-images-idx3-ubyte"]),
    ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_5",
                 "cifar-10-batches-py/test_batch"]),
    ("cifar100", ["cifar-100-python/train", "cifar-100-python/test"]),
    ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
    ("imagefolder", ["train", "val"]),
])
def test_absent_dataset_names_expected_files_and_download(root, cache, name, files):
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec(name, root=str(root)))
    msg = str(e.value)
    assert "--download" in msg and str(root) in msg
    for f in files:
        assert str(root / f) in msg, (f, msg)
    assert not any(cache.glob("*/done.json"))  # nothing cached for a failed load


def test_partially_present_mnist_names_the_missing_layout(root):
    write_mnist(root)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset(DataSpec("mnist", root=str(root)))


def _corrupt_truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-100])


def _corrupt_magic(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[2] = 0x0D  # float type instead of ubyte
    p.write_bytes(bytes(b))


def _corrupt_header(p: Path) -> None:
    p.write_bytes(b"\x12\x34\x56\x78" + p.read_bytes()[4:])


def _corrupt_empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_magic, _corrupt_header, _corrupt_empty])
@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_corrupt_idx_file_is_a_data_error_naming_it(root, corrupt, stem):
    write_mnist(root)
    path = root / "MNIST" / "raw" / stem
    corrupt(path)
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(DataSpec("mnist", root=str(root)))
    assert str(path) in str(e.value)


def test_wrong_magic_message_mentions_magic(root):
    write_mnist(root)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    _corrupt_header(path)
    with pytest.raises(DataError, match="magic"):
        load_dataset(DataSpec("mnist", root=str(root)))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_gzipped_idx_is_a_data_error_naming_it(root, how):
    write_mnist(root, gz=True)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50] if how == "truncated" else b"this is not gzip data at all")
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec("mnist", root=str(root)))
    assert str(path) in str(e.value)


def test_idx_file_with_trailing_bytes_is_a_data_error(root):
    write_mnist(root)
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00" * 28)
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(DataSpec("mnist", root=str(root)))
    assert str(path) in str(e.value)


def test_mnist_image_label_count_mismatch(root):
    write_mnist(root)
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(29, dtype=np.uint8)))
    with pytest.raises(DataError, match="30 images but 29 labels"):
        load_dataset(DataSpec("mnist", root=str(root)))


# ------------------------------------------------------------------------------------------------ CIFAR

def test_cifar10_round_trip(root):
    xtr, ytr, xte, yte = write_cifar10(root)
    raw = load_dataset(DataSpec("cifar10", root=str(root)))
    assert raw.info.input_shape == (3, 32, 32) and raw.info.num_classes == 10
    assert raw.x_train.shape == (20, 3, 32, 32) and raw.x_test.shape == (6, 3, 32, 32)
    assert is_cached(raw.x_train)
    # batches concatenated in order 1..5; each row is R (1024), G, B planes, each row-major 32x32
    for n, c, h, w in ((0, 0, 0, 0), (5, 1, 2, 3), (19, 2, 31, 30), (7, 2, 0, 31)):
        assert raw.x_train[n, c, h, w] == xtr[n, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(np.asarray(raw.x_train).reshape(20, 3072), xtr)
    np.testing.assert_array_equal(raw.y_train, ytr)
    np.testing.assert_array_equal(np.asarray(raw.x_test).reshape(6, 3072), xte)
    np.testing.assert_array_equal(raw.y_test, yte)
    assert raw.y_train.dtype == np.int64


def test_cifar100_round_trip_uses_fine_labels(root):
    xtr, ytr, xte, yte = write_cifar100(root)
    raw = load_dataset(DataSpec("cifar100", root=str(root)))
    assert raw.info.num_classes == 100
    np.testing.assert_array_equal(np.asarray(raw.x_train).reshape(12, 3072), xtr)
    np.testing.assert_array_equal(raw.y_train, ytr)
    np.testing.assert_array_equal(np.asarray(raw.x_test).reshape(5, 3072), xte)
    np.testing.assert_array_equal(raw.y_test, yte)
    assert raw.y_train.max() == 99


def test_cifar_garbage_pickle_names_the_file(root):
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(b"\x80\x02garbage, not a pickle")
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(DataSpec("cifar10", root=str(root)))
    assert str(path) in str(e.value)


def test_cifar_truncated_pickle_names_the_file(root):
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec("cifar10", root=str(root)))
    assert str(path) in str(e.value)


def test_cifar_pickle_without_expected_keys_names_the_file(root):
    write_cifar100(root)
    path = root / "cifar-100-python" / "train"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=2))
    with pytest.raises(DataError, match="fine_labels") as e:
        load_dataset(DataSpec("cifar100", root=str(root)))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("batch", ["data_batch_2", "test_batch"])
def test_cifar_labels_out_of_range(root, batch):
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / batch
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}, protocol=2))
    with pytest.raises(DataError, match="labels outside"):
        load_dataset(DataSpec("cifar10", root=str(root)))


# ------------------------------------------------------------------------------------------------- SVHN

def test_svhn_round_trip_transpose_and_label_10_is_zero(root):
    xtr, ytr, xte, yte = write_svhn(root)
    raw = load_dataset(DataSpec("svhn", root=str(root)))
    assert raw.x_train.shape == (7, 3, 32, 32) and raw.x_test.shape == (4, 3, 32, 32)
    assert is_cached(raw.x_train)
    for n, c, h, w in ((0, 0, 0, 0), (3, 1, 5, 17), (6, 2, 31, 0), (2, 0, 0, 31)):
        assert raw.x_train[n, c, h, w] == xtr[h, w, c, n]
    np.testing.assert_array_equal(raw.x_train, xtr.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(raw.x_test, xte.transpose(3, 2, 0, 1))
    # written labels 1..10 with 10 for digit 0
    np.testing.assert_array_equal(raw.y_train, [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(raw.y_test, [1, 2, 3, 4])
    assert ytr.max() == 7 and raw.y_train.dtype == np.int64


def test_svhn_label_10_becomes_0(root):
    write_svhn(root, n_train=12)  # labels 1..10, 1, 2
    raw = load_dataset(DataSpec("svhn", root=str(root)))
    np.testing.assert_array_equal(raw.y_train, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])


@pytest.mark.parametrize("split", ["train", "test"])
def test_svhn_garbage_mat_names_the_file(root, split):
    write_svhn(root)
    path = root / f"{split}_32x32.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file? no: garbage " * 10)
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(DataSpec("svhn", root=str(root)))
    assert str(path) in str(e.value)


def test_svhn_mat_without_x_names_the_file(root):
    import scipy.io

    write_svhn(root)
    path = root / "test_32x32.mat"
    scipy.io.savemat(path, {"y": np.ones((3, 1), np.uint8)})
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec("svhn", root=str(root)))
    assert str(path) in str(e.value)


# ------------------------------------------------------------------------------------------ imagefolder

def test_imagefolder_round_trip(root):
    written = write_imagefolder(root, size=8)
    raw = load_dataset(DataSpec("imagefolder", root=str(root), options={"size": 8}))
    assert raw.info.class_names == ("ant", "bee", "cat") and raw.info.num_classes == 3
    assert raw.info.input_shape == (3, 8, 8)
    assert raw.x_train.shape == (9, 3, 8, 8) and raw.x_test.shape == (4, 3, 8, 8)
    assert is_cached(raw.x_train)
    # files are read class by class, sorted by name: the order they were written in
    for split, x, y in (("train", raw.x_train, raw.y_train), ("val", raw.x_test, raw.y_test)):
        np.testing.assert_array_equal(y, [ci for _, ci in written[split]])
        np.testing.assert_array_equal(x, np.stack([a.transpose(2, 0, 1) for a, _ in written[split]]))


def test_imagefolder_grayscale_and_options_key_the_cache(root):
    write_imagefolder(root, size=8, mode="L", seed=3)
    rgb = load_dataset(DataSpec("imagefolder", root=str(root), options={"size": 8}))
    gray = load_dataset(DataSpec("imagefolder", root=str(root), options={"size": 8, "grayscale": True}))
    assert rgb.x_train.shape == (9, 3, 8, 8) and gray.x_train.shape == (9, 1, 8, 8)
    assert gray.info.input_shape == (1, 8, 8)
    # an L image converted to RGB repeats its one channel
    np.testing.assert_array_equal(rgb.x_train[:, 0], gray.x_train[:, 0])
    np.testing.assert_array_equal(rgb.x_train[:, 2], gray.x_train[:, 0])
    small = load_dataset(DataSpec("imagefolder", root=str(root), options={"size": 4}))
    assert small.x_train.shape == (9, 3, 4, 4)


def test_imagefolder_corrupt_image_names_the_file(root):
    write_imagefolder(root, size=8)
    path = root / "val" / "bee" / "001.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec("imagefolder", root=str(root), options={"size": 8}))
    assert str(path) in str(e.value)


def test_imagefolder_needs_two_classes(root):
    from PIL import Image

    for split in ("train", "val"):
        (root / split / "only").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / split / "only" / "a.png")
    with pytest.raises(DataError, match="one folder per class"):
        load_dataset(DataSpec("imagefolder", root=str(root)))


# --------------------------------------------------------------------------------------- end to end

def test_load_splits_end_to_end_on_written_mnist(root):
    xtr, ytr, xte, yte = write_mnist(root, n_train=200, n_test=50, gz=True)
    spec = DataSpec("mnist", labels=20, root=str(root))
    s = load_splits(spec, seed=0)
    assert is_cached(s.raw.x_train)
    y = ytr.astype(np.int64)
    np.testing.assert_array_equal(np.bincount(y[s.lab_idx], minlength=10), np.full(10, 2))
    assert len(s.val_idx) == 40  # mnist's val_size of 5000 capped at a fifth of 200
    assert len(s.unl_idx) == 160
    assert not set(s.val_idx.tolist()) & set(s.unl_idx.tolist())
    assert set(s.lab_idx.tolist()) <= set(s.unl_idx.tolist())
    np.testing.assert_array_equal(load_splits(spec, seed=0).lab_idx, s.lab_idx)  # from the cache, same split
    assert not np.array_equal(load_splits(spec, seed=1).lab_idx, s.lab_idx)

    stream = BatchStream(s, 20, 0.5, seed=5)
    b = stream.next()
    assert b.x_l.shape == (10, 1, 28, 28) and b.x_u.shape == (10, 1, 28, 28)
    # every labelled input is one of the 20 labelled images / 255, with its label
    lab_x = xtr[s.lab_idx].reshape(20, -1).astype(np.float32) / 255.0
    for xi, yi in zip(b.x_l.reshape(10, -1).numpy(), b.y_l.numpy()):
        j = np.where(np.all(lab_x == xi, axis=1))[0]
        assert len(j) == 1 and y[s.lab_idx[j[0]]] == yi
    assert stream.epoch_steps() == 16

    x_val, y_val = eval_tensors(s, "val")
    np.testing.assert_array_equal(x_val.numpy()[:, 0], xtr[s.val_idx])
    np.testing.assert_array_equal(y_val.numpy(), y[s.val_idx])
    x_test, y_test = eval_tensors(s, "test")
    np.testing.assert_array_equal(x_test.numpy()[:, 0], xte)
    np.testing.assert_array_equal(y_test.numpy(), yte)
