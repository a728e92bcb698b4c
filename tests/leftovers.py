"""The folders a Ray Train worker of ssl-ray stages in this machine's temp folder (train_ray.worker_loop: the
TensorBoard files of a run in a bucket, the divergence marker), which it removes when it ends; a test compares
the set before and after a run."""
from __future__ import annotations

import tempfile
from pathlib import Path


def staged() -> set[Path]:
    tmp = Path(tempfile.gettempdir())
    return set(tmp.glob("ssl_ray_tb_*")) | set(tmp.glob("ssl_ray_diverged_*"))
