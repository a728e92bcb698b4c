"""PBT (`scheduler: {name: pbt}`): mutations built from a search space, the trainer re-applying a trial's own
hyperparameters after it is restored from another trial's checkpoint, and one real PBT search on a local Ray
instance in which a trial is cloned (its lr mutated) and goes on training with the new lr."""
import json
import math
import os
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.errors import ConfigError
from ssl_ray.tuning.schedulers.pbt import clip, hyperparam_mutations, mutable_keys
from ssl_ray.tuning.spaces import parse_space

SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 32}
search:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  weight_decay: {quniform: [0.0, 0.1, 0.02]}
  arch: {choice: [mlp, conv_small]}
  steps_per_epoch: {grid: [5, 10]}
scheduler: {name: pbt, max_epochs: 8, perturbation_interval: 2}
"""


# ---- (a) the mutations ------------------------------------------------------------------------------------
def test_mutations_cover_the_searched_non_grid_hyperparameters():
    from ray.tune.search.sample import Domain

    space = parse_space(SPACE, source="s.yaml")
    assert mutable_keys(space) == ["lr", "weight_decay", "arch"]  # grid and fixed ones are not mutated
    m = hyperparam_mutations(space)
    assert set(m) == {"lr", "weight_decay", "arch"}
    assert m["arch"] == ["mlp", "conv_small"]  # choice: Ray's list rule (resample or a neighbour)
    assert isinstance(m["lr"], Domain) and isinstance(m["weight_decay"], Domain)


def test_explored_configs_stay_in_bounds_and_leave_fixed_keys_alone():
    from ray.tune.schedulers.pbt import _explore  # Ray's own explore step, as PopulationBasedTraining runs it

    space = parse_space(SPACE, source="s.yaml")
    m = hyperparam_mutations(space)
    random.seed(0)
    base = {"lr": 9e-3, "weight_decay": 0.1, "arch": "mlp", "steps_per_epoch": 5, "batch_size": 32,
            "_ssl_ray": {"index": 3}}
    seen_lr, seen_arch = set(), set()
    for _ in range(200):
        new, ops = _explore(base, m, 0.25, (1.2, 0.8), None)
        new = clip(space, new)
        assert 1e-4 <= new["lr"] <= 1e-2
        assert 0.0 <= new["weight_decay"] <= 0.1
        assert math.isclose(new["weight_decay"] / 0.02, round(new["weight_decay"] / 0.02), abs_tol=1e-9)
        assert new["arch"] in ("mlp", "conv_small")
        assert new["steps_per_epoch"] == 5 and new["batch_size"] == 32 and new["_ssl_ray"] == {"index": 3}
        if ops["lr"] == "* 0.8":
            assert new["lr"] == pytest.approx(9e-3 * 0.8, rel=1e-12)
        if ops["lr"] == "* 1.2":
            assert new["lr"] == 1e-2  # 1.08e-2 clipped to the high bound
        seen_lr.add(ops["lr"])
        seen_arch.add(new["arch"])
    assert seen_lr == {"* 0.8", "* 1.2", "resample"}
    assert seen_arch == {"mlp", "conv_small"}


def test_clip_rounds_integers_and_steps():
    space = parse_space(SPACE.replace("weight_decay: {quniform: [0.0, 0.1, 0.02]}",
                                      "batch_size: {randint: [8, 64]}").replace("fixed: {batch_size: 32}", ""),
                        source="s.yaml")
    assert clip(space, {"batch_size": 76.8})["batch_size"] == 63  # randint's high is exclusive
    assert clip(space, {"batch_size": 19.2})["batch_size"] == 19
    assert clip(space, {"lr": 1e-5, "arch": "mlp"}) == {"lr": 1e-4, "arch": "mlp"}


@pytest.mark.parametrize("scheduler, where, says", [
    ("{name: pbt, max_epochs: 2, perturbation_interval: 2}", "perturbation_interval", "must be below max_epochs"),
    ("{name: pbt, quantile_fraction: 0.7}", "quantile_fraction", "(0, 0.5]"),
    ("{name: pbt, mutate: [batch_size]}", "mutate", "'batch_size' is not searched"),
    ("{name: pbt, mutate: [steps_per_epoch]}", "mutate", "grid"),
    ("{name: pbt, synch: 1}", "synch", "true or false"),
    ("{name: pbt, resample_probability: 1.5}", "resample_probability", "[0, 1]"),
])
def test_pbt_settings_are_validated_with_file_line_and_key(scheduler, where, says):
    text = SPACE.replace("{name: pbt, max_epochs: 8, perturbation_interval: 2}", scheduler)
    with pytest.raises(ConfigError) as e:
        parse_space(text, source="s.yaml")
    assert f"s.yaml:9: scheduler.{where}: " in str(e.value) and says in str(e.value), str(e.value)


def test_pbt_settings_need_the_pbt_scheduler_and_something_to_mutate():
    with pytest.raises(ConfigError, match=r"s.yaml:9: scheduler.perturbation_interval: a PBT setting, but the "
                                          r"scheduler is asha"):
        parse_space(SPACE.replace("name: pbt", "name: asha").replace("interval: 2", "interval: 3"), source="s.yaml")
    grid_only = SPACE.replace("  lr: {loguniform: [1.0e-4, 1.0e-2]}\n  weight_decay: {quniform: [0.0, 0.1, 0.02]}\n"
                              "  arch: {choice: [mlp, conv_small]}\n", "")
    with pytest.raises(ConfigError, match="scheduler.name: pbt mutates searched hyperparameters"):
        parse_space(grid_only, source="s.yaml")
    # an ASHA space's saved scheduler (every key, PBT ones at their defaults) still parses: resumes keep working
    s = parse_space(SPACE.replace("name: pbt", "name: asha").replace(", perturbation_interval: 2", ""))
    saved = json.dumps({"method": "supervised", "search": {"lr": {"loguniform": [1e-4, 1e-2]}},
                        "scheduler": vars(s.scheduler)})
    assert parse_space(saved).scheduler.name == "asha"


# ---- (b) the hook: a restored trainer follows its own config ------------------------------------------------
def _spec(method: str, config: dict, epochs: int) -> RunSpec:
    data = DataSpec("circles", labels=8, val_size=100, options={"n_train": 500, "n_test": 200})
    return RunSpec(method, data, epochs=epochs, seed=3, config={"batch_size": 16, "steps_per_epoch": 2, **config})


def _saved_state(method: str, config: dict, tmp_path) -> dict:
    donor = Trainer(_spec(method, config, epochs=1), progress=False)
    donor.fit()
    checkpoint.save(tmp_path, donor.state())
    return checkpoint.load(tmp_path)


def test_restore_with_a_new_lr_uses_it_and_keeps_the_checkpoint_weights(tmp_path):
    state = _saved_state("supervised", {"lr": 1e-3, "weight_decay": 0.0}, tmp_path)
    tr = Trainer(_spec("supervised", {"lr": 4e-3, "weight_decay": 1e-4}, epochs=2), progress=False)
    tr.restore(state)
    groups = tr.method.optimizers["opt"].param_groups
    assert [g["lr"] for g in groups] == [4e-3] and [g["weight_decay"] for g in groups] == [1e-4]
    for k, v in tr.method.modules["net"].state_dict().items():
        assert torch.equal(v, state["method"]["modules"]["net"][k]), k
    moments = tr.method.optimizers["opt"].state_dict()["state"]
    for i, s in state["method"]["optimizers"]["opt"]["state"].items():  # Adam's moments: the donor's
        assert torch.equal(moments[i]["exp_avg"], s["exp_avg"]) and torch.equal(moments[i]["step"], s["step"])
    m = tr.fit()
    assert m["lr_opt"] == 4e-3  # the next epoch trained with it


def test_restore_with_new_lr_and_betas_under_an_lr_schedule(tmp_path):
    """ImprovedGAN: two Adam players with beta1 from the config and a LambdaLR linear decay. After a restore
    with a new lr, beta1 and decay end, the schedule continues from the restored epoch with the new base lr."""
    old = {"lr": 1e-3, "beta1": 0.5, "lr_decay_start": 0, "lr_decay_end": 3, "data_init": False}
    new = {"lr": 2e-3, "beta1": 0.3, "lr_decay_start": 0, "lr_decay_end": 5, "data_init": False}
    state = _saved_state("improvedgan", old, tmp_path)
    saved_lr, = [g["lr"] for g in state["method"]["optimizers"]["D"]["param_groups"]]
    assert saved_lr == pytest.approx(1e-3 * (3 - 1) / 3, rel=1e-12)  # the donor's lr after 1 epoch of decay
    tr = Trainer(_spec("improvedgan", new, epochs=3), progress=False)
    tr.restore(state)
    assert tr.epoch == 1
    for name in ("D", "G"):
        g, = tr.method.optimizers[name].param_groups
        assert g["lr"] == pytest.approx(2e-3 * (5 - 1) / 5, rel=1e-12)  # new base x new factor at epoch 1
        assert g["initial_lr"] == 2e-3 and g["betas"] == (0.3, 0.999)
        assert tr.method.schedulers[name].base_lrs == [2e-3]
        assert tr.method.schedulers[name].last_epoch == 1
    for k, v in tr.method.modules["D"].state_dict().items():
        assert torch.equal(v, state["method"]["modules"]["D"][k]), k
    tr.run_epoch()  # epoch 2: the decay goes on from the restored epoch, with the new base lr and end
    for name in ("D", "G"):
        assert tr.method.optimizers[name].param_groups[0]["lr"] == pytest.approx(2e-3 * (5 - 2) / 5, rel=1e-12)


def test_restore_with_the_same_config_changes_no_setting(tmp_path):
    cfg = {"lr": 1e-3, "beta1": 0.5, "lr_decay_start": 0, "lr_decay_end": 3, "data_init": False}
    state = _saved_state("improvedgan", cfg, tmp_path)
    tr = Trainer(_spec("improvedgan", cfg, epochs=3), progress=False)
    tr.restore(state)
    for name in ("D", "G"):
        saved = {k: v for k, v in state["method"]["optimizers"][name]["param_groups"][0].items() if k != "params"}
        now = {k: v for k, v in tr.method.optimizers[name].param_groups[0].items() if k != "params"}
        assert now == saved  # bitwise: a plain resume is untouched


# ---- (c) one real PBT search ----------------------------------------------------------------------------
REAL = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 32, steps_per_epoch: 5}
search:
  lr: {loguniform: [1.0e-4, 3.0e-2]}
scheduler: {name: pbt, max_epochs: 4, perturbation_interval: 2, quantile_fraction: 0.5, resample_probability: 0.0,
            synch: true}
num_samples: 2
"""


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.ray
def test_pbt_search_clones_a_trial_which_trains_on_with_the_mutated_lr(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(REAL)
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    storage = str(tmp_path / "runs")
    r = _cli("tune", "supervised", "--space", str(space), "--json", "--quiet", "--storage", storage, "--name", "pbt",
             "--seed", "1", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_trials"] == 2 and s["num_errored"] == 0 and s["num_completed"] == 2
    assert s["scheduler"]["name"] == "pbt" and s["pbt"]["exploits"] == 1
    assert "PBT: 1 exploit (" in r.stderr and "pbt_global.txt" in r.stderr  # the human summary says where
    exp = tmp_path / "runs" / "pbt"
    plan = json.loads((exp / "ssl_ray_space.json").read_text())["plan"]
    exploits = json.loads((exp / "ssl_ray_pbt.json").read_text())
    # synchronous, 2 trials, quantile 0.5: at epoch 2 the worse one clones the better one; none at the last epoch
    assert len(exploits) == 1, exploits
    e, = exploits
    assert e["epoch"] == 2 and e["clone_epoch"] == 2 and {e["index"], e["clone_of"]} == {0, 1}
    assert e["clone_config"] == plan[e["clone_of"]] and e["config_before"] == plan[e["index"]]
    factor = {"* 0.8": 0.8, "* 1.2": 1.2}[e["operations"]["lr"]]
    new_lr = e["config"]["lr"]
    assert new_lr == pytest.approx(min(3e-2, plan[e["clone_of"]]["lr"] * factor), rel=1e-12)
    # the config each trial ended with: the mutated one for the clone, the planned one for the other
    records = json.loads((exp / "ssl_ray_trials.json").read_text())
    by_index = {rec["index"]: rec for rec in records.values()}
    assert by_index[e["index"]]["config"] == {"lr": new_lr}
    assert by_index[e["clone_of"]]["config"] == plan[e["clone_of"]]
    rows = {row["path"].rsplit("_", 1)[-1]: row for row in pq.read_table(exp / "results.parquet").to_pylist()}
    assert rows[str(e["index"])]["config/lr"] == new_lr != plan[e["index"]]["lr"]
    # the cloned trial trained on with the new lr (Method.apply_hparams), from the clone's epoch
    folder = exp / by_index[e["index"]]["dir"]
    results = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    assert [(x["epoch"], x["lr_opt"]) for x in results] == [
        (1, plan[e["index"]]["lr"]), (2, plan[e["index"]]["lr"]), (3, new_lr), (4, new_lr)]
    assert (exp / "pbt_global.txt").exists()  # Ray's own policy log, in the experiment folder
    # --resume of a PBT search: one line saying why not, before Ray starts
    r = _cli("tune", "supervised", "--storage", storage, "--name", "pbt", "--resume", env=env)
    assert r.returncode != 0
    assert "is a PBT search, which cannot be resumed" in r.stderr and "Traceback" not in r.stderr


def test_cli_scheduler_pbt_and_perturbation_interval(tmp_path):
    """`--scheduler pbt --perturbation-interval K` on top of an ASHA space: the dry run's plan says PBT."""
    space = tmp_path / "space.yaml"
    space.write_text(REAL.replace("scheduler: {name: pbt, max_epochs: 4, perturbation_interval: 2, quantile_fraction: "
                                  "0.5, resample_probability: 0.0,\n            synch: true}",
                                  "scheduler: {name: asha, max_epochs: 6, grace_epochs: 1}"))
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    r = _cli("tune", "supervised", "--space", str(space), "--scheduler", "pbt", "--perturbation-interval", "3",
             "--dry-run", "--json", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    p = json.loads(r.stdout.strip().splitlines()[-1])
    assert (p["scheduler"], p["perturbation_interval"], p["mutated"], p["max_epochs"]) == ("pbt", 3, ["lr"], 6)
    r = _cli("tune", "supervised", "--space", str(space), "--perturbation-interval", "3", "--dry-run", env=env)
    assert r.returncode != 0 and "scheduler.perturbation_interval: a PBT setting, but the scheduler is asha" in r.stderr
    r = _cli("tune", "supervised", "--space", str(space), "--scheduler", "pbt", "--workers", "2", "--dry-run", env=env)
    assert r.returncode != 0 and "--scheduler pbt runs single-worker trials" in r.stderr
