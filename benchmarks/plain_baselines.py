"""Independent check of `pseudolabel` and `meanteacher` at their defaults: each written again as a plain PyTorch
loop of a few dozen lines (no ssl_ray method, optimiser helper, augmentation or training-loop code; only the
same labelled/validation/test split, read with ssl_ray.data.load_splits so the numbers are comparable), on
digits with 50 labels and the step counts `ssl-ray train METHOD` runs by default (20 epochs). If these and
benchmarks/baselines_digits.py agree within seed noise, a gap to `supervised` is the method's, not a bug's.

    python benchmarks/plain_baselines.py --seeds 1 2
"""
import argparse
import math

import torch
from torch import nn
from torch.nn import functional as F

from ssl_ray.data import DataSpec, load_splits


def data(seed):
    s = load_splits(DataSpec("digits", labels=50), seed)
    x = lambda idx: torch.tensor(s.raw.x_train[idx], dtype=torch.float32) / 255  # noqa: E731
    return (x(s.lab_idx), torch.tensor(s.raw.y_train[s.lab_idx]), x(s.unl_idx),
            torch.tensor(s.raw.x_test, dtype=torch.float32) / 255, torch.tensor(s.raw.y_test))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def test_error(net, xt, yt):
    with torch.no_grad():
        return (net(xt).argmax(1) != yt).float().mean().item() * 100


def shift(x):  # random translation by up to 1 pixel (12.5% of 8), reflect padding, one image at a time
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    d = torch.randint(0, 3, (len(x), 2))
    return torch.stack([p[i, :, d[i, 0]:d[i, 0] + 8, d[i, 1]:d[i, 1] + 8] for i in range(len(x))])


def pseudolabel(seed, steps=1000):
    xl, yl, xu, xt, yt = data(seed)
    torch.manual_seed(seed)
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for k in range(steps):
        for g in opt.param_groups:
            g["lr"] = 0.03 * math.cos(7 * math.pi * k / (16 * 2 ** 20))
        i, j = torch.randint(len(xl), (64,)), torch.randint(len(xu), (448,))
        out = net(torch.cat([xl[i], xu[j]]))
        p = out[64:].detach().softmax(1)
        conf, target = p.max(1)
        l_u = (F.cross_entropy(out[64:], target, reduction="none") * (conf >= 0.95)).mean()
        alpha = 3.0 * min(1.0, max(0.0, (k - 10) / (400 - 10)))
        loss = F.cross_entropy(out[:64], yl[i]) + alpha * l_u
        opt.zero_grad()
        loss.backward()
        opt.step()
    return test_error(net, xt, yt)


def meanteacher(seed, steps=1000, rampup=300):
    xl, yl, xu, xt, yt = data(seed)
    torch.manual_seed(seed)
    net = mlp()
    teacher = mlp()
    teacher.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=0.003, betas=(0.9, 0.99))

    def noisy(x):
        x = shift(x)
        return x + 0.15 * x.flatten(1).std(1).view(-1, 1, 1, 1) * torch.randn_like(x)

    for k in range(steps):
        ramp = math.exp(-5 * (1 - k / rampup) ** 2) if k < rampup else 1.0
        for g in opt.param_groups:
            g["lr"], g["betas"] = 0.003 * ramp, (0.9, 0.99 if k < rampup else 0.999)
        i, j = torch.randint(len(xl), (25,)), torch.randint(len(xu), (75,))
        x = torch.cat([xl[i], xu[j]])
        out = net(noisy(x))
        with torch.no_grad():
            target = teacher(noisy(x)).softmax(1)
        cons = (out.softmax(1) - target).pow(2).mean()
        loss = F.cross_entropy(out[:25], yl[i]) + 100 * ramp * cons
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay = 0.99 if k < rampup else 0.999  # the reference (TF): plain decay, no warm-up
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), net.parameters()):
                t.mul_(decay).add_(s, alpha=1 - decay)
    return test_error(teacher, xt, yt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name, fn in (("pseudolabel", pseudolabel), ("meanteacher", meanteacher)):
        errs = [fn(s) for s in a.seeds]
        print(f"plain {name}: test error " + ", ".join(f"seed {s}: {e:.2f}" for s, e in zip(a.seeds, errs))
              + f"; mean {sum(errs) / len(errs):.2f}", flush=True)


if __name__ == "__main__":
    main()
