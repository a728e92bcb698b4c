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


def test_i2gan_default_space_searches_the_slides_i2gan_and_hides_no_default():
    """tau > 1 on the slides' L_u (= 2 x L_unl, so tau > 2 here) and N' > N (N = T - R unlabelled) in every
    trial the default space can sample; the EMA is the method's default (no fixed ema_decay crutch)."""
    from ssl_ray.data.splits import batch_composition
    from ssl_ray.methods.i2gan import I2GANConfig
    from ssl_ray.tuning.spaces import SPACES_DIR, load_space

    space = load_space(SPACES_DIR / "i2gan.yaml")
    assert "ema_decay" not in space.fixed and "ema_warmup" not in space.fixed
    assert space.search["tau"].args[0] > 2.0
    t = space.fixed.get("batch_size", I2GANConfig().batch_size)
    lo_ratio = space.search["labeled_ratio"].args[0]
    n_max = max(batch_composition(t, r)[1] for r in (lo_ratio, lo_ratio + 1e-9))
    assert min(space.search["n_fake"].args) > n_max
    for name in ("improvedgan.yaml", "i2gan.yaml"):
        assert "ema_decay" not in load_space(SPACES_DIR / name).fixed
