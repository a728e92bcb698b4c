"""Improved Techniques for Training GANs (Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen; NeurIPS 2016).

Semi-supervised GAN with feature matching. The discriminator D outputs K class logits l(x); the
"fake" class has its logit fixed at 0, so with Z(x) = logsumexp_k l_k(x) the probability that x is
real is D(x) = e^Z / (e^Z + 1) = sigmoid(Z(x)). D minimises L_lab + w * L_unl with
L_lab = cross-entropy on labelled data and
L_unl = 0.5 * mean[-Z(x_u) + softplus(Z(x_u))] + 0.5 * mean[softplus(Z(G(z)))]
(= 0.5 * (-log D(x_u)) + 0.5 * (-log(1 - D(G(z)))) averaged). G minimises feature matching between
D's features (`D.features`: the MNIST MLP's last hidden dense layer after its ReLU and before its Gaussian
noise, the reference's `layers[-3]`; the conv nets' globally pooled features, its `disc_layers[-2]`; noise
and dropout below them on, as the reference's `deterministic=False`) on N samples of a second, independently
drawn unlabelled batch (`batch.x_u2`; N = T - R, `fm_batch`) and on as many generated samples: the squared
difference of the feature means for the MNIST MLP, the mean absolute difference for conv nets (`fm_norm`, auto
picks by architecture as the reference code does). One D step, then one G step with fresh noise
z ~ U(0, 1)^100 (drawn with `global_rand`, so N data-parallel workers draw exactly the noise of one worker with
an N times larger batch), per batch; Adam with beta1 = 0.5.

Defaults follow openai/improved-gan (`train_mnist_feature_matching.py`, `train_cifar_feature_matching.py`,
their `nn.py`): batch 100 labelled + 100 unlabelled (T = 200, R/T = 0.5), lr 3e-3 for the MNIST MLP and 3e-4
for conv nets (the CIFAR script decays it linearly to 0 over its last 400 of 1200 epochs: `lr_decay_start=800`,
`lr_decay_end=1200`), test error measured with an exponential moving average of D's weights
(decay 1 - 1e-4). Architectures come from the data's shape (`arch`, `gen_arch` override):
flat/grey images get the MNIST MLPs (D 1000-500-250-250-250 with weight norm and Gaussian noise 0.3 on
the input, 0.5 after each hidden layer; G 500-500 with BN and softplus, sigmoid output), colour images
the CIFAR conv D (64/128 channels for SVHN, 96/192 otherwise) and the deconvolution G, 2-D points small
MLPs. Initialisation and weight norm as the reference (models/classifiers.py `maybe_wn`): w = g v / ||v|| per
output unit (per output channel for the CIFAR G's transposed convolution), g starting at 1; directions
v ~ N(0, 0.1^2) in the MNIST D, N(0, 0.05^2) in the CIFAR D and G; the hidden layers' scales g are set by the
data-dependent init and then fixed (requires_grad off, outside the optimiser: `train_scale=False`), only the
classifier head's scale trains; the MNIST G has Glorot-uniform weights, zero biases, BN without a trained scale
(`g=None`, eps 1e-6) and a weight-normed output layer with a trained scale; the CIFAR G's BN has no trained scale either
and its output layer is data-initialised. Choices the paper leaves open, each a hyperparameter:
- EMA: with decay 1 - 1e-4 a plain average needs ~10^4 steps to forget the initial weights (the reference
  trains 180k (MNIST) to 600k (CIFAR) steps; its average starts at 0, not at the initial weights); a digits
  run of 20 epochs has ~220. So the average warms up
  (`ema_warmup`, on by default) with TensorFlow's `num_updates` rule: decay_n = min(decay, (1+n)/(10+n)),
  which weights roughly the last tenth of the steps taken so far and becomes the paper's 1 - 1e-4 after
  ~9e4 steps, i.e. it changes nothing at the reference's step counts. `ema_decay = 0` evaluates the raw
  weights. The EMA is used for evaluation only, as in the reference. (The reference's zero-started average
  at 2,100 steps: docs/results-improvedgan.md, "Parity with the reference".)
- The reference's data-dependent initialisation of weight-normed layers is reproduced (`data_init`):
  before the first step, layer by layer, each one's scale g and bias are set so that its outputs on a
  batch have zero mean and standard deviation `init_stdv` per unit (1; 0.1 for the CIFAR D's head and the
  CIFAR G's output layer; the MNIST G's output layer, the reference's `l2normalize`, has no data init). The
  reference uses 500 training images for D; we use the first batch's labelled + unlabelled samples (200 at
  the defaults), and G's layer sees as many noise vectors; rank 0's result under data parallelism. Without it
  the Gaussian noise (sigma 0.5) swamps the small activations and learning stalls.
- N, the real samples of the feature matching, is the unlabelled batch size T - R (`fm_batch = 0`): the
  reference's 100 at R/T = 0.5 and I2GAN's N; `fm_batch` sets any N up to max(T - R, R), what the batch
  stream draws for the second batch (the old behaviour used all of it).
- D sees labelled, unlabelled and generated samples in three separate forward passes (as in the
  reference), so BN-based discriminators (conv_small, conv_large) normalise each part on its own.
Not reproduced: the reference's Adam adds its 1e-8 inside the square root (sqrt(v + 1e-8)); torch.optim.Adam's
eps is outside it. The independent port with either Adam on mnist5k/100 (3 seeds, 2,100 steps): 17.50 vs
17.63 % test error, and ssl-ray 17.47 % (16.70 with G's BN eps 1e-6; results-improvedgan.md, "Parity"); torch's
Adam in the port's I2GAN at 6,300 steps: 9.40 / 9.30 % (seeds 2, 3), D never winning ("Step for step ...").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import hp
from ..data import Batch
from ..data.augment import AugmentConfig
from ..data.splits import batch_composition
from ..errors import ConfigError
from ..models import MLP, Classifier, ConvGenerator, ConvNet, MLPGenerator, build_classifier, build_generator
from ..nn import distributed
from ..nn.modes import eval_mode, frozen, train_mode
from ..nn.plots import image_grid
from .common import EMA, ClassifierConfig, EMAConfig, EMAEvaluated, adam, cross_entropy_or_zero
from .registry import register

MNIST_D_HIDDEN = (1000, 500, 250, 250, 250)


# ---- losses (pure functions) ---------------------------------------------------------------------------
def real_logit(logits: torch.Tensor) -> torch.Tensor:
    """Z(x) = logsumexp_k l_k(x): the logit of "x is real" when the fake class's logit is fixed at 0."""
    return torch.logsumexp(logits, dim=1)


