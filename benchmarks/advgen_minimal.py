"""advgen (Ma, Mao, Chen, Li; WISE 2019) written again from the slides' equations alone, no ssl_ray code:

    min_C max_G  L_nll(C) + alpha * L_adv(G, C) - lambda * L_reconst(G),
    L_adv = E_x KL[C(.|x) || C(.|G(x, z))] over labelled and unlabelled x,  L_reconst = E_x ||x - G(x, z)||^2,

G(x, z) = Dec([Enc(x), z]): an MLP encoder-decoder with z ~ N(0, I) entering at the latent code. Each step:
one G step (ascend alpha L_adv - lambda L_reconst, C fixed), then one C step (descend L_nll + alpha L_adv, G
fixed, C(.|x) held fixed as in VAT), fresh z each. Adam 1e-3 for both, 32 labelled draws + 128 unlabelled
points per batch, latent and noise 16, G's hidden layers 128-128; C is MLP 2-100-50-2 on the circles (the
slides') and 64-256-128-10 on digits (ssl_ray's default for 8x8 images, for a like-for-like comparison).
Data drawn here: circles = sklearn make_circles(noise, factor 0.5), 8 labels, 1,500 unlabelled points,
1,000 test points; digits = sklearn's 8x8 digits / 16, 5 labels per class, 497 test images, the rest
unlabelled. `--alpha 0` is the classifier alone at the same batch (the control). Bisection switches:
`--labelled-once` (the 8 labelled points once per batch instead of 32 draws), `--rec mean` (L_reconst
averaged over input dimensions), `--no-stopgrad` (both sides of the KL learn in the C step), `--order cg`.

    python benchmarks/advgen_minimal.py --data circles --noise 0.01 --lam 1 --seeds 1 2 3
    python benchmarks/advgen_minimal.py --data digits --steps 180 --seeds 1 2
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def mlp(*sizes):
    layers = [m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


def kl(q_logit, p_logit):  # KL(softmax q || softmax p), batch mean
    q = F.log_softmax(q_logit, 1)
    return (q.exp() * (q - F.log_softmax(p_logit, 1))).sum(1).mean()


def load(data, noise, seed):
    """(x_lab, y_lab, x_unl, x_test, y_test, C's layer sizes, image?) as float tensors."""
    rng = np.random.default_rng(seed)
    if data == "circles":
        from sklearn.datasets import make_circles
        x, y = make_circles(2508, noise=noise, factor=0.5, random_state=seed)
        unl, test = np.arange(1508), np.arange(1508, 2508)
        sizes, image = (2, 100, 50, 2), False
    else:
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.data / 16.0, d.target
        perm = rng.permutation(len(y))
        test, unl = perm[:497], perm[497:]
        sizes, image = (64, 256, 128, 10), True
    k = sizes[-1]
    per = 8 // k if data == "circles" else 5
    lab = np.concatenate([rng.choice(unl[y[unl] == c], per, replace=False) for c in range(k)])
    unl = np.setdiff1d(unl, lab)
    t = lambda a: torch.tensor(a, dtype=torch.float32)
    return t(x[lab]), torch.tensor(y[lab]), t(x[unl]), t(x[test]), torch.tensor(y[test]), sizes, image


def run(seed, data="circles", noise=0.06, lam=1.0, alpha=1.0, steps=3000, labelled_once=False, rec="sum",
        stopgrad=True, order="gc"):
    xl, yl, xu, xt, yt, sizes, image = load(data, noise, seed)
    torch.manual_seed(seed)
    dim = xl.shape[1]
    C = mlp(*sizes)
    enc, dec = mlp(dim, 128, 128, 16), mlp(32, 128, 128, dim)
    G = lambda x, z: (torch.sigmoid if image else (lambda h: h))(dec(torch.cat([enc(x), z], 1)))
    opt_c = torch.optim.Adam(C.parameters(), 1e-3)
    opt_g = torch.optim.Adam([*enc.parameters(), *dec.parameters()], 1e-3)
    for _ in range(steps):
        i = torch.arange(len(xl)) if labelled_once else torch.randint(len(xl), (32,))
        xb = torch.cat([xl[i], xu[torch.randint(len(xu), (128,))]])

        def g_step():
            with torch.no_grad():
                clean = C(xb)
            gx = G(xb, torch.randn(len(xb), 16))
            l_rec = (xb - gx).pow(2).sum(1).mean() if rec == "sum" else (xb - gx).pow(2).mean()
            opt_g.zero_grad()
            (-alpha * kl(clean, C(gx)) + lam * l_rec).backward()
            opt_g.step()

        def c_step():
            with torch.no_grad():
                gx = G(xb, torch.randn(len(xb), 16))
            clean = C(xb).detach() if stopgrad else C(xb)
            opt_c.zero_grad()
            (F.cross_entropy(C(xl[i]), yl[i]) + alpha * kl(clean, C(gx))).backward()
            opt_c.step()

        for f in ((g_step, c_step) if order == "gc" else (c_step, g_step)):
            f()
    with torch.no_grad():
        gx = G(xt, torch.randn(len(xt), 16))
        return (100.0 * (C(xt).argmax(1) != yt).float().mean().item(),
                (xt - gx).pow(2).sum(1).mean().item(), kl(C(xt), C(gx)).item())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=("circles", "digits"), default="circles")
    ap.add_argument("--noise", type=float, default=0.06, help="circles' noise")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--labelled-once", action="store_true")
    ap.add_argument("--rec", choices=("sum", "mean"), default="sum")
    ap.add_argument("--no-stopgrad", action="store_true")
    ap.add_argument("--order", choices=("gc", "cg"), default="gc")
    a = ap.parse_args()
    torch.set_num_threads(1)
    res = [run(s, a.data, a.noise, a.lam, a.alpha, a.steps, a.labelled_once, a.rec, not a.no_stopgrad, a.order)
           for s in a.seeds]
    errs = [r[0] for r in res]
    print(f"{vars(a)}: test error % per seed {[round(e, 2) for e in errs]}, mean {np.mean(errs):.2f} "
          f"(± {np.std(errs):.2f}); test L_reconst {[round(r[1], 3) for r in res]}, L_adv {[round(r[2], 3) for r in res]}")
