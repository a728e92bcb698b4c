"""What was typed, turned into typed options and checked below the command line, so that Python callers (the
benchmarks, `compare`) get the same checks and defaults as the commands."""
from __future__ import annotations

from click.testing import CliRunner

from ssl_ray.cli import main
from ssl_ray.tuning.resources import GPU_RULE


def test_compare_takes_tunes_gpu_default():
    """`compare` runs `tune`'s searches: GPUs per trial by the same rule (None until the search starts), not 0."""
    text = " ".join(CliRunner().invoke(main, ["compare", "--help"], terminal_width=400).output.split())
    assert GPU_RULE in text
    param = next(p for p in main.commands["compare"].params if p.name == "gpus_per_trial")
    assert param.default is None
