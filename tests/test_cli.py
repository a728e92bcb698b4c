"""The command line as a user meets it: `ssl-ray train` end to end on a real local Ray instance, the
listings, and one readable error (exit 2, no traceback) for each kind of bad input."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ssl_ray.cli import main
from ssl_ray.errors import SSLRayError
from tb_read import has_hparams, read_scalars


def _cli(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.ray
def test_train_supervised_digits_json_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "supervised", "--dataset", "digits", "--labels", "50", "--epochs", "8", "--output", str(out),
             "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("method", "dataset", "labels", "seed", "epochs", "val_error", "test_error", "seconds", "config",
                "output"):
        assert key in s, key
    assert (s["method"], s["dataset"], s["labels"], s["seed"], s["epochs"]) == ("supervised", "digits", 50, 0, 8)
    assert s["test_error"] < 45.0, s  # chance is 90%: the baseline must beat it by far
    assert s["config"]["lr"] == 1e-3 and s["config"]["batch_size"] == 64
    assert "epoch 8/8" in r.stderr  # progress while it runs
    sc = read_scalars(out / "tensorboard")
    assert [st for st, _ in sc["error/val"]] == list(range(1, 9))
    assert sc["error/test"][-1][1] == pytest.approx(s["test_error"], rel=1e-5)
    assert has_hparams(out / "tensorboard")
    assert json.loads((out / "result.json").read_text())["test_error"] == s["test_error"]


@pytest.mark.parametrize("args, needle", [
    (["train", "nosuch"], "unknown method 'nosuch'; known methods:"),
    (["train", "supervised", "--set", "lrr=1"], "unknown hyperparameter 'lrr'"),
    (["train", "supervised", "--set", "lr=-1"], "lr: -1.0 is out of range"),
    (["train", "supervised", "--set", "lr"], "--set expects key=value"),
    (["train", "supervised", "--set", "labeled_ratio=0"], "labeled_ratio"),
    (["train", "supervised", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["train", "supervised", "--labels", "3"], "labels: 3 is fewer than the 10 classes"),
    (["train", "supervised", "--labels", "100000"], "more than the"),
    (["train", "supervised", "--dataset", "circles", "--data-opt", "noyse=0.1"], "noyse"),
    (["train", "supervised", "--epochs", "0"], "--epochs must be positive"),
    (["tune", "nosuch"], "unknown method"),
    (["tune", "supervised", "--space", "/nonexistent.yaml"], "search space /nonexistent.yaml: no such file"),
    (["tune", "supervised", "--grace-epochs", "50", "--max-epochs", "5"], "grace_epochs"),
])
def test_bad_input_is_one_readable_error(args, needle):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output


def test_missing_dataset_names_the_files(tmp_path):
    r = CliRunner().invoke(main, ["train", "supervised", "--dataset", "mnist", "--data-root", str(tmp_path)])
    assert r.exit_code == 2
    assert "train-images-idx3-ubyte" in r.output and "--download" in r.output and str(tmp_path) in r.output


def test_unwritable_output_is_an_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = ro / "x"
    if os.access(ro, os.W_OK):  # root ignores permissions; use a path under a file instead
        f = tmp_path / "file"
        f.write_text("")
        target = f / "x"
    r = CliRunner().invoke(main, ["train", "supervised", "--epochs", "1", "--output", str(target)])
    assert r.exit_code == 2 and "cannot write to" in r.output


def test_unreachable_address_fails_fast():
    r = CliRunner().invoke(main, ["train", "supervised", "--epochs", "1", "--address", "127.0.0.1:9"])
    assert r.exit_code == 2 and "cannot reach a Ray cluster" in r.output


def test_methods_and_datasets_listings():
    r = CliRunner().invoke(main, ["methods", "--json"])
    assert r.exit_code == 0
    rows = {m["name"]: m for m in json.loads(r.output)}
    assert "supervised" in rows
    hp = {h["name"]: h for h in rows["supervised"]["hyperparameters"]}
    assert hp["lr"]["default"] == 1e-3 and hp["lr"]["doc"]
    assert hp["labeled_ratio"]["low"] == 0 and hp["labeled_ratio"]["low_open"]
    r = CliRunner().invoke(main, ["datasets", "--json"])
    names = {d["name"] for d in json.loads(r.output)}
    assert {"circles", "gaussians", "digits", "mnist", "fashion_mnist", "svhn", "cifar10", "cifar100",
            "imagefolder"} <= names
    text = CliRunner().invoke(main, ["methods", "supervised"]).output
    assert "labeled_ratio (float, default 1.0, in (0, 1])" in text


def _finished_experiment(path):
    """An experiment's result files as `ssl-ray tune` writes them (results.write_tables / write_summary)."""
    from ssl_ray.tuning import results

    rows = [{"trial_id": "t1", "status": "TERMINATED", "stopped_early": False, "best_val_error": 10.0,
             "config/lr": 0.01},
            {"trial_id": "t2", "status": "STOPPED", "stopped_early": True, "best_val_error": 30.0,
             "config/lr": 0.1, "extra": 7}]
    results.write_tables(str(path), rows, [])
    results.write_summary(str(path), {"method": "supervised", "dataset": "digits", "labels": 50, "searched": ["lr"],
                                      "best": {"val_error": 10.0, "test_error": 12.5, "config": {"lr": 0.01}}})
    return str(path)


