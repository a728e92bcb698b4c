"""The method interface.

A method is plain PyTorch and knows nothing of Ray:

- ``Config``: a dataclass of documented hyperparameters (see :mod:`ssl_ray.config`);
- ``build()``: its models and optimisers, from the config and the dataset's shape;
- ``train_step(batch)``: one step on an R/T batch; it owns its optimiser steps (a GAN takes a D step
  then a G step) and returns its losses as 0-d tensors (no ``.item()``: the loop syncs once per epoch);
- ``predict(x)``: class logits for evaluation (EMA weights where the method keeps them).

What the loop reads besides (each with a default here): ``num_clusters`` (clustering methods: how many
cluster ids predictions take), ``all_modules()`` (every module whose buffers evaluation uses, including
copies no optimiser steps, such as EMA weights), ``export_module()`` (the module computing ``predict``, which
`ssl-ray export` writes), and the players: each optimiser in ``self.optimizers`` is
one player and steps exactly its own parameters (the registry test checks that a step of one player moves
no other player's parameters).

``Method`` is generic in its config: ``class VAT(ClassifierMethod[VATConfig])`` types ``self.cfg``.

Every optimiser step goes through :meth:`Method.step`, which also averages the gradients of exactly the
parameters being updated across data-parallel workers. That is why the methods need no
DistributedDataParallel wrapper: in a two-player step the other player's forward pass can never trigger
an all-reduce, and each phase synchronises only what it updates.
"""
from __future__ import annotations

from typing import Any, ClassVar, Generic, Iterable, TypeVar

import torch
from torch import nn

from ..config import BaseConfig
from ..data import Batch, DataInfo
from ..errors import SSLRayError
from ..nn import distributed
from ..nn.devices import to_device
from ..nn.modes import no_autocast

C = TypeVar("C", bound=BaseConfig)


