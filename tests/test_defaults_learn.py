"""Every registered SSL method, run the way a user runs it (`ssl-ray train METHOD`: the CLI's default dataset
and labels, no --set), learns: a short budget of the same code path must be far below chance (90 % on digits).

The full budget (the CLI's 20 epochs, seeds 1 and 2, against `supervised`) is benchmarks/defaults_table.py,
with its table in docs/results-defaults.md.
"""
import sys
from pathlib import Path

import pytest
import torch

from ssl_ray.data import DataSpec
from ssl_ray.methods import list_methods

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from defaults_table import cli_default, run_default  # noqa: E402

SSL = [m.name for m in list_methods() if m.uses_labels and not m.clustering]
EPOCHS = 4  # ~44 GAN steps: enough to separate "learns" from "chance", a few seconds per method


def test_the_check_uses_the_cli_defaults():
    assert DataSpec().name == "digits" and DataSpec().labels == 50
    assert cli_default("epochs") == 20
    assert {"improvedgan", "i2gan", "vat", "advgen", "entropy", "supervised"} <= set(SSL)


@pytest.mark.parametrize("method", SSL)
def test_default_config_learns(method):
    torch.set_num_threads(1)
    out = run_default(method, seed=1, epochs=EPOCHS)
    assert 0.0 <= out["test_error"] < 45.0, f"{method} at its defaults: {out['test_error']:.1f}% (chance 90%)"
