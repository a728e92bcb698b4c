"""Tests of the data layer: seeded class-balanced splits, the R/T batch stream, the synthetic datasets
and the dataset registry. Expected values are computed by hand (np.bincount, math.ceil, geometry)
rather than with the code under test.

File-based loaders (MNIST, CIFAR, SVHN, ImageFolder) are tested in test_vision_loaders.py.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from ssl_ray.data import (BatchStream, DataInfo, DataSpec, RawData, batch_composition, eval_tensors,
                          list_datasets, load_dataset, load_splits, make_splits, to_float)
from ssl_ray.data.synthetic import GAUSSIAN_CENTRES, GAUSSIAN_PROBS
from ssl_ray.errors import ConfigError, DataError, SSLRayError

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def digits() -> RawData:
    return load_dataset(DataSpec("digits"))


def index_data(n: int = 300, k: int = 3) -> RawData:
    """Points whose single feature is their own index (so a batch tells exactly which examples it holds)
    and whose label is index % k."""
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y = (np.arange(n) % k).astype(np.int64)
    info = DataInfo("index", (1,), k, "points")
    return RawData(info, x, y, x[:10].copy(), y[:10].copy())


def ids(t: torch.Tensor) -> np.ndarray:
    """Example indices held by a batch tensor of `index_data` points."""
    return t.reshape(-1).numpy().astype(np.int64)


def draw(stream: BatchStream, steps: int) -> list:
    out = []
    for _ in range(steps):
        b = stream.next()
        out.append((b.x_l.clone(), b.y_l.clone(), b.x_u.clone(), None if b.x_u2 is None else b.x_u2.clone()))
    return out


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for ba, bb in zip(a, b):
        for ta, tb in zip(ba, bb):
            if ta is None or tb is None:
                assert ta is None and tb is None
            else:
                torch.testing.assert_close(ta, tb, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- splits

@pytest.mark.parametrize("labels", [10, 50, 100])
def test_labelled_subset_is_exactly_balanced_when_divisible(digits, labels):
    s = make_splits(digits, labels=labels, seed=3, val_size=200)
    counts = np.bincount(np.asarray(digits.y_train)[s.lab_idx], minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, labels // 10))
    assert s.num_labels == labels


@pytest.mark.parametrize("labels,seed", [(53, 0), (53, 1), (19, 2), (127, 5)])
def test_labelled_subset_counts_differ_by_at_most_one(digits, labels, seed):
    s = make_splits(digits, labels=labels, seed=seed, val_size=200)
    counts = np.bincount(np.asarray(digits.y_train)[s.lab_idx], minlength=10)
    assert counts.sum() == labels
    assert counts.max() - counts.min() <= 1
    assert counts.min() == labels // 10
    assert len(np.unique(s.lab_idx)) == labels  # no example picked twice


def test_splits_deterministic_for_a_seed(digits):
    a = make_splits(digits, labels=50, seed=11, val_size=200)
    b = make_splits(digits, labels=50, seed=11, val_size=200)
    np.testing.assert_array_equal(a.lab_idx, b.lab_idx)
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    np.testing.assert_array_equal(a.unl_idx, b.unl_idx)


def test_different_seed_gives_different_labelled_subset(digits):
    subsets = {tuple(make_splits(digits, labels=50, seed=s, val_size=200).lab_idx) for s in range(4)}
    assert len(subsets) == 4
    a = make_splits(digits, labels=50, seed=0, val_size=200)
    b = make_splits(digits, labels=50, seed=1, val_size=200)
    assert not np.array_equal(a.val_idx, b.val_idx)


def test_splits_are_disjoint_and_cover_the_training_set(digits):
    n = len(digits.y_train)
    s = make_splits(digits, labels=50, seed=4, val_size=200)
    lab, unl, val = set(s.lab_idx.tolist()), set(s.unl_idx.tolist()), set(s.val_idx.tolist())
    assert len(val) == len(s.val_idx) == 200
    assert len(unl) == len(s.unl_idx) == n - 200
    assert not lab & val
    assert not unl & val
    assert lab <= unl  # labelled examples are also used as unlabelled (ImprovedGAN reference code)
    assert unl | val == set(range(n))
    for idx in (s.lab_idx, s.unl_idx, s.val_idx):
        assert idx.min() >= 0 and idx.max() < n


def test_test_split_is_separate_from_training_arrays(digits):
    # Train and test together are exactly scikit-learn's 1797 images (each used once), 497 of them test.
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    expect = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8).reshape(len(d.images), -1)
    got = np.concatenate([np.asarray(digits.x_train), np.asarray(digits.x_test)]).reshape(len(expect), -1)
    key = lambda a: np.lexsort(a.T[::-1])  # noqa: E731 - sort rows lexicographically
    np.testing.assert_array_equal(got[key(got)], expect[key(expect)])
    assert len(digits.y_test) == 497 and len(digits.y_train) == 1797 - 497
    s = make_splits(digits, labels=50, seed=0, val_size=200)
    x_test, y_test = eval_tensors(s, "test")
    np.testing.assert_array_equal(x_test.numpy(), np.asarray(digits.x_test))
    np.testing.assert_array_equal(y_test.numpy(), np.asarray(digits.y_test))


def test_validation_split_is_stratified(digits):
    y = np.asarray(digits.y_train)
    share = np.bincount(y, minlength=10) / len(y)
    for val_size in (200, 333):
        s = make_splits(digits, labels=50, seed=7, val_size=val_size)
        counts = np.bincount(y[s.val_idx], minlength=10)
        assert counts.sum() == val_size
        assert np.all(np.abs(counts - share * val_size) < 1.0), (counts, share * val_size)


def test_validation_split_is_stratified_for_unbalanced_classes():
    # Gaussians: class shares 0.1/0.4/0.2/0.3.
    raw = load_dataset(DataSpec("gaussians", options={"n_train": 2000, "n_test": 10}))
    y = np.asarray(raw.y_train)
    s = make_splits(raw, labels=8, seed=0, val_size=500)
    expect = np.bincount(y, minlength=4) / len(y) * 500
    counts = np.bincount(y[s.val_idx], minlength=4)
    assert np.all(np.abs(counts - expect) < 1.0), (counts, expect)


def test_eval_tensors_val_returns_the_validation_examples(digits):
    s = make_splits(digits, labels=50, seed=2, val_size=200)
    x, y = eval_tensors(s, "val")
    np.testing.assert_array_equal(x.numpy(), np.asarray(digits.x_train)[s.val_idx])
    np.testing.assert_array_equal(y.numpy(), np.asarray(digits.y_train)[s.val_idx])
    assert x.dtype == torch.uint8
    with pytest.raises(ValueError):
        eval_tensors(s, "train")


@pytest.mark.parametrize("labels", [0, 1, 9])
def test_fewer_labels_than_classes_is_a_config_error(digits, labels):
    with pytest.raises(ConfigError, match=r"\blabels\b"):
        make_splits(digits, labels=labels, seed=0, val_size=200)


def test_more_labels_than_training_examples_is_a_config_error(digits):
    n_left = len(digits.y_train) - 200
    with pytest.raises(ConfigError, match=r"\blabels\b"):
        make_splits(digits, labels=n_left + 1, seed=0, val_size=200)
    with pytest.raises(ConfigError, match=r"\blabels\b"):
        load_splits(DataSpec("digits", labels=100000), seed=0)
    with pytest.raises(ConfigError, match=r"\blabels\b"):
        load_splits(DataSpec("circles", labels=1), seed=0)


def test_labels_a_class_cannot_supply_is_an_error_naming_labels():
    # 900 balanced labels over 4 classes need 225 of class 0, which only has ~10% of 1000 examples.
    raw = load_dataset(DataSpec("gaussians", options={"n_train": 1000, "n_test": 10}))
    with pytest.raises(SSLRayError, match=r"labels.*class 0"):
        make_splits(raw, labels=900, seed=0, val_size=50)


def test_bad_val_size_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="val_size"):
        make_splits(digits, labels=50, seed=0, val_size=len(digits.y_train))
    with pytest.raises(ConfigError, match="val_size"):
        make_splits(digits, labels=50, seed=0, val_size=-1)


def test_zero_val_size_uses_the_whole_training_set_as_unlabelled(digits):
    s = make_splits(digits, labels=20, seed=0, val_size=0)
    assert len(s.val_idx) == 0
    np.testing.assert_array_equal(s.unl_idx, np.arange(len(digits.y_train)))


def test_load_splits_uses_the_dataset_default_val_size():
    s = load_splits(DataSpec("circles", labels=8), seed=0)
    assert len(s.val_idx) == 200  # circles' registered val_size
    assert len(s.unl_idx) == 1500  # the advgen paper's unlabelled pool
    s = load_splits(DataSpec("circles", labels=8, val_size=100), seed=0)
    assert len(s.val_idx) == 100 and len(s.unl_idx) == 1600


# ------------------------------------------------------------------------------------ batch composition

@pytest.mark.parametrize("t,ratio,r", [(32, 0.25, 8), (100, 0.1, 10), (64, 0.5, 32), (10, 1.0, 10),
                                        (7, 0.3, 2), (128, 1 / 128, 1), (16, 0.0, 1), (3, 0.9, 3)])
def test_batch_composition(t, ratio, r):
    assert batch_composition(t, ratio) == (r, t - r)


@pytest.mark.parametrize("t,ratio", [(32, 0.25), (10, 1.0), (5, 0.0)])
def test_batch_composition_without_labels(t, ratio):
    assert batch_composition(t, ratio, uses_labels=False) == (0, t)


@pytest.mark.parametrize("t,ratio", [(32, 0.25), (20, 0.5), (30, 0.1), (12, 1.0), (9, 1 / 3)])
def test_stream_gives_r_labelled_and_t_minus_r_unlabelled(t, ratio):
    raw = index_data(300, 3)
    s = make_splits(raw, labels=30, seed=0, val_size=60)
    r = round(t * ratio)  # these cases have integral T * R/T
    stream = BatchStream(s, t, ratio, seed=0)
    lab, unl = set(s.lab_idx.tolist()), set(s.unl_idx.tolist())
    for _ in range(25):
        b = stream.next()
        assert b.x_l.shape == (r, 1) and b.y_l.shape == (r,) and b.x_u.shape == (t - r, 1)
        assert b.x_u2 is None
        assert b.x_all.shape == (t, 1)
        assert set(ids(b.x_l)) <= lab
        assert set(ids(b.x_u)) <= unl
        np.testing.assert_array_equal(b.y_l.numpy(), ids(b.x_l) % 3)  # labels travel with their inputs
        assert b.y_l.dtype == torch.long and b.x_l.dtype == torch.float32


def test_stream_cycles_through_each_pool_evenly():
    # Every labelled example is used once per pass over the labelled pool, and every unlabelled
    # example once per epoch_steps() steps when T - R divides the pool.
    raw = index_data(300, 3)
    s = make_splits(raw, labels=30, seed=1, val_size=60)  # 240 unlabelled
    stream = BatchStream(s, 40, 0.25, seed=5)  # R = 10, T - R = 30
    assert stream.epoch_steps() == 8
    batches = [stream.next() for _ in range(3 * stream.epoch_steps())]  # 240 labelled draws, 720 unlabelled
    lab_counts = np.bincount(np.concatenate([ids(b.x_l) for b in batches]), minlength=300)
    unl_counts = np.bincount(np.concatenate([ids(b.x_u) for b in batches]), minlength=300)
    np.testing.assert_array_equal(lab_counts[s.lab_idx], np.full(30, 8))
    np.testing.assert_array_equal(unl_counts[s.unl_idx], np.full(240, 3))
    assert lab_counts.sum() == 240 and unl_counts.sum() == 720


def test_stream_images_become_floats_in_unit_range(digits):
    s = make_splits(digits, labels=50, seed=0, val_size=200)
    b = BatchStream(s, 16, 0.25, seed=0).next()
    assert b.x_l.shape == (4, 1, 8, 8) and b.x_u.shape == (12, 1, 8, 8)
    assert b.x_l.dtype == torch.float32
    assert float(b.x_u.min()) >= 0.0 and float(b.x_u.max()) <= 1.0
    # each labelled input is a labelled training image / 255 with its own label
    x_lab = np.asarray(digits.x_train)[s.lab_idx].reshape(50, -1).astype(np.float32) / 255.0
    y_lab = np.asarray(digits.y_train)[s.lab_idx]
    for xi, yi in zip(b.x_l.reshape(4, -1).numpy(), b.y_l.numpy()):
        match = np.where(np.all(np.abs(x_lab - xi) < 1e-7, axis=1))[0]
        assert len(match) >= 1 and yi in y_lab[match]


def test_stream_without_labels_draws_only_unlabelled():
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    stream = BatchStream(s, 24, 0.5, seed=0, uses_labels=False)
    assert (stream.r, stream.u) == (0, 24)
    for _ in range(5):
        b = stream.next()
        assert b.x_l.shape == (0, 1) and b.y_l.shape == (0,) and b.x_u.shape == (24, 1)
        assert b.x_all.shape == (24, 1)
    assert stream.epoch_steps() == math.ceil(240 / 24)


@pytest.mark.parametrize("t,ratio", [(20, 0.25), (10, 1.0)])
def test_second_unlabelled_batch(t, ratio):
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    stream = BatchStream(s, t, ratio, seed=0, second_unlabelled=True)
    unl = set(s.unl_idx.tolist())
    r, u = batch_composition(t, ratio)
    for _ in range(10):
        b = stream.next()
        assert b.x_u2 is not None and b.x_u2.shape == (max(u, r), 1)
        assert set(ids(b.x_u2)) <= unl
        if u:
            assert not np.array_equal(ids(b.x_u), ids(b.x_u2))  # drawn separately, not a copy


def test_stream_deterministic_for_a_seed_and_differs_across_seeds():
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    a = draw(BatchStream(s, 20, 0.25, seed=3, second_unlabelled=True), 30)
    b = draw(BatchStream(s, 20, 0.25, seed=3, second_unlabelled=True), 30)
    assert_same_batches(a, b)
    c = draw(BatchStream(s, 20, 0.25, seed=4, second_unlabelled=True), 30)
    assert not all(torch.equal(x[2], y[2]) for x, y in zip(a, c))


@pytest.mark.parametrize("second", [False, True])
def test_stream_state_dict_resumes_the_exact_sequence(second):
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    ref = BatchStream(s, 40, 0.25, seed=9, second_unlabelled=second)
    draw(ref, 7)  # the labelled pool (30) wraps every 3 steps, the unlabelled pool (240) every 8
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)  # as a checkpoint would
    expected = draw(ref, 20)

    resumed = BatchStream(s, 40, 0.25, seed=12345, second_unlabelled=second)  # seed is overridden by the state
    draw(resumed, 2)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    assert_same_batches(draw(resumed, 20), expected)


def test_state_dict_is_a_snapshot():
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    stream = BatchStream(s, 40, 0.25, seed=9)
    state = stream.state_dict()
    first = draw(stream, 10)  # advancing the stream must not change the saved state
    stream.load_state_dict(state)
    assert_same_batches(draw(stream, 10), first)


@pytest.mark.parametrize("b,ratio,second", [(10, 0.2, False), (16, 0.25, True), (8, 1.0, True),
                                             (12, 0.5, False), (7, 2 / 7, False)])
def test_sharding_two_ranks_equal_one_worker_with_twice_the_batch(b, ratio, second):
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    kw = dict(seed=21, second_unlabelled=second)
    one = BatchStream(s, 2 * b, ratio, **kw)
    ranks = [BatchStream(s, b, ratio, rank=k, world=2, **kw) for k in range(2)]
    assert one.epoch_steps() == ranks[0].epoch_steps() == ranks[1].epoch_steps()
    for _ in range(40):  # crosses several wraps of both pools
        whole, parts = one.next(), [st.next() for st in ranks]
        assert parts[0].x_l.shape[0] == batch_composition(b, ratio)[0]
        torch.testing.assert_close(torch.cat([p.x_l for p in parts]), whole.x_l, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([p.y_l for p in parts]), whole.y_l, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([p.x_u for p in parts]), whole.x_u, rtol=0, atol=0)
        if second:
            torch.testing.assert_close(torch.cat([p.x_u2 for p in parts]), whole.x_u2, rtol=0, atol=0)
        assert not torch.equal(parts[0].x_all, parts[1].x_all)  # each rank has its own slice


def test_sharding_four_ranks():
    s = make_splits(index_data(300, 3), labels=30, seed=0, val_size=60)
    one = BatchStream(s, 48, 0.25, seed=2)
    ranks = [BatchStream(s, 12, 0.25, seed=2, rank=k, world=4) for k in range(4)]
    for _ in range(15):
        whole, parts = one.next(), [st.next() for st in ranks]
        torch.testing.assert_close(torch.cat([p.x_l for p in parts]), whole.x_l, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([p.x_u for p in parts]), whole.x_u, rtol=0, atol=0)


@pytest.mark.parametrize("t,ratio,uses_labels,world", [(40, 0.25, True, 1), (64, 0.1, True, 1),
                                                        (7, 0.3, True, 1), (16, 1.0, True, 1),
                                                        (32, 0.5, False, 1), (20, 0.25, True, 2),
                                                        (16, 1.0, True, 3)])
def test_epoch_steps(t, ratio, uses_labels, world):
    s = make_splits(index_data(301, 3), labels=30, seed=0, val_size=60)  # 241 unlabelled
    st = BatchStream(s, t, ratio, seed=0, uses_labels=uses_labels, world=world)
    r, u = batch_composition(t, ratio, uses_labels)
    per_step = (u if u else r) * world
    assert st.epoch_steps() == math.ceil(241 / per_step)
    assert st.unlabelled_size == 241


# ----------------------------------------------------------------------------------------------- datasets

def test_circles_shapes_and_classes():
    raw = load_dataset(DataSpec("circles"))
    assert raw.x_train.shape == (1700, 2) and raw.x_test.shape == (1000, 2)
    assert raw.x_train.dtype == np.float32 and raw.y_train.dtype == np.int64
    assert raw.info.num_classes == 2 and raw.info.input_shape == (2,) and not raw.info.is_image
    y = np.concatenate([raw.y_train, raw.y_test])
    np.testing.assert_array_equal(np.bincount(y), [1350, 1350])  # sklearn splits n evenly over the circles
    assert 0.4 < raw.y_train.mean() < 0.6  # shuffled: both classes in train


@pytest.mark.parametrize("factor,scale", [(0.5, 1.0), (0.3, 4.0)])
def test_circles_radii_follow_factor_and_scale_without_noise(factor, scale):
    opts = {"noise": 0.0, "factor": factor} if scale == 1.0 else {"noise": 0.0, "factor": factor, "scale": scale}
    raw = load_dataset(DataSpec("circles", options=opts))  # the default scale is 1
    for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
        radius = np.linalg.norm(x, axis=1)
        np.testing.assert_allclose(radius[y == 0], scale, rtol=1e-5)  # class 0: outer circle
        np.testing.assert_allclose(radius[y == 1], factor * scale, rtol=1e-5)


def test_val_per_label_sizes_validation_by_the_labels():
    s = load_splits(DataSpec("circles", labels=8, val_per_label=1.0), seed=0)
    assert len(s.val_idx) == 8 and len(s.lab_idx) == 8
    assert not set(s.val_idx) & set(s.lab_idx) and not set(s.val_idx) & set(s.unl_idx)
    np.testing.assert_array_equal(np.bincount(s.raw.y_train[s.val_idx], minlength=2), [4, 4])
    assert len(load_splits(DataSpec("circles", labels=8, val_per_label=0.1), seed=0).val_idx) == 2  # >= 1 per class
    assert len(load_splits(DataSpec("circles", labels=8, val_size=50, val_per_label=2.0), seed=0).val_idx) == 16
    with pytest.raises(ConfigError):
        load_splits(DataSpec("circles", labels=8, val_per_label=0.0), seed=0)


def test_circles_noise_option_changes_the_data():
    clean = load_dataset(DataSpec("circles", options={"noise": 0}))  # int is converted to float
    noisy = load_dataset(DataSpec("circles", options={"noise": 0.1}))
    assert not np.allclose(clean.x_train, noisy.x_train)
    r_noisy = np.linalg.norm(noisy.x_train[noisy.y_train == 0], axis=1)
    assert 0.05 < r_noisy.std() < 0.15  # radial spread of N(0, 0.1^2) noise in 2-D is about 0.1
    again = load_dataset(DataSpec("circles", options={"noise": 0.1}))
    np.testing.assert_array_equal(again.x_train, noisy.x_train)  # same data_seed -> same data
    other = load_dataset(DataSpec("circles", options={"noise": 0.1, "data_seed": 1}))
    assert not np.allclose(other.x_train, noisy.x_train)


def test_gaussians_mixture():
    raw = load_dataset(DataSpec("gaussians"))
    assert raw.x_train.shape == (10000, 2) and raw.x_test.shape == (2000, 2)
    assert raw.info.num_classes == 4
    x = np.concatenate([raw.x_train, raw.x_test])
    y = np.concatenate([raw.y_train, raw.y_test])
    props = np.bincount(y, minlength=4) / len(y)
    # binomial standard error is at most sqrt(0.24 / 12000) = 0.0045; allow about 3.3 of them
    np.testing.assert_allclose(props, [0.1, 0.4, 0.2, 0.3], rtol=0, atol=0.015)
    centres = np.array([[-2.0, 2.0], [2.0, 1.0], [0.0, -2.0], [1.0, -1.0]])  # VCAGAN Sec. 4.1
    np.testing.assert_array_equal(np.asarray(GAUSSIAN_CENTRES), centres)
    np.testing.assert_array_equal(np.asarray(GAUSSIAN_PROBS), [0.1, 0.4, 0.2, 0.3])
    for c in range(4):
        pts = x[y == c]
        np.testing.assert_allclose(pts.mean(0), centres[c], rtol=0, atol=0.05)
        np.testing.assert_allclose(pts.std(0), [0.3, 0.3], rtol=0.1, atol=0)


def test_gaussians_options():
    small = load_dataset(DataSpec("gaussians", options={"n_train": 500, "n_test": 100, "sigma": 0.1}))
    assert small.x_train.shape == (500, 2) and small.x_test.shape == (100, 2)
    centres = np.asarray(GAUSSIAN_CENTRES)
    dist = np.linalg.norm(small.x_train - centres[small.y_train], axis=1)
    assert 0.08 < np.sqrt((dist ** 2).mean() / 2) < 0.12


def test_digits_dataset(digits):
    assert digits.x_train.shape == (1300, 1, 8, 8) and digits.x_test.shape == (497, 1, 8, 8)
    assert digits.x_train.dtype == np.uint8 and digits.x_test.dtype == np.uint8
    assert digits.info.num_classes == 10 and digits.info.is_image and digits.info.input_shape == (1, 8, 8)
    assert int(np.asarray(digits.x_train).max()) == 255
    np.testing.assert_array_equal(np.unique(digits.y_train), np.arange(10))
    # the fixed test set is class-stratified: 497 * share, within one
    full = np.bincount(np.concatenate([digits.y_train, digits.y_test]), minlength=10)
    test = np.bincount(digits.y_test, minlength=10)
    assert np.all(np.abs(test - full * 497 / 1797) < 1.0)


def test_digits_test_split_fixed_and_independent_of_run_seed(digits):
    a = load_splits(DataSpec("digits", labels=50), seed=0)
    b = load_splits(DataSpec("digits", labels=50), seed=1)
    np.testing.assert_array_equal(np.asarray(a.raw.x_test), np.asarray(digits.x_test))
    np.testing.assert_array_equal(np.asarray(b.raw.x_test), np.asarray(digits.x_test))
    np.testing.assert_array_equal(np.asarray(b.raw.y_test), np.asarray(digits.y_test))
    assert not np.array_equal(a.lab_idx, b.lab_idx)
    other = load_dataset(DataSpec("digits", options={"data_seed": 1}))
    assert not np.array_equal(np.asarray(other.y_test), np.asarray(digits.y_test))


def test_to_float():
    a = np.array([0, 51, 255], dtype=np.uint8)
    np.testing.assert_allclose(to_float(a), [0.0, 0.2, 1.0], rtol=0, atol=1e-7)
    assert to_float(a).dtype == np.float32
    t = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(to_float(t), torch.tensor([0.0, 0.2, 1.0]), rtol=0, atol=1e-7)
    f = torch.tensor([0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(to_float(f), torch.tensor([0.5, 3.0]))  # floats are not rescaled


# ----------------------------------------------------------------------------------------------- registry

def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec("mnits"))
    msg = str(e.value)
    assert "mnits" in msg
    for name in ("circles", "gaussians", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn",
                 "imagefolder"):
        assert name in msg
    assert {d.name for d in list_datasets()} >= {"circles", "gaussians", "digits", "mnist", "svhn"}


def test_unknown_dataset_option_is_a_data_error():
    with pytest.raises(DataError, match=r"'circles'.*nosie.*valid: .*noise"):
        load_dataset(DataSpec("circles", options={"nosie": 0.1}))
    with pytest.raises(DataError, match="none"):  # digits-like datasets with no such option
        load_dataset(DataSpec("mnist", options={"size": 8}))


def test_badly_typed_dataset_option_is_a_data_error():
    with pytest.raises(DataError, match="n_train"):
        load_dataset(DataSpec("gaussians", options={"n_train": "many"}))
    with pytest.raises(DataError, match="grayscale"):  # bool("false") would silently be True
        load_dataset(DataSpec("imagefolder", root="/nonexistent", options={"grayscale": "false"}))
    with pytest.raises(DataError, match="n_train"):  # int(1500.5) would silently be 1500
        load_dataset(DataSpec("gaussians", options={"n_train": 1500.5}))


def test_dataset_option_values_are_converted_to_the_default_type():
    raw = load_dataset(DataSpec("gaussians", options={"n_train": 300.0, "n_test": 20, "sigma": 1}))
    assert raw.x_train.shape == (300, 2) and raw.meta["sigma"] == 1.0 and isinstance(raw.meta["sigma"], float)
