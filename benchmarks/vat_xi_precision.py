"""Does float32 resolve VAT's power-iteration direction at xi? A digits VAT run at its defaults (the same Trainer
as `ssl-ray train vat --seed 1`); at initialisation and after epochs 1, 5 and 20, the direction
vat_perturbation computes in float32 is compared with the same finite difference in float64 on a float64 copy
of the network (same inputs, same d), per example, for several xi. Prints the median cosine, the share of
examples above 0.99 and the share with r = 0 (docs/results-circles.md, VAT section).

    python benchmarks/vat_xi_precision.py [--dataset digits] [--seed 1]
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch.nn import functional as F

from ssl_ray.data import DataSpec, to_float
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.methods.vat import normalize, vat_perturbation
from ssl_ray.nn.functional import kl
from ssl_ray.nn.modes import frozen_bn

XIS = (1e-6, 1e-4, 1e-2)


def probe(tr: Trainer, tag: str) -> None:
    net = tr.method.net
    x = to_float(tr.x_val[:128])
    net64 = copy.deepcopy(net).double()
    d0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    cells = []
    with frozen_bn(net64), frozen_bn(net):
        with torch.no_grad():
            clean64, clean32 = net64(x.double()), net(x)
        for xi in XIS:
            d = (xi * normalize(d0.double())).requires_grad_(True)
            ref = normalize(torch.autograd.grad(kl(clean64, net64(x.double() + d)), d)[0])  # unit norm: no eps clamp
            r = vat_perturbation(net, x, clean32, 1.0, xi=xi, d=d0.clone())
            cos = F.cosine_similarity(r.double().flatten(1), ref.flatten(1), dim=1)
            cells.append(f"xi {xi:g}: median cos {cos.median().item():.3f}, >0.99 {(cos > 0.99).float().mean().item():.2f}, "
                         f"r=0 {(r.flatten(1).norm(dim=1) == 0).float().mean().item():.2f}")
    print(f"{tag}: " + "; ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tr = Trainer(RunSpec("vat", DataSpec(a.dataset), epochs=20, seed=a.seed), progress=False)
    probe(tr, "init")
    for epoch in range(1, 21):
        tr.run_epoch()
        if epoch in (1, 5, 20):
            probe(tr, f"after epoch {epoch} (step {tr.global_step})")


if __name__ == "__main__":
    main()
