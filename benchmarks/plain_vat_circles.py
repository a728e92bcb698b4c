"""An independent, minimal VAT on two circles (no ssl_ray code), to check ssl_ray's `vat` against.

make_circles(noise, factor 0.5); 4 labels per class, 1,500 unlabelled points, MLP 2-100-50-2 (ReLU, no BN),
Adam 1e-3, 128 unlabelled points + the 8 labelled points every step, xi 1e-6, one power iteration,
L_vat = KL(clean || perturbed) on the unlabelled batch, 3,000 steps; data, labels and initialisation
drawn per seed; test error on 1,000 fresh points.

    python benchmarks/plain_vat_circles.py --eps 1.0 --noise 0.01 --seeds 1 2 3
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import make_circles


def kl(q_logit, p_logit):  # KL(softmax q || softmax p), batch mean
    q = F.log_softmax(q_logit, 1)
    return (q.exp() * (q - F.log_softmax(p_logit, 1))).sum(1).mean()


def unit(d, per_example=True):
    """d / ||d|| per example (VAT's normalisation); per_example=False: one norm for the whole batch (a
    common slip: each example then gets a perturbation of about eps / sqrt(batch))."""
    return d / (d.norm(dim=1, keepdim=True) + 1e-12) if per_example else d / (d.norm() + 1e-12)


def run(seed, eps, noise, steps=3000, xi=1e-6, dtype=torch.float32, per_example=True, standardize=False, scale=1.0):
    torch.manual_seed(seed)
    x, y = make_circles(2500, noise=noise, factor=0.5, random_state=seed)
    x = x * scale
    if standardize:
        x = (x - x[:1500].mean(0)) / x[:1500].std(0)
    x, y = torch.tensor(x, dtype=dtype), torch.tensor(y)
    rng = np.random.default_rng(seed)
    lab = np.concatenate([rng.choice(np.flatnonzero(y[:1500].numpy() == c), 4, replace=False) for c in (0, 1)])
    xl, yl, xu, xt, yt = x[lab], y[lab], x[:1500], x[1500:], y[1500:]
    net = torch.nn.Sequential(torch.nn.Linear(2, 100), torch.nn.ReLU(), torch.nn.Linear(100, 50), torch.nn.ReLU(),
                              torch.nn.Linear(50, 2)).to(dtype)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        xb = xu[torch.randint(0, len(xu), (128,))]
        clean = net(xb).detach()
        d = (xi * unit(torch.randn_like(xb), per_example)).requires_grad_(True)
        d = torch.autograd.grad(kl(clean, net(xb + d)), d)[0]
        loss = F.cross_entropy(net(xl), yl) + kl(clean, net(xb + eps * unit(d, per_example)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return 100.0 * (net(xt).argmax(1) != yt).float().mean().item()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, default=1.0)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--xi", type=float, default=1e-6)
    ap.add_argument("--batch-norm-d", action="store_true", help="normalise d over the whole batch (wrong)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the circles' coordinates (radii 1 and 0.5)")
    ap.add_argument("--standardize", action="store_true", help="standardise the inputs per coordinate")
    ap.add_argument("--float64", action="store_true", help="compute in float64 (default float32)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    errs = [run(s, a.eps, a.noise, a.steps, a.xi, torch.float64 if a.float64 else torch.float32,
                not a.batch_norm_d, a.standardize, a.scale) for s in a.seeds]
    print(f"eps {a.eps} noise {a.noise} steps {a.steps} xi {a.xi} float64 {a.float64} batch_norm_d {a.batch_norm_d} standardize {a.standardize} scale {a.scale}: test error % per seed {errs}, mean {np.mean(errs):.2f}")
