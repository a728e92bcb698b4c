"""An experiment's own files and `--resume` rebuilt from them, without Ray: the options a resume may change (where
and how fast it runs) are taken, the rest must agree with the saved experiment."""
from __future__ import annotations

import pytest

from ssl_ray.errors import SSLRayError
from ssl_ray.tuning import experiment
from ssl_ray.tuning.options import TuneOptions
from ssl_ray.tuning.spaces import parse_space

SPACE = """
method: supervised
dataset: {name: digits, labels: 20}
search: {lr: {choice: [0.001, 0.002]}}
scheduler: {name: asha, max_epochs: 3, grace_epochs: 1}
num_samples: 1
"""


@pytest.fixture
def saved(tmp_path):
    """A saved (never run) experiment: its space, options and plan, as run_tune writes them."""
    from ssl_ray.tuning.tune import _save_space

    space = parse_space(SPACE, source="space.yaml")
    opts = TuneOptions(storage=str(tmp_path), name="x", gpus_per_trial=0.0)
    plan = experiment.make_plan(space, opts.seed)
    _save_space(f"{tmp_path}/x", space, opts, plan)
    return tmp_path


def test_a_resume_may_wait_for_resources(saved):
    """--wait-for-resources is where and how it runs (a cluster that grows), not what it computes."""
    _, opts = experiment.resume_setup("supervised", {"wait_for_resources": True}, str(saved), "x")
    assert opts.wait_for_resources is True and opts.resume
    _, opts = experiment.resume_setup("supervised", {"wait_for_resources": False}, str(saved), "x")
    assert opts.wait_for_resources is False
    _, opts = experiment.resume_setup("supervised", {}, str(saved), "x")
    assert opts.wait_for_resources is None


def test_a_resume_takes_the_saved_settings_and_refuses_contradictions(saved):
    space, opts = experiment.resume_setup("supervised", {"max_concurrent": 1, "num_samples": 3}, str(saved), "x")
    assert space.method == "supervised" and space.data.labels == 20 and space.scheduler.max_epochs == 3
    assert opts.max_concurrent == 1 and opts.num_samples == space.num_samples == 3  # an extension
    with pytest.raises(SSLRayError, match="--max-epochs 9 contradicts"):
        experiment.resume_setup("supervised", {"max_epochs": 9}, str(saved), "x")
    with pytest.raises(SSLRayError, match="--set lr=0.1 contradicts"):
        experiment.resume_setup("supervised", {"sets": ("lr=0.1",)}, str(saved), "x")