def d_real_prob(logits: torch.Tensor) -> torch.Tensor:
    """D(x) = e^Z / (e^Z + 1) = sigmoid(Z(x)), per sample."""
    return torch.sigmoid(real_logit(logits))


def unlabelled_loss(logits_unl: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """ImprovedGAN's L_unl = 0.5 mean[-Z(x_u) + softplus(Z(x_u))] + 0.5 mean[softplus(Z(G(z)))]."""
    z_u, z_f = real_logit(logits_unl), real_logit(logits_fake)
    return 0.5 * (-z_u + F.softplus(z_u)).mean() + 0.5 * F.softplus(z_f).mean()


def feature_matching_loss(f_real: torch.Tensor, f_fake: torch.Tensor, norm: str) -> torch.Tensor:
    """Distance between the batch means of D's features: "l2" = mean_j (m_real - m_fake)_j^2 (MNIST code),
    "l1" = mean_j |m_real - m_fake|_j (CIFAR/SVHN code). Real and generated batches may differ in size."""
    d = f_real.mean(0) - f_fake.mean(0)
    if norm == "l2":
        return d.pow(2).mean()
    if norm == "l1":
        return d.abs().mean()
    raise ValueError(f"unknown feature-matching norm {norm!r}")


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Prediction confidence p_max(x) = max_y softmax(l(x))_y, per sample."""
    return logits.softmax(1).amax(1)


# ---- config ------------------------------------------------------------------------------------------------
@dataclass
class ImprovedGANConfig(ClassifierConfig, AugmentConfig, EMAConfig):
    batch_size: int = hp(200, "T: samples per batch; the reference uses 100 labelled + 100 unlabelled", low=2)
    labeled_ratio: float = hp(0.5, "R/T: the labelled share of each batch (reference: 100 of 200)",
                              low=0, high=1, low_open=True, high_open=True)
    arch: str = hp("auto", "discriminator: auto (MNIST MLP for flat/grey images, ImprovedGAN conv net for colour "
                   "images, small MLP for points), mlp (the MNIST MLP on images), conv_small, conv_large, "
                   "improvedgan", choices=("auto", "mlp", "conv_small", "conv_large", "improvedgan"))
    gen_arch: str = hp("auto", "generator: auto (MLP 500-500 for grey images and points, deconvolution net for "
                       "colour images), mlp, conv", choices=("auto", "mlp", "conv"))
    lr: float = hp(0.0, "Adam learning rate of D and G; 0 = the reference's: 3e-3 for MLP discriminators (MNIST), "
                   "3e-4 for conv ones (CIFAR-10, SVHN)", low=0)
    beta1: float = hp(0.5, "Adam beta1 of D and G (reference 0.5)", low=0, high=1, high_open=True)
    lr_decay_start: int = hp(0, "epoch from which the lr decays linearly (0 = constant lr; reference CIFAR: 800)",
                             low=0)
    lr_decay_end: int = hp(0, "epoch at which the decayed lr reaches 0 (reference CIFAR: 1200)", low=0)
    unl_weight: float = hp(1.0, "w: weight of L_unl in D's loss (reference 1)", low=0)
    z_dim: int = hp(100, "generator noise dimension; z ~ U(0, 1)^z_dim", low=1)
    fm_norm: str = hp("auto", "feature-matching distance: l2 (squared, the MNIST code), l1 (mean absolute, the "
                      "CIFAR/SVHN code), auto = l2 for MLP discriminators, l1 for conv ones",
                      choices=("auto", "l1", "l2"))
    data_init: bool = hp(True, "data-dependent init of D's weight-normed layers on the first batch (reference)")
    ema_decay: float = hp(0.9999, "decay of the weight average used for evaluation (reference 1 - 1e-4; "
                          "0 = evaluate the raw weights)", low=0, high=1, high_open=True)
    fm_batch: int = hp(0, "N: real samples (of the second unlabelled batch) in G's feature matching; 0 = the "
                       "unlabelled batch T - R (the reference's batch of 100; the slides' N); at most max(T - R, R)",
                       low=0)

    def check(self) -> None:
        r, u = batch_composition(self.batch_size, self.labeled_ratio)
        if u < 1:
            raise ConfigError(f"labeled_ratio: {self.labeled_ratio} leaves no unlabelled sample in a batch of "
                              f"{self.batch_size}")
        if self.fm_batch > max(r, u):
            raise ConfigError(f"fm_batch: {self.fm_batch} is more than the {max(r, u)} samples of the second "
                              f"unlabelled batch (max(T - R, R) at batch_size {self.batch_size}, labeled_ratio "
                              f"{self.labeled_ratio})")
        if (self.lr_decay_start or self.lr_decay_end) and self.lr_decay_end <= self.lr_decay_start:
            raise ConfigError(f"lr_decay_end: {self.lr_decay_end} must be after lr_decay_start "
                              f"({self.lr_decay_start})")


def linear_decay(start: int, end: int):
    """lr factor after `epoch` epochs: 1 until `start`, then linearly to 0 at `end` (constant if end = 0)."""
    def factor(epoch: int) -> float:
        if end <= 0:
            return 1.0
        return min(1.0, max(0.0, (end - epoch) / (end - start)))
    return factor


@torch.no_grad()
def weight_norm_data_init(net: nn.Module, x: torch.Tensor) -> int:
    """Salimans & Kingma's data-dependent init of every weight-normed Linear/Conv in `net`, in order, as
    openai/improved-gan's `nn.py`: g <- g * s / std(t), b <- -mean(t) * s / std(t), with t = the layer's
    pre-activation without bias on `x` (a fresh forward pass of `net` for each layer, in whatever mode `net`
    is in), std the population standard deviation per output unit (channel) and s = the layer's
    `data_init_std` (the reference's `init_stdv`, 1 unless set by `models.maybe_wn`), so each output unit
    starts with mean 0 and standard deviation s. Layers whose `data_init_std` is None are left alone.
    Returns the number of layers set."""
    layers: list[Any] = [m for m in net.modules() if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")
                         and getattr(m, "data_init_std", 1.0) is not None]
    for layer in layers:
        out: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda mod, inp, o: out.append(o))
        net(x)
        handle.remove()
        bias = layer.bias if layer.bias is not None else torch.zeros(1, device=x.device)
        shape = (1, -1) + (1,) * (out[0].dim() - 2)
        t = out[0] - bias.view(shape)
        dims = [d for d in range(t.dim()) if d != 1]
        mean = t.mean(dims)
        scale = getattr(layer, "data_init_std", 1.0) / (t.var(dims, unbiased=False).sqrt() + 1e-8)
        g = layer.parametrizations.weight.original0
        g.mul_(scale.view(g.shape))
        if layer.bias is not None:
            layer.bias.copy_(-mean * scale)
    return len(layers)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of `module` that train (requires_grad): not the fixed weight-norm and BN scales."""
    return [p for p in module.parameters() if p.requires_grad]


# ---- method -----------------------------------------------------------------------------------------------
IGC = TypeVar("IGC", bound=ImprovedGANConfig)


@register
class ImprovedGAN(EMAEvaluated[IGC]):
    name = "improvedgan"
    Config = ImprovedGANConfig
    paper = "Salimans et al., Improved Techniques for Training GANs, NeurIPS 2016 (openai/improved-gan)"
    second_unlabelled = True

    # -- build ------------------------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        self.D = self.build_discriminator()
        self.G = self.build_generator()
        conv = isinstance(self.D, ConvNet)
        self.fm_norm = cfg.fm_norm if cfg.fm_norm != "auto" else ("l1" if conv else "l2")
        lr = cfg.lr or (3e-4 if conv else 3e-3)
        betas = (cfg.beta1, 0.999)
        self.modules = {"D": self.D, "G": self.G}
        # Each player's trainable parameters: the weight-norm scales of hidden layers and the BN scales of the
        # generator are fixed (requires_grad off, as in the reference), so no optimiser holds them.
        self.optimizers = {"D": adam(trainable(self.D), lr, betas, cfg.weight_decay),
                           "G": adam(trainable(self.G), lr, betas)}
        factor = linear_decay(cfg.lr_decay_start, cfg.lr_decay_end)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in self.optimizers.items()}
        self.ema = cfg.make_ema(self.D)
        self.initialised = not cfg.data_init
        # Fixed noise for the sample grids and the evaluation metrics (their own generator: the training noise
        # stream is untouched by evaluation).
        self.picture_z = torch.rand(100, cfg.z_dim, generator=torch.Generator().manual_seed(0))
        self.eval_z = torch.rand(1000, cfg.z_dim, generator=torch.Generator().manual_seed(1))

    def build_discriminator(self) -> Classifier:
        cfg = self.cfg
        shape, k = self.info.input_shape, self.info.num_classes
        arch = cfg.arch
        if arch == "auto":
            arch = "mlp" if len(shape) == 1 or shape[0] == 1 else "improvedgan"
        if arch == "mlp":
            if len(shape) == 1:  # 2-D points: a small MLP
                return MLP(shape[0], k, (100, 100))
            return MLP(self.info.input_dim, k, MNIST_D_HIDDEN, weight_norm=True, input_noise=0.3, hidden_noise=0.5,
                       wn_init_std=0.1, wn_hidden_scale_trainable=False)
        if arch == "improvedgan":
            width = (64, 128) if self.info.name == "svhn" else (96, 192)
            return ConvNet(shape[0], k, "improvedgan", width=width, weight_norm=True)
        return build_classifier(shape, k, arch)

    def build_generator(self) -> nn.Module:
        cfg = self.cfg
        shape = self.info.input_shape
        arch = cfg.gen_arch
        if arch == "auto":
            return build_generator(cfg.z_dim, shape)
        if arch == "conv":
            return ConvGenerator(cfg.z_dim, shape)
        return MLPGenerator(cfg.z_dim, shape)

    # -- the two players ----------------------------------------------------------------------------------
    def sample_z(self, n: int) -> torch.Tensor:
        """n noise vectors z ~ U(0, 1)^z_dim from the stream data-parallel workers share (`global_rand`)."""
        return self.global_rand(n, self.cfg.z_dim)

    def fm_batch(self, n_unl: int) -> int:
        """N: real samples in G's feature matching (`fm_batch`; 0 = the unlabelled batch T - R)."""
        return self.cfg.fm_batch or n_unl

    def n_fake_d(self, n_unl: int) -> int:
        """Generated samples in D's step (the reference: as many as the unlabelled batch)."""
        return n_unl

    def n_fake_g(self, n_unl: int) -> int:
        """Generated samples in G's step (the reference: as many as the unlabelled batch)."""
        return n_unl

    def d_unl_weight(self) -> float:
        """The factor of L_unl in D's loss."""
        return self.cfg.unl_weight

    def d_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """D's losses on a batch (fresh generated samples, no gradient into G)."""
        with torch.no_grad():
            fake = self.G(self.sample_z(self.n_fake_d(len(batch.x_u))))
        lab = cross_entropy_or_zero(self.D(batch.x_l), batch.y_l)
        logits_fake = self.D(fake)
        unl = unlabelled_loss(self.D(batch.x_u), logits_fake)
        return {"lab": lab, "unl": unl, "d": lab + self.d_unl_weight() * unl}

    def g_loss(self, x_u2: torch.Tensor) -> torch.Tensor:
        """Feature matching between D's features of x_u2 and of freshly generated samples."""
        with torch.no_grad():
            f_real = self.D.features(x_u2)
        fake = self.G(self.sample_z(self.n_fake_g(len(x_u2))))
        return feature_matching_loss(f_real, self.D.features(fake), self.fm_norm)

    def d_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One D step (only D's parameters get gradients: the fake batch is generated without a graph)."""
        d = self.d_losses(batch)
        self.step(self.optimizers["D"], d["d"])
        if self.ema is not None:
            self.ema.update(self.D)
        return d

    def g_step(self, x_u2: torch.Tensor) -> torch.Tensor:
        """One G step with fresh noise; D is frozen so no gradient is spent on it."""
        with frozen(self.D):
            g = self.g_loss(x_u2)
        self.step(self.optimizers["G"], g)
        return g

    def data_init(self, x: torch.Tensor) -> None:
        """The reference's data-dependent init (once, before the first step) of D on `x` and of G's
        data-initialised layers (the CIFAR G's output layer) on as many noise vectors, then a fresh EMA."""
        with train_mode(self.D, self.G):
            weight_norm_data_init(self.D, x)
            weight_norm_data_init(self.G, self.sample_z(len(x)))
        distributed.broadcast_module(self.D)
        distributed.broadcast_module(self.G)
        if self.ema is not None:
            self.ema = EMA(self.D, self.ema.decay, self.ema.warmup)
        self.initialised = True

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not self.initialised:
            self.data_init(batch.x_all)
        d = self.d_step(batch)
        real = batch.x_u2 if batch.x_u2 is not None else batch.x_u
        g = self.g_step(real[:self.fm_batch(len(batch.x_u))])
        return {"loss_lab": d["lab"].detach(), "loss_unl": d["unl"].detach(), "loss_g": g.detach()}

    # -- evaluation ----------------------------------------------------------------------------------------
    def trained_net(self) -> nn.Module:
        return self.D

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.G):
            return self.G(z.to(self.device))

    @torch.no_grad()
    def eval_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """On validation data, with the evaluation network (EMA weights if kept): mean prediction
        confidence p_max, mean D(real), and mean D(fake) on as many generated samples."""
        from ..data.base import to_float

        xs = to_float(x[:len(self.eval_z)])
        logits = self.predict(xs)
        logits_fake = self.predict(self.generate(self.eval_z[:len(xs)]))
        return {"confidence": float(confidence(logits).mean()), "d_real": float(d_real_prob(logits).mean()),
                "d_fake": float(d_real_prob(logits_fake).mean())}

    def pictures(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        if not self.info.is_image:
            return {}
        return {"samples": image_grid(self.generate(self.picture_z), nrow=10)}

    def extra_state(self) -> dict:
        state: dict = {"initialised": self.initialised}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        self.initialised = bool(state.get("initialised", self.initialised))
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
