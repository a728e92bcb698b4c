"""The reference for time-to-result: the job of `ssl-ray train supervised --dataset digits --labels 50` (20 epochs)
written as a plain PyTorch script, the way one would write it without ssl-ray.

Load scikit-learn's digits, cut the same kind of splits (497 test images stratified, 200 validation images,
50 class-balanced labelled images), train the same MLP (64-256-128-10, ReLU) with Adam (lr 1e-3) on batches of
64 labelled images, 18 steps per epoch (one pass over the 1100-image unlabelled pool at 64 per step, as ssl-ray
counts an epoch), 20 epochs, validation error after every epoch, test error at the end. One torch thread, as
`ssl-ray train` uses with its default --cpus-per-worker 1. No checkpoints, no TensorBoard, no Ray.

    python benchmarks/plain_supervised.py [--epochs 20] [--labels 50] [--threads 1]
"""
import argparse
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).reshape(-1, 64) / 16.0
    y = torch.tensor(d.target)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=497, stratify=d.target, random_state=0)
    idx_tr = rng.permutation(idx_tr)
    idx_val, idx_pool = idx_tr[:200], idx_tr[200:]
    lab = np.concatenate([idx_pool[d.target[idx_pool] == c][: a.labels // 10] for c in range(10)])
    x_l, y_l = x[lab], y[lab]

    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = -(-len(idx_pool) // 64)

    def error(ix) -> float:
        net.eval()
        with torch.no_grad():
            e = (net(x[ix]).argmax(1) != y[ix]).float().mean().item() * 100
        net.train()
        return e

    for epoch in range(1, a.epochs + 1):
        for _ in range(steps):
            i = torch.randint(len(lab), (64,))
            loss = nn.functional.cross_entropy(net(x_l[i]), y_l[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = error(idx_val)
    test = error(idx_te)
    print(f"plain PyTorch: val error {val:.2f}%, test error {test:.2f}% after {a.epochs} epochs; "
          f"{time.perf_counter() - T0:.1f} s since start (imports included)")


if __name__ == "__main__":
    main()
