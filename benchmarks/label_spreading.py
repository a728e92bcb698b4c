"""scikit-learn's LabelSpreading (kNN kernel) on exactly the split a run sees: the figure a deep SSL method must beat.

Transductive, like the methods: it sees the labelled examples and the unlabelled pool (labels hidden) of the
run's split (`load_splits(DataSpec(dataset, labels), seed)`), then labels the test set by the same kNN graph
(`predict`). Pixels are scaled to [0, 1] as the methods see them.

    python benchmarks/label_spreading.py --dataset digits --labels 50 --seeds 1 2
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

from ssl_ray.data import DataSpec, load_splits


def label_spreading_error(dataset: str, labels: int, seed: int, n_neighbors: int = 7) -> float:
    """Test error (%) of LabelSpreading(kernel="knn") on the labelled + unlabelled part of the run's split."""
    from sklearn.semi_supervised import LabelSpreading

    s = load_splits(DataSpec(dataset, labels=labels), seed)
    x = np.asarray(s.raw.x_train, dtype=np.float32).reshape(len(s.raw.x_train), -1) / 255.0
    idx = np.concatenate([s.lab_idx, s.unl_idx])
    y = np.full(len(idx), -1)
    y[: len(s.lab_idx)] = np.asarray(s.raw.y_train)[s.lab_idx]
    model = LabelSpreading(kernel="knn", n_neighbors=n_neighbors, max_iter=1000).fit(x[idx], y)
    xt = np.asarray(s.raw.x_test, dtype=np.float32).reshape(len(s.raw.x_test), -1) / 255.0
    return 100.0 * float(np.mean(model.predict(xt) != np.asarray(s.raw.y_test)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n-neighbors", type=int, default=7)
    args = ap.parse_args(argv)
    errs = [label_spreading_error(args.dataset, args.labels, s, args.n_neighbors) for s in args.seeds]
    for s, e in zip(args.seeds, errs):
        print(f"LabelSpreading knn k={args.n_neighbors} {args.dataset}/{args.labels} seed {s}: {e:.2f}%")
    sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
    print(f"mean {statistics.mean(errs):.2f} +- {sd:.2f}")


if __name__ == "__main__":
    main()
