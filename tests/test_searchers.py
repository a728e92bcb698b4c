"""Searchers (tuning/searchers.py) as `ssl-ray tune` uses them: a missing package is one line before Ray starts
(nothing written, also under --dry-run, also for `compare`), and an Optuna search keeps its study in
EXPERIMENT/optuna.db, which optuna.load_study opens and a --resume continues."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ssl_ray.cli import main
from ssl_ray.tuning import searchers as S

SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {steps_per_epoch: 2}
search:
  lr: {loguniform: [1.0e-4, 1.0e-1]}
  batch_size: {choice: [16, 32]}
scheduler: {name: fifo, max_epochs: 1, grace_epochs: 1}
num_samples: 3
"""


def _no_ray_and_nothing_written(root: Path, ray_was: bool) -> None:
    import ray

    assert ray.is_initialized() == ray_was  # not started (a session fixture may hold one from another test)
    assert not (root / "runs").exists(), list((root / "runs").rglob("*"))


def _ray_now() -> bool:
    import ray

    return ray.is_initialized()


@pytest.mark.parametrize("search, blocked", [("optuna", "optuna"), ("hyperopt", "hyperopt"), ("bohb", "hpbandster"),
                                             ("bohb", "ConfigSpace")])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_missing_searcher_package_is_one_line_before_anything(tmp_path, monkeypatch, search, blocked, dry_run):
    monkeypatch.setitem(sys.modules, blocked, None)  # `import blocked` raises ImportError, as if not installed
    (tmp_path / "space.yaml").write_text(SPACE)
    was = _ray_now()
    r = CliRunner().invoke(main, ["tune", "supervised", "--space", str(tmp_path / "space.yaml"), "--search", search,
                                  "--storage", str(tmp_path / "runs"), "--name", "x"]
                           + (["--dry-run"] if dry_run else []))
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --search {search} needs the "), lines
    assert repr(blocked) in lines[0] and lines[0].endswith(f" package{'s' if ' and ' in lines[0] else ''}: "
                                                           f"pip install \"ssl-ray[{search}]\"")
    _no_ray_and_nothing_written(tmp_path, was)


