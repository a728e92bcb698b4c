"""TensorBoard logging (rank 0 only): scalars per epoch, pictures, and the HParams entry of a run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

SCALAR_GROUPS = (("val_error", "error/val"), ("test_error", "error/test"), ("best_val_error", "error/best_val"),
                 ("test_error_at_best_val", "error/test_at_best_val"))


def scalar_tag(key: str) -> str:
    for k, tag in SCALAR_GROUPS:
        if key == k:
            return tag
    if key.startswith("loss_"):
        return "loss/" + key[5:]
    if key.startswith("lr_"):
        return "lr/" + key[3:]
    if key in ("samples_per_second", "epoch_seconds"):
        return "perf/" + key
    return "metrics/" + key


class TBLogger:
    def __init__(self, log_dir: str | os.PathLike):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.dir))

    def scalars(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in metrics.items():
            if k in ("epoch", "step") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if np.isfinite(v):
                self.writer.add_scalar(scalar_tag(k), v, step)
        self.writer.flush()  # once per epoch: the files are complete whenever Tune copies them to storage

    def image(self, name: str, img: np.ndarray, step: int) -> None:
        """img: H x W x 3 uint8. Also saved as <log_dir>/pictures/<name>.png (the latest epoch)."""
        self.writer.add_image(name, img, step, dataformats="HWC")
        from PIL import Image

        pdir = self.dir / "pictures"
        pdir.mkdir(exist_ok=True)
        safe = name.replace("/", "_")
        Image.fromarray(img).save(pdir / f"{safe}.png")

    def hparams(self, config: dict[str, Any], searched: list[str] | None = None) -> None:
        """Write this run's HParams entry into its own event file. The metrics it names are the scalars the
        loop logs each epoch, so the HParams dashboard compares runs (stopped early or not) by them.
        With `searched` (a Tune trial), only those hyperparameters are HParams columns; every value, the
        constants included, goes to the run's text tab as a `config` table."""
        from torch.utils.tensorboard.summary import hparams

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
        if searched:
            shown = {k: clean[k] for k in searched if k in clean}
            rows = "\n".join(f"| {k} | {v} | {'searched' if k in shown else 'fixed'} |" for k, v in clean.items())
            self.writer.add_text("config", "| hyperparameter | value | |\n|---|---|---|\n" + rows, 0)
            clean = shown
        tags = {tag: 0.0 for _, tag in SCALAR_GROUPS} | {"error/test_at_best_val": 0.0}
        exp, ssi, sei = hparams(clean, tags)
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
