"""The researcher's workflow around a search, on real runs.

- `ssl-ray export` / `ssl-ray predict` on the main job's output (`ssl-ray tune i2gan`, tiny budget, under
  $SSL_RAY_RUNS/tune like the real one) and on a `ssl-ray train` run: the exported model predicts exactly
  what the training code's own model predicts on the same inputs (.npy, .npz, PNG; model.pt and
  TorchScript), and its test error is the one the run reported;
- the HParams entry shows the searched hyperparameters; searchers (optuna with MLflow logging, seeded
  suggestions, YAML validation); `--dry-run`; progress lines within an epoch.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_ray.data import eval_tensors, load_splits, to_float
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec, Trainer


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _own_logits(ckpt_dir: str, x_raw: torch.Tensor) -> torch.Tensor:
    """The training code's predictions: a Trainer restored from the checkpoint, method.predict on to_float(x)."""
    state = checkpoint.load(ckpt_dir)
    trainer = Trainer(RunSpec.from_dict(state["spec"]), log_dir=None, progress=False)
    trainer.restore(state)
    trainer.method.eval()
    return trainer.method.predict(to_float(x_raw))


def _write_inputs(d: Path, x: np.ndarray) -> dict:
    """The test images as an .npy batch, an .npz (key x) and one 8x8 greyscale PNG per image."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "test.npy", x)
    np.savez(d / "few.npz", x=x[:7])
    pngs = []
    for i in range(5):
        p = d / f"img{i}.png"
        Image.fromarray(x[i, 0]).save(p)
        pngs.append(str(p))
    return {"npy": str(d / "test.npy"), "npz": str(d / "few.npz"), "png": pngs}


def _predict(model, *files):
    r = _cli("predict", model, *files, "--probs", "--format", "json")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check_model(exported: dict, tmp: Path):
    src = exported["source"]
    state = checkpoint.load(src["checkpoint"])
    spec = RunSpec.from_dict(state["spec"])
    x, y = eval_tensors(load_splits(spec.data, spec.seed), "test")
    inputs = _write_inputs(tmp, x.numpy())
    own = _own_logits(src["checkpoint"], x)
    own_pred = own.argmax(1)
    rows = _predict(exported["output"], inputs["npy"], inputs["npz"], *inputs["png"])
    n = len(x)
    assert len(rows) == n + 7 + 5
    got = torch.tensor([r["class"] for r in rows[:n]])
    assert torch.equal(got, own_pred)  # same class for every test image
    probs = torch.tensor([r["probs"] for r in rows[:n]])
    torch.testing.assert_close(probs, torch.softmax(own, 1), atol=2e-6, rtol=0)  # printed to 6 decimals
    assert [r["class"] for r in rows[n:n + 7]] == own_pred[:7].tolist()      # .npz
    assert [r["class"] for r in rows[n + 7:]] == own_pred[:5].tolist()       # PNG files, read through PIL
    # the exported model's test error is the error the run reported at the exported epoch
    if src.get("test_error") is not None:
        err = float((got != y).float().mean() * 100)
        assert err == pytest.approx(src["test_error"], abs=1e-4)
    # TorchScript (no ssl-ray needed to load it) agrees with the state dict
    ts = _predict(str(Path(exported["output"]) / "model.torchscript.pt"), inputs["npy"])
    assert [r["class"] for r in ts] == own_pred.tolist()
    ts_model = torch.jit.load(str(Path(exported["output"]) / "model.torchscript.pt"))
    torch.testing.assert_close(ts_model(to_float(x)), own, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """The main job as a user types it (`ssl-ray tune i2gan`, search_spaces/i2gan.yaml), with a tiny budget."""
    tmp_path = tmp_path_factory.mktemp("main_job")
    runs = tmp_path / "runs"
    env = {**os.environ, "SSL_RAY_RUNS": str(runs), "SSL_RAY_CACHE": str(tmp_path / "cache")}
    r = _cli("tune", "i2gan", "--num-samples", "2", "--max-epochs", "2", "--grace-epochs", "1",
             "--set", "steps_per_epoch=3", "--quiet", "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(s["experiment"]).parent == runs / "tune"
    return tmp_path, runs, env, s


@pytest.mark.ray
def test_hparams_tab_shows_the_searched_hyperparameters(main_job):
    """TensorBoard's HParams entry of each trial: the space's searched keys, not the constants (which go to the
    run's text tab, with the searched ones)."""
    from tb_read import read_hparams, read_text

    _, _, _, s = main_job
    trials = sorted(Path(s["experiment"]).glob("*/tensorboard"))
    assert len(trials) == 2
    from ssl_ray.tuning.spaces import load_space

    searched = sorted(load_space(method="i2gan").search)  # the shipped space's searched keys
    assert searched == ["arch", "labeled_ratio", "lr", "n_fake", "tau"]
    for tb in trials:
        names, values = read_hparams(tb)
        assert sorted(names) == searched
        assert sorted(values) == sorted(names)
        params = json.loads((tb.parent / "params.json").read_text())
        for k in names:
            assert values[k] == (params[k] if isinstance(params[k], str) else pytest.approx(params[k]))
        text = read_text(tb, "config")
        assert "| batch_size | 200 | fixed |" in text and "| fake_in_unl | batch | fixed |" in text
        assert f"| tau | {params['tau']} | searched |" in text


@pytest.mark.ray
def test_export_and_predict_the_main_jobs_best_trial(main_job):
    tmp_path, runs, env, s = main_job
    # EXP may be the experiment or the folder of experiments (then the latest one)
    r = _cli("export", str(runs / "tune"), "--output", str(tmp_path / "model"), "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    e = json.loads(r.stdout.strip().splitlines()[-1])
    assert e["source"]["trial_id"] == s["best"]["trial_id"]  # the best trial by validation error
    assert e["method"] == "i2gan" and e["torchscript"] == "model.torchscript.pt"
    assert e["input"]["shape"] == [1, 8, 8] and e["input"]["raw_dtype"] == "uint8"
    blob = torch.load(tmp_path / "model" / "model.pt", weights_only=True)  # safe to load
    assert blob["meta"]["config"]["tau"] == pytest.approx(s["best"]["config"]["tau"])
    assert blob["meta"]["config"]["batch_size"] == 200  # the method's default
    # the EMA weights are what is exported (the paper's decay with warm-up): compare with D's own
    state = checkpoint.load(e["source"]["checkpoint"])
    ema = state["method"]["extra"]["ema"]["shadow"]
    raw_d = state["method"]["modules"]["D"]
    # every tensor is the EMA's; a trained one (the first layer's direction: its scale is fixed after the data
    # init, as in the reference, so it equals D's) differs from D's own
    for name, t in blob["state_dict"].items():
        torch.testing.assert_close(t, ema[name])
    k = next(k for k in blob["state_dict"] if k.endswith("weight.original1"))
    assert not torch.equal(ema[k], raw_d[k])
    _check_model(e, tmp_path / "inputs")
    # default output folder: EXPERIMENT/export
    r = _cli("export", s["experiment"], "--no-torchscript", env=env)
    assert r.returncode == 0 and (Path(s["experiment"]) / "export" / "model.pt").exists(), r.stderr[-2000:]


@pytest.mark.ray
def test_export_and_predict_a_train_run(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "supervised", "--epochs", "2", "--set", "steps_per_epoch=5", "--output", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    t = json.loads(r.stdout.strip().splitlines()[-1])
    r = _cli("export", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    e = json.loads(r.stdout.strip().splitlines()[-1])
    assert e["source"]["kind"] == "train" and e["source"]["epoch"] == 2
    e["source"]["test_error"] = t["test_error"]  # the train summary's error at the last (exported) epoch
    _check_model(e, tmp_path / "inputs")


def test_classifier_module_is_predict_for_every_method():
    """What export writes (classifier_module) computes each built-in method's predict()."""
    from ssl_ray import config as C
    from ssl_ray.data import DataInfo
    from ssl_ray.export import classifier_module
    from ssl_ray.methods import list_methods

    img = DataInfo("digits", (1, 8, 8), 10, "image", tuple("0123456789"))
    pts = DataInfo("circles", (2,), 2, "points", ("a", "b"))
    tested = set()
    for cls in list_methods():
        for info in (img, pts):
            try:
                m = cls(C.build(cls.Config, {}), info, "cpu")
            except Exception:  # a method that does not build on this data kind with its defaults
                continue
            x = torch.rand(16, *info.input_shape, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(classifier_module(m)(x), m.predict(x), msg=f"{cls.name} on {info.name}")
            tested.add(cls.name)
    assert tested == {c.name for c in list_methods()}


def test_predict_rejects_wrong_shapes_and_unknown_files(tmp_path):
    from ssl_ray.errors import SSLRayError
    from ssl_ray.export import Model

    m = Model({"info": {"input_shape": [1, 8, 8], "kind": "image", "num_classes": 10, "class_names": []}},
              torch.nn.Identity())
    assert m.prepare(np.zeros((3, 8, 8), np.uint8), "a").shape == (3, 1, 8, 8)     # N, H, W for one channel
    assert m.prepare(np.full((8, 8, 1), 255, np.uint8), "b").max() == 1.0           # H, W, C; uint8 / 255
    with pytest.raises(SSLRayError, match="does not fit"):
        m.prepare(np.zeros((3, 9, 9)), "c")


# ---- searchers ------------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_tune_i2gan_with_optuna_runs_and_logs_to_mlflow(tmp_path, monkeypatch):
    """`ssl-ray tune i2gan --search optuna` with a tiny budget; the same run logs to MLflow's local file store
    when mlflow is installed (the tracker part is skipped, and says so, when it is not)."""
    pytest.importorskip("optuna")
    try:
        import mlflow
    except ImportError:
        mlflow = None
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to use a local file store
    r = _cli("tune", "i2gan", "--search", "optuna", "--num-samples", "3", "--max-epochs", "2", "--grace-epochs", "1",
             "--set", "steps_per_epoch=2", "--storage", str(tmp_path / "runs"), "--name", "opt", "--seed", "3",
             "--quiet", "--json", *(["--mlflow", store] if mlflow else []), env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_trials"] == 3 and s["num_errored"] == 0
    assert json.loads((Path(s["experiment"]) / "ssl_ray_space.json").read_text())["searcher"] == "optuna"
    import pyarrow.parquet as pq

    rows = pq.read_table(Path(s["experiment"]) / "results.parquet").to_pylist()
    taus = {r["config/tau"] for r in rows}
    from ssl_ray.tuning.spaces import load_space

    space = load_space(None, method="i2gan")  # the default space the search drew from
    lo, hi = space.search["tau"].args
    assert len(taus) == 3 and all(lo <= t <= hi for t in taus)
    assert {r["config/n_fake"] for r in rows} <= set(space.search["n_fake"].args)
    dirs = [Path(r["path"]).name for r in rows]  # trial_fn_<id>_<plan index>, as with random search
    assert sorted(d.rsplit("_", 1)[1] for d in dirs) == ["0", "1", "2"], dirs
    saved = json.loads((Path(s["experiment"]) / "ssl_ray_space.json").read_text())
    assert len(saved["plan"]) == 3  # each proposal is recorded in the plan before its trial starts
    assert sorted(p["tau"] for p in saved["plan"]) == pytest.approx(sorted(taus))
    if mlflow is None:
        pytest.skip("mlflow not installed: the --mlflow part was not run")
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("opt")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3
    by_tau = {round(float(run.data.params["tau"]), 6): run for run in runs}
    for row in rows:
        run = by_tau[round(row["config/tau"], 6)]
        hist = client.get_metric_history(run.info.run_id, "val_error")
        assert len(hist) == row["epochs"]
        assert min(m.value for m in hist) == pytest.approx(row["best_val_error"])


@pytest.mark.parametrize("name,module", [("optuna", "optuna"), ("hyperopt", "hyperopt"), ("bohb", "hpbandster")])
def test_searchers_suggest_seeded_configs_inside_the_space(name, module):
    pytest.importorskip(module)
    from ssl_ray.tuning.searchers import build_searcher
    from ssl_ray.tuning.spaces import load_space

    space = load_space(method="i2gan")

    def suggest(seed):
        s = build_searcher(name, metric="val_error", mode="min", seed=seed, max_concurrent=2)
        s.set_search_properties("val_error", "min", space.param_space())
        return [s.suggest(f"t{i}") for i in range(4)]

    a, b, c = suggest(0), suggest(0), suggest(1)
    assert a == b and a != c  # the seed decides the suggestions
    for cfg in a + c:
        assert set(cfg) == {"arch", "labeled_ratio", "tau", "n_fake", "lr"}
        for k in ("labeled_ratio", "tau", "lr"):
            lo, hi = space.search[k].args
            assert lo <= cfg[k] <= hi, (k, cfg[k])
        for k in ("n_fake", "arch"):
            assert cfg[k] in space.search[k].args


def test_searcher_in_yaml_is_validated():
    from ssl_ray.errors import ConfigError
    from ssl_ray.tuning.spaces import parse_space

    base = "method: supervised\nsearch:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
    assert parse_space(base + "searcher: optuna\n").searcher == "optuna"
    assert parse_space(base).searcher is None
    with pytest.raises(ConfigError, match=r"<string>:4: searcher: unknown searcher 'tpe'; allowed: random, optuna"):
        parse_space(base + "searcher: tpe\n")
    grid = "method: supervised\nsearch:\n  lr: {grid: [1.0e-3, 1.0e-2]}\nsearcher: hyperopt\n"
    with pytest.raises(ConfigError, match="cannot take grid dimensions"):
        parse_space(grid)
    r = _cli("tune", "supervised", "--search", "nope")
    assert r.returncode == 2 and "Invalid value for '--search'" in r.stderr


# ---- dry run --------------------------------------------------------------------------------------------------
def test_tune_dry_run_prints_the_plan_without_starting_ray(tmp_path, monkeypatch):
    import ray
    from click.testing import CliRunner

    from ssl_ray.cli import main

    monkeypatch.setenv("SSL_RAY_RUNS", str(tmp_path / "runs"))
    was = ray.is_initialized()
    r = CliRunner().invoke(main, ["tune", "i2gan", "--dry-run", "--json", "--num-samples", "9", "--workers", "2",
                                  "--cpus-per-trial", "0.5"])
    assert r.exit_code == 0, r.output
    p = json.loads(r.output.strip().splitlines()[-1])
    assert p["trials"] == 9 and p["searcher"] == "random" and p["scheduler"] == "asha"
    assert sorted(p["searched"]) == ["arch", "labeled_ratio", "lr", "n_fake", "tau"]
    assert p["fixed"] == {"steps_per_epoch": 20}
    assert p["rungs"] == [5, 15]                           # i2gan.yaml: max 45, grace 5, factor 3
    assert p["epochs_worst_case"] == 9 * 45
    assert p["epochs_nominal"] == pytest.approx(9 * 5 + 3 * 10 + 1 * 30)
    assert p["per_trial"] == {"workers": 2, "cpus": 1.0, "gpus": 0.0}
    assert ray.is_initialized() == was and not (tmp_path / "runs").exists()  # nothing started, nothing written
    bad = CliRunner().invoke(main, ["tune", "i2gan", "--dry-run", "--set", "tau=0.5"])
    assert bad.exit_code == 2 and "tau" in bad.output     # still validated


# ---- progress within an epoch -----------------------------------------------------------------------------------
def test_progress_lines_within_a_long_epoch(capsys, monkeypatch):
    from ssl_ray.data import DataSpec
    from ssl_ray.engine import loop

    monkeypatch.setattr(loop, "PROGRESS_SECONDS", 0.0)  # every step of the epoch is "long"
    loop.Trainer(RunSpec("supervised", DataSpec("digits"), epochs=1, config={"steps_per_epoch": 4}),
                 progress=True).fit()
    err = capsys.readouterr().err
    assert [line.split(": ", 1)[1].split(" (")[0] for line in err.splitlines() if ": step " in line] == \
        ["step 1/4", "step 2/4", "step 3/4"]                    # the last step is followed by the epoch's line
    assert "epoch 1/1 val_error=" in err
    loop.Trainer(RunSpec("supervised", DataSpec("digits"), epochs=1, config={"steps_per_epoch": 4}),
                 progress=False).fit()                          # Tune trials and --json runs: quiet
    assert capsys.readouterr().err == ""