class Method(Generic[C]):
    name: ClassVar[str] = ""
    """Registry key (``ssl-ray train NAME``)."""
    Config: ClassVar[type[BaseConfig]] = BaseConfig
    paper: ClassVar[str] = ""
    """The paper (or reference code) the method follows."""
    uses_labels: ClassVar[bool] = True
    """False for unsupervised methods (vcagan, gan, infogan): batches carry no labelled part."""
    second_unlabelled: ClassVar[bool] = False
    """True when train_step needs a second, independent unlabelled batch (`batch.x_u2`)."""
    clustering: ClassVar[bool] = False
    """True when predictions are cluster ids: errors are then measured after Hungarian matching."""
    augments_itself: ClassVar[bool] = False
    """True when train_step draws its own augmented views (fixmatch, meanteacher, pseudolabel). Otherwise a
    config with an `augment` field (data.augment.AugmentConfig) is served batches the training loop augmented."""

    def __init__(self, cfg: C, info: DataInfo, device: torch.device | str = "cpu"):
        self.cfg: C = cfg
        self.info = info
        self.device = torch.device(device)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.rank, self.world = distributed.rank_and_world()
        self.noise_gen = torch.Generator().manual_seed(0)  # reseeded by the Trainer; identical on all ranks
        # global_rand's stream: on a GPU a generator there (drawing on the host would copy every draw, and each
        # copy from pageable memory waits for the GPU); elsewhere the host stream itself (the CPU numbers)
        self.device_noise_gen = (torch.Generator(device=self.device).manual_seed(0) if self.device.type == "cuda"
                                 else self.noise_gen)
        self.build()
        self.to_device()
        self._built_groups = self._group_settings()  # what build() made of self.cfg: apply_hparams puts it back

    # ---- to implement -------------------------------------------------------------------------
    def build(self) -> None:
        """Create self.modules and self.optimizers."""
        raise NotImplementedError

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) for float inputs x, in eval mode, without gradients."""
        raise NotImplementedError

    # ---- optional hooks ---------------------------------------------------------------------------
    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after each epoch (learning-rate schedules, extra metrics such as a learned prior)."""
        for s in self.schedulers.values():
            s.step()
        return {}

    def extra_state(self) -> dict[str, Any]:
        """State beyond modules and optimisers (EMA weights, a learned prior) for checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def pictures(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Images worth looking at (name -> HxWx3 uint8 array) for validation data x, y; {} by default."""
        return {}

    def eval_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Extra evaluation metrics on validation data (beyond the error rate)."""
        return {}

    # ---- what the loop reads (declared here, overridden where a method differs) --------------------------
    @property
    def num_clusters(self) -> int:
        """Clustering methods: the number of cluster ids predictions can take (Hungarian matching maps them to
        classes); the dataset's number of classes by default."""
        return self.info.num_classes

    def export_module(self) -> nn.Module:
        """The module that computes :meth:`predict` (float inputs -> logits), in eval mode: what `ssl-ray export`
        writes and traces. ClassifierMethod: its `net`; EMAEvaluated: the network it evaluates (EMA weights where
        kept); a method whose predict is no single module's forward pass (the plain GAN's nearest generated
        sample, a conditional GAN's class head) returns a module that computes it. By default the method's
        `eval_net` or `net` module (a plugin's too)."""
        for name in ("eval_net", "net"):
            net = getattr(self, name, None)
            if isinstance(net, nn.Module):
                return net.eval()
        raise SSLRayError(f"cannot export method {type(self).__name__}: it has no `net`/`eval_net` module; give it "
                          f"an export_module() that returns the module computing its predict()")

    def all_modules(self) -> list[nn.Module]:
        """Every module the method uses: `modules` plus copies no optimiser steps (EMA weights, a teacher). All of
        them are moved to the method's device after build() (:meth:`to_device`); before evaluating, the loop gives
        every data-parallel worker rank 0's buffers (BatchNorm statistics) of these."""
        return list(self.modules.values())

    # ---- shared machinery ------------------------------------------------------------------------
    def to_device(self) -> None:
        """Move every module the method uses to its device: `modules` and the copies no optimiser steps (EMA
        weights, a teacher), i.e. all_modules(). Called after build(); a method that rebuilds a module later
        builds it from one already on the device (deepcopy keeps the device).

        build() makes the optimisers before this move. Moving to a GPU keeps each Parameter object (only its data
        changes), but not every move does (to `meta`; any move under torch.__future__'s overwrite option): the
        optimisers are pointed at the moved parameters, found by module and name."""
        modules = self.all_modules()
        where = {id(p): (i, name) for i, m in enumerate(modules) for name, p in m.named_parameters()}
        for m in modules:
            m.to(self.device)
        moved = {(i, name): p for i, m in enumerate(modules) for name, p in m.named_parameters()}
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["params"] = [moved[where[id(p)]] if id(p) in where else p for p in group["params"]]

    def seed_noise(self, seed: int) -> None:
        """Seed the noise streams all ranks share (`noise_gen` on the host, global_rand's on the device)."""
        self.noise_gen.manual_seed(seed)
        if self.device_noise_gen is not self.noise_gen:
            self.device_noise_gen.manual_seed(seed)

    def noise_state(self) -> dict[str, torch.Tensor]:
        """The shared noise streams' state, for checkpoints."""
        state = {"host": self.noise_gen.get_state()}
        if self.device_noise_gen is not self.noise_gen:
            state["device"] = self.device_noise_gen.get_state()
        return state

    def load_noise_state(self, state: dict[str, torch.Tensor] | torch.Tensor) -> None:
        """Restore :meth:`noise_state` (or a checkpoint's bare host state, from before the device stream). A
        device stream saved on another kind of device (a GPU run resumed on a CPU) is not restored: the host
        stream continues exactly, the device draws start from this run's seed."""
        if isinstance(state, torch.Tensor):
            state = {"host": state}
        self.noise_gen.set_state(state["host"])
        if self.device_noise_gen is not self.noise_gen and "device" in state:
            self.device_noise_gen.set_state(state["device"])

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
             params: Iterable[torch.nn.Parameter] | None = None) -> None:
        """zero_grad -> backward (gradients averaged across workers as they are produced) -> optimizer.step().

        Only the optimizer's parameters are synchronised and stepped; gradients that the backward pass
        leaves on other modules' parameters are cleared by those modules' own step.
        """
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
        params = list(params)
        optimizer.zero_grad(set_to_none=True)
        # backward outside mixed precision; with N workers the gradient all-reduce overlaps it (bucketed)
        with no_autocast(self.device), distributed.averaged_backward(params):
            loss.float().backward()
        optimizer.step()

    def global_rand(self, n: int, *shape: int, normal: bool = False) -> torch.Tensor:
        """This worker's n noise samples (uniform [0, 1) or standard normal), cut from the world * n samples of
        a stream all workers share: noise stays independent across workers, and N workers together draw
        exactly the noise one worker with an N times larger batch would (what makes data parallelism exact).
        On a GPU the samples are drawn there (no copy, no wait); on the CPU from the host stream."""
        draw = torch.randn if normal else torch.rand
        gen = self.device_noise_gen
        full = draw((self.world * n, *shape), generator=gen, device=gen.device)
        return to_device(full[self.rank * n:(self.rank + 1) * n], self.device)

    def global_multinomial(self, probs: torch.Tensor, n: int) -> torch.Tensor:
        """n categorical samples from probs, drawn like :meth:`global_rand` (inverse CDF of shared uniforms)."""
        u = self.global_rand(n)
        cdf = probs.detach().float().cumsum(0).to(self.device)
        return torch.searchsorted(cdf / cdf[-1], u.clamp_max(1 - 1e-7)).clamp_max(len(probs) - 1)

    def train(self) -> None:
        for m in self.modules.values():
            m.train()

    def eval(self) -> None:
        for m in self.modules.values():
            m.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. Networks of other sizes than this method builds (a checkpoint written
        under another config, or before a default changed) are one SSLRayError naming the network and the first
        difference, not torch's paragraph."""
        for k, m in self.modules.items():
            try:
                m.load_state_dict(state["modules"][k])
            except RuntimeError as e:  # torch: size mismatch, missing or unexpected keys
                detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e)).rstrip(".")
                raise SSLRayError(f"the checkpoint's {k} does not fit the {self.name} network this config builds "
                                  f"({detail}): it was written with other sizes (another config, or a default "
                                  f"that has changed since it was written)") from None
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.load_extra_state(state.get("extra", {}))

    def _group_settings(self) -> dict[str, list[dict[str, Any]]]:
        """Every optimiser param group's settings (lr, betas, weight_decay, a scheduler's initial_lr...)."""
        return {k: [{s: v for s, v in g.items() if s != "params"} for g in o.param_groups]
                for k, o in self.optimizers.items()}

    def apply_hparams(self) -> None:
        """Make the optimisers follow this method's own config again after :meth:`load_state_dict`.

        A checkpoint's optimiser state carries the hyperparameters it was trained with (each param group's lr,
        betas, weight decay; each LR scheduler's base_lrs): when PBT restarts a trial from another trial's
        checkpoint with a mutated config, loading it would silently bring back the donor's old values. This puts
        back the settings :meth:`build` made from ``self.cfg`` (recorded at construction), keeping what is
        learned or counted: the weights, the optimisers' moments and step counts, each scheduler's epoch.

        - every param-group setting but ``lr`` is the built one (betas, weight_decay, eps, initial_lr...);
        - a group no scheduler drives gets its built ``lr``;
        - a scheduled group (one with ``initial_lr``) gets its new base lr and the lr its schedule gives at the
          restored epoch: LambdaLR computes ``base_lr * lambda(epoch)`` with the lambda built from the new
          config (as its own step does); any other scheduler's restored lr is scaled by new base / old base.

        With an unchanged config every value it writes is the one already there, so a plain resume stays
        bitwise exact. Hyperparameters read from ``self.cfg`` at each step (loss weights, EMA decay) need
        nothing: the config is the new one. Called by Trainer.restore."""
        for name, opt in self.optimizers.items():
            for group, built in zip(opt.param_groups, self._built_groups[name]):
                old_base, lr = group.get("initial_lr"), group["lr"]
                group.update({k: v for k, v in built.items() if k != "lr"})
                if "initial_lr" in built and old_base:
                    group["lr"] = lr * (built["initial_lr"] / old_base)
                else:
                    group["lr"] = built["lr"]
        for sched in self.schedulers.values():
            groups = sched.optimizer.param_groups
            sched.base_lrs = [g["initial_lr"] for g in groups]
            if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
                for g, base, f in zip(groups, sched.base_lrs, sched.lr_lambdas):
                    g["lr"] = base * f(sched.last_epoch)
            sched._last_lr = [g["lr"] for g in groups]

