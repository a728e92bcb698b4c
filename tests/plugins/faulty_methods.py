"""Test plugin (loaded through $SSL_RAY_PLUGINS): the supervised baseline with faults that real training
meets — a loss that becomes NaN at a given epoch, and a crash (once) at a given epoch. Each attempt's epochs
are appended to a log file so tests can see whether a retry resumed from its checkpoint."""
from dataclasses import dataclass

import torch

from ssl_ray.config import hp
from ssl_ray.methods.registry import register
from ssl_ray.methods.supervised import Supervised, SupervisedConfig


@dataclass
class FaultyConfig(SupervisedConfig):
    nan_epoch: int = hp(0, "epoch (1-based) whose steps produce a NaN loss; 0 = never", low=0)
    crash_epoch: int = hp(0, "epoch whose first step raises, once per marker file; 0 = never", low=0)
    marker: str = hp("", "file that records the crash happened (so the retry passes) and the epochs run")
    hold_after_epoch: int = hp(0, "at the first step after this epoch, wait (<= 300 s) until the file marker.go "
                                  "exists, so a test can act between two epochs however fast they run; 0 = never",
                               low=0)


@register
class Faulty(Supervised):
    name = "faulty"
    Config = FaultyConfig
    paper = "test plugin"

    def build(self) -> None:
        super().build()
        self.epoch_now = 1

    def train_step(self, batch):
        cfg: FaultyConfig = self.cfg  # type: ignore[assignment]
        if cfg.crash_epoch and self.epoch_now == cfg.crash_epoch and cfg.marker:
            import os

            crashed = cfg.marker + ".crashed"
            if not os.path.exists(crashed):
                open(crashed, "w").close()
                raise RuntimeError("simulated CUDA out of memory")
        if cfg.hold_after_epoch and self.epoch_now == cfg.hold_after_epoch + 1 and cfg.marker:
            import os
            import time

            deadline = time.time() + 300
            while not os.path.exists(cfg.marker + ".go") and time.time() < deadline:
                time.sleep(0.05)
        out = super().train_step(batch)
        if cfg.nan_epoch and self.epoch_now >= cfg.nan_epoch:
            out["loss_lab"] = out["loss_lab"] * torch.tensor(float("nan"))
        return out

    def end_epoch(self, epoch: int):
        if self.cfg.marker:
            with open(self.cfg.marker, "a") as f:
                f.write(f"{epoch}\n")
            import os

            with open(self.cfg.marker + ".pids", "a") as f:  # the process that ran the epoch (tests kill it)
                f.write(f"{os.getpid()}\n")
        self.epoch_now = epoch + 1
        return super().end_epoch(epoch)

    def extra_state(self):
        return {"epoch_now": self.epoch_now}

    def load_extra_state(self, state):
        self.epoch_now = int(state.get("epoch_now", 1))