def test_a_space_file_naming_a_missing_searcher_stops_compare_before_anything(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    (tmp_path / "space.yaml").write_text(SPACE + "searcher: optuna\n")
    was = _ray_now()
    r = CliRunner().invoke(main, ["compare", "supervised", "--space", f"supervised={tmp_path / 'space.yaml'}",
                                  "--storage", str(tmp_path / "runs"), "--num-samples", "2", "--max-epochs", "1",
                                  "--grace-epochs", "1", "--seeds", "1"])
    assert r.exit_code == 2 and "--search optuna needs the 'optuna' package" in r.output, r.output
    _no_ray_and_nothing_written(tmp_path, was)


def test_optuna_storage_option_only_with_optuna(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    was = _ray_now()
    r = CliRunner().invoke(main, ["tune", "supervised", "--space", str(tmp_path / "space.yaml"), "--dry-run",
                                  "--optuna-storage", "sqlite:///x.db", "--storage", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "--optuna-storage is for --search optuna (this search uses random)" in r.output
    _no_ray_and_nothing_written(tmp_path, was)


def test_optuna_storage_defaults(tmp_path):
    assert S.optuna_storage(str(tmp_path / "exp")) == f"sqlite:///{tmp_path / 'exp' / 'optuna.db'}"
    assert S.optuna_storage("s3://bucket/exp") is None  # SQLite needs a local file: in memory
    assert S.optuna_storage("s3://bucket/exp", "postgresql://h/db") == "postgresql://h/db"
    optuna = pytest.importorskip("optuna")
    s = S.build_searcher("optuna", metric="val_error", mode="min", seed=0, max_concurrent=1,
                         experiment=str(tmp_path / "exp2"))
    assert (tmp_path / "exp2" / "optuna.db").is_file() and s._study_name == "exp2"
    with S.optuna_study(str(tmp_path / "exp3")) as url:  # the CLI's way: run_tune does not pass the folder
        s = S.build_searcher("optuna", metric="val_error", mode="min", seed=0, max_concurrent=1)
    assert url == f"sqlite:///{tmp_path / 'exp3' / 'optuna.db'}" and s._study_name == "exp3"
    assert S._STUDY == {}  # restored
    assert S.build_searcher("optuna", metric="val_error", mode="min", seed=0, max_concurrent=1)._storage is None
    del optuna


def _tune(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SSL_RAY_CACHE": str(root / "cache")}
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--space", str(root / "s.yaml"),
                           "--storage", str(root / "runs"), "--name", "opt", "--search", "optuna", "--seed", "3",
                           "--quiet", *args], capture_output=True, text=True, timeout=600, env=env)


def test_the_default_search_draws_its_plan_with_the_seed(tmp_path):
    """The README's claim: random search (the default) draws every configuration before the search starts, with
    --seed (default 0), so default runs of one space draw the same ones; another seed draws others, and a larger
    --num-samples extends the plan. The plan is what a fresh search runs (tune._open: no Ray started)."""
    from ssl_ray.tuning import experiment, tune
    from ssl_ray.tuning.options import TuneOptions
    from ssl_ray.tuning.spaces import parse_space

    space = parse_space(SPACE, source="s.yaml")
    a = experiment.make_plan(space, 0)
    assert len(a) == 3 and a == experiment.make_plan(space, 0) and a != experiment.make_plan(space, 1)
    assert len({json.dumps(x, sort_keys=True) for x in a}) == 3  # three different draws, not one repeated
    assert experiment.make_plan(space, 0, 5)[:3] == a
    for searcher in (None, "random"):
        space.searcher = searcher
        run = tune._open(space, TuneOptions(storage=str(tmp_path), name=f"x{searcher}", gpus_per_trial=0.0))
        try:
            assert run.plan == a  # TuneOptions' seed defaults to 0, as --seed does
        finally:
            run.lock.release()


def test_a_resume_finds_the_optuna_storage_it_was_given(tmp_path):
    """--optuna-storage is recorded with the experiment (optuna_study.json) when the searcher is built, so the
    CLI's resume (optuna_study without a storage) opens the same study; another URL is refused."""
    pytest.importorskip("optuna")
    exp, other = tmp_path / "runs" / "opt", f"sqlite:///{tmp_path / 'elsewhere' / 'study.db'}"
    (tmp_path / "elsewhere").mkdir()
    with S.optuna_study(str(exp), other) as url:
        S.build_searcher("optuna", metric="val_error", mode="min", seed=0, max_concurrent=1)
    assert url == other and json.loads((exp / S.STUDY_FILE).read_text()) == {"study_name": "opt", "storage": other}
    assert S.saved_study(str(exp)) == {"study_name": "opt", "storage": other}
    (tmp_path / "elsewhere" / "study.db").unlink()
    with S.optuna_study(str(exp)) as url:  # --resume, nothing typed
        s = S.build_searcher("optuna", metric="val_error", mode="min", seed=0, max_concurrent=1)
    assert url == other and s._study_name == "opt" and not (exp / "optuna.db").exists()
    assert (tmp_path / "elsewhere" / "study.db").is_file()  # Optuna's storage opened there again
    with S.optuna_study(str(exp), other) as url:  # the same URL typed again: fine
        assert url == other
    with pytest.raises(S.SSLRayError, match="keeps its Optuna study in sqlite:///.*elsewhere/study.db"):
        with S.optuna_study(str(exp), f"sqlite:///{tmp_path / 'third.db'}"):
            pass
    assert S._STUDY == {}
    (exp / S.STUDY_FILE).write_text("{damaged")
    with pytest.raises(S.SSLRayError, match="unreadable"):
        with S.optuna_study(str(exp)):
            pass
    assert S.saved_study("s3://bucket/exp") is None


@pytest.mark.ray
def test_an_optuna_search_keeps_its_study_in_the_experiment_and_a_resume_continues_it(tmp_path, monkeypatch):
    """The study where --optuna-storage put it, and a --resume without the option continues it there."""
    optuna = pytest.importorskip("optuna")
    (tmp_path / "s.yaml").write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    r = _tune(tmp_path, "--json", "--optuna-storage", url)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    exp = Path(summary["experiment"])
    assert not (exp / "optuna.db").exists() and S.saved_study(str(exp)) == {"study_name": "opt", "storage": url}
    assert summary["optuna"] == {"study_name": "opt", "storage": url}
    assert f"optuna study opt: optuna-dashboard {url}" in r.stderr  # --json: the human summary on stderr
    study = optuna.load_study(study_name="opt", storage=url)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    rows = {round(r["config/lr"], 12): r for r in pq.read_table(exp / "results.parquet").to_pylist()}
    for t in trials:  # the study's values are the trials' validation errors (one epoch: the best is the last)
        assert t.value == pytest.approx(rows[round(t.params["lr"], 12)]["best_val_error"])
    with monkeypatch.context() as m:  # a resume without optuna: one line, the experiment untouched
        m.setitem(sys.modules, "optuna", None)
        before = {p: p.stat().st_mtime_ns for p in exp.rglob("*")}
        r = CliRunner().invoke(main, ["tune", "supervised", "--storage", str(tmp_path / "runs"), "--name", "opt",
                                      "--resume", "--num-samples", "5"])
        assert r.exit_code == 2 and r.output.strip().splitlines() == [
            "error: --search optuna needs the 'optuna' package: pip install \"ssl-ray[optuna]\""], r.output
        assert {p: p.stat().st_mtime_ns for p in exp.rglob("*")} == before
    r = _tune(tmp_path, "--resume", "--num-samples", "5")  # no --optuna-storage: the saved one
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"optuna-dashboard {url}" in r.stdout and not (exp / "optuna.db").exists()
    trials = optuna.load_study(study_name="opt", storage=url).get_trials()
    assert len(trials) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(json.loads((exp / "ssl_ray_space.json").read_text())["plan"]) == 5