def test_report_formats(tmp_path):
    import csv

    import pyarrow.parquet as pq

    exp = _finished_experiment(tmp_path / "exp-a")
    r = CliRunner().invoke(main, ["report", exp, "--format", "csv"])
    assert r.exit_code == 0, r.output
    got = list(csv.DictReader(r.output.splitlines()))
    assert len(got) == 1 and got[0]["experiment"] == "exp-a" and got[0]["trials"] == "2"
    assert got[0]["stopped_early"] == "1" and got[0]["best_config"] == "lr=0.01"
    r = CliRunner().invoke(main, ["report", exp, "--trials", "--all-columns", "--format", "csv"])
    got = list(csv.DictReader(r.output.splitlines()))
    assert [g["trial_id"] for g in got] == ["t1", "t2"] and [g["extra"] for g in got] == ["", "7"]  # every column
    r = CliRunner().invoke(main, ["report", exp, "--trials", "--format", "csv"])  # the searched columns only
    got = list(csv.DictReader(r.output.splitlines()))
    assert list(got[0]) == ["experiment", "trial_id", "status", "epochs", "best_val_error", "test_error_at_best_val",
                            "epoch_of_best_val", "lr"]
    assert [(g["trial_id"], g["lr"]) for g in got] == [("t1", "0.01"), ("t2", "0.1")]
    for bad, needle in ((["--all-columns"], "--all-columns goes with --trials"),
                        (["--plot-dir", str(tmp_path)], "--plot-dir goes with --plot")):
        r = CliRunner().invoke(main, ["report", exp, *bad])
        assert r.exit_code == 2 and needle in r.output
    out = tmp_path / "t.parquet"
    r = CliRunner().invoke(main, ["report", exp, "--trials", "--all-columns", "--format", "parquet", "--output",
                                  str(out)])
    assert r.exit_code == 0 and f"wrote {out}" in r.output
    table = pq.read_table(out).to_pylist()
    assert [(t["experiment"], t["trial_id"], t["extra"]) for t in table] == [("exp-a", "t1", None), ("exp-a", "t2", 7)]
    r = CliRunner().invoke(main, ["report", exp, "--format", "parquet"])
    assert r.exit_code == 2 and "--format parquet needs --output FILE" in r.output
    r = CliRunner().invoke(main, ["report", exp])
    assert r.output.splitlines()[2].startswith("| exp-a | supervised | digits | 50 | 2 | 1 | 0 | 10 | 12.5 |")


def test_every_tune_option_sets_one_field():
    """TuneOptions and the `ssl-ray tune` options are one list: each field has exactly one flag."""
    import dataclasses

    from ssl_ray.cli import PERF_OPTIONS, TUNE_OPTIONS, tune_options
    from ssl_ray.tuning.options import TuneOptions

    fields = [o.field for o in TUNE_OPTIONS + PERF_OPTIONS if o.field]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(TuneOptions))
    ctx = main.commands["tune"].make_context("tune", ["m", "--quiet", "--no-resident-data", "--compile",
                                                      "--cpus-per-trial", "0.5", "--search", "optuna"])
    o = tune_options(ctx.params)
    assert (o.progress, o.data_resident, o.compile, o.amp, o.cpus_per_trial, o.search) == \
        (False, False, True, False, 0.5, "optuna")
    assert tune_options(main.commands["tune"].make_context("tune", ["m"]).params) == TuneOptions()  # same defaults


