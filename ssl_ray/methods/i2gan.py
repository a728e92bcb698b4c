"""Revisiting ImprovedGAN with Metric Learning for Semi-Supervised Learning: I2GAN, "Intensified
ImprovedGAN" (Park, Jung, Teoh; slides in shared/papers/i2gan-slides.txt).

The slides read ImprovedGAN's unsupervised loss as metric learning: with similarities
s_ij = f(x_i) . w_j, L_u = (1/N) sum_i [log(1 + 1/sum_j e^{s_ij}) + log(1 + sum_j e^{s^_ij})], which is
exactly 2 x ImprovedGAN's L_unl (tests/test_improvedgan.py checks it). Minimising it raises the
prediction confidence on real data and pulls real features towards class directions; I2GAN strengthens
that with two changes to ImprovedGAN, and nothing else:
(a) scale-up: L_u <- tau * L_u with tau > 1 (`tau`);
(b) excessive sampling: G's feature matching L_g = || (1/N) sum_i f_i - (1/N') sum_i' f^_i' ||_1 over
    N' > N generated samples (`n_fake` = N', decoupled from the batch size; the reference ImprovedGAN code
    ties the generated batch to the batch size).
Choices the slides leave open, each a hyperparameter:
- tau multiplies ImprovedGAN's L_unl (its 0.5-weighted form), so tau = 1 is exactly ImprovedGAN (tested).
  The slides write L_u in metric form, which is 2 x L_unl (tested), and ask for tau > 1 on that form. Read
  literally, the slides' tau is tau / 2 here: tau = 2 here is the slides' tau = 1, i.e. no scale-up beyond
  the metric form. Decision (docs/results-improvedgan.md, "The two I2GAN points"): the parameterisation is
  kept (tau = 1 = ImprovedGAN is the clean ablation; the slides do not say which form their own
  ImprovedGAN code scales), the factor is stated here, and the default search space
  (search_spaces/i2gan.yaml) searches tau in [2.5, 16], which is tau > 1 under either reading.
- N' > N: N is the real batch of the feature matching: T - R samples of the second unlabelled batch
  (`fm_batch = 0`, the default: the slides' N, whose L_u and L_g run over the same N real samples; 100 at the
  default T = 200, R/T = 0.5; before issue 26 it was max(T - R, R), `fm_batch` can still set any N up to
  that). `n_fake = 100` there would be N' = N, not I2GAN; the default `n_fake = 200` is N' = 2N, and the
  default space searches n_fake in {200, 400} with R/T in [0.3, 0.7] (N = T - R <= 140), so every searched
  trial has N' > N. `n_fake` is an absolute count: changing T or R/T changes N, not N'.
- The fake term of L_u averages over N generated samples (`fake_in_unl = "batch"`, the default): the slides'
  L_u formula runs one index i = 1..N over both real and generated terms, and introduces N' only in L_g.
  `fake_in_unl = "n_fake"` uses N' generated samples in D's step as well.
- The norm of L_g is the slides' L1 norm on every architecture (`fm_norm = l1`, the default here, where
  ImprovedGAN's `auto` picks its MNIST code's squared difference for MLP discriminators): the mean absolute
  difference of the feature means, i.e. the slides' L1 norm divided by the feature dimension (a constant
  factor that Adam does not see). `fm_norm = l2` or `auto` gives ImprovedGAN's choice back.
- tau and N' values are not in the slides; the defaults (tau = 2, N' = 200 = 2N at the default batch) are our
  choice, measured against ImprovedGAN and supervised in docs/results-defaults.md.
- N' is per data-parallel worker, like the batch size.
"e-I2GAN" in the slides' tables is not defined there and is not implemented.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import hp
from .improvedgan import ImprovedGAN, ImprovedGANConfig
from .registry import register


@dataclass
class I2GANConfig(ImprovedGANConfig):
    tau: float = hp(2.0, "scale-up factor of the unsupervised loss L_u (tau >= 1; 1 = ImprovedGAN; not given in "
                    "the slides)", low=1.0)
    n_fake: int = hp(200, "N': generated samples per step in G's feature matching (0 = as many as the unlabelled "
                     "batch T - R, i.e. ImprovedGAN; not given in the slides)", low=0)
    fake_in_unl: str = hp("batch", "generated samples in the fake term of L_u: batch = N (as many as the "
                          "unlabelled batch, the slides' formula), n_fake = N'", choices=("batch", "n_fake"))
    fm_norm: str = hp("l1", "feature-matching distance: l1 (mean absolute: the slides' L1 norm of L_g), l2 (squared, "
                      "ImprovedGAN's MNIST code), auto = ImprovedGAN's choice (l2 for MLP discriminators, l1 for conv "
                      "ones)", choices=("auto", "l1", "l2"))


@register
class I2GAN(ImprovedGAN[I2GANConfig]):
    name = "i2gan"
    Config = I2GANConfig
    paper = "Park, Jung, Teoh: Revisiting ImprovedGAN with Metric Learning for SSL (I2GAN, slides)"

    def n_fake_g(self, n_unl: int) -> int:
        return self.cfg.n_fake or n_unl

    def n_fake_d(self, n_unl: int) -> int:
        return self.n_fake_g(n_unl) if self.cfg.fake_in_unl == "n_fake" else n_unl

    def d_unl_weight(self) -> float:
        return self.cfg.tau * super().d_unl_weight()