def test_read_histories_groups_each_trials_epochs_in_order(tmp_path):
    """What benchmarks/tune_efficiency.py and asha_vs_fifo.py read back (both broke when it went missing)."""
    from ssl_ray.tuning import results

    hist = [{"trial_id": "b", "epoch": 2, "val_error": 5.0}, {"trial_id": "a", "epoch": 1, "val_error": 9.0},
            {"trial_id": "b", "epoch": 1, "val_error": 7.0}]
    results.write_tables(str(tmp_path), [{"trial_id": "a"}, {"trial_id": "b"}], hist)
    got = results.read_histories(str(tmp_path))
    assert {t: [(r["epoch"], r["val_error"]) for r in rs] for t, rs in got.items()} == \
        {"a": [(1, 9.0)], "b": [(1, 7.0), (2, 5.0)]}


@pytest.mark.parametrize("alive, grows", [(2, False), (1, True)])
def test_a_fixed_launcher_cluster_with_every_node_up_cannot_grow(tmp_path, monkeypatch, alive, grows):
    """clusters/smoke.yaml as `ray up` leaves it on the head (Ray's own prepare_config: the local provider, one
    node type for head and worker, worker_ips fixed): with both nodes up it cannot grow, so tune's GPU default is
    0 instead of "no GPU now and can add nodes whose kinds this node cannot read" (smoke.sh's job was refused)."""
    import yaml
    from ray.autoscaler._private.util import prepare_config

    from ssl_ray.tuning import cluster
    from ssl_ray.tuning.resources import ClusterState, default_gpus

    config = prepare_config(yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "clusters",
                                                             "smoke.yaml"))))
    assert cluster.launcher_nodes(config) == 2
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(cluster, "alive_nodes", lambda: alive)
    can_grow, most, why = cluster.autoscaler_view()
    assert can_grow is grows and most is None and "~/ray_bootstrap_config.yaml" in why
    state = ClusterState({"CPU": 2.0, "GPU": 0.0}, grows=can_grow, most=most, where="the cluster", why=why)
    if grows:  # a worker still to come, of a kind nobody declared: the default cannot be decided
        with pytest.raises(SSLRayError, match="can add nodes whose kinds this node cannot read"):
            default_gpus(state, "--gpus-per-trial")
    else:
        assert why.endswith("all 2 nodes it allows are up, it cannot add more")
        assert default_gpus(state, "--gpus-per-trial") == 0.0


def test_launcher_node_bounds():
    from ssl_ray.tuning.cluster import launcher_full, launcher_nodes

    cloud = {"available_node_types": {"head": {"max_workers": 0, "resources": {"CPU": 4}},
                                      "gpu": {"min_workers": 0, "max_workers": 4, "resources": {"GPU": 1}},
                                      "cpu": {"min_workers": 2, "max_workers": 2, "resources": {"CPU": 8}}},
             "head_node_type": "head", "max_workers": 5}
    assert launcher_nodes(cloud) == 6  # 1 + min(0 + 4 + 2, 5)
    assert launcher_full(cloud, 5) == "" and launcher_full(cloud, 6).startswith("all 6 nodes")
    del cloud["available_node_types"]["gpu"]["max_workers"]  # no bound on a type: unknown, it may grow
    assert launcher_nodes(cloud) is None and launcher_full(cloud, 99) == ""
    local = {"available_node_types": {"n": {"min_workers": 0, "max_workers": 9}}, "max_workers": 9,
             "provider": {"type": "local", "worker_ips": ["a", "b"]}}
    assert launcher_nodes(local) == 3  # the local provider has only its worker_ips
    assert launcher_full(local, None) == ""  # nodes up unknown (Ray not joined): it may grow, as before
