"""Property-based tests of the validators (hypothesis): whatever a user types, ssl-ray either accepts it
with valid values or answers with its own error type (SSLRayError: one readable line, CLI exit 2).

Covered: search-space YAML (random and mutated text, random structured documents) through `parse_space`
for every registered method; `--set key=value` through `parse_set` + `build`; random `ssl-ray train` /
`ssl-ray tune` command lines (Ray never starts: `run_train` / `run_tune` are replaced by recorders);
and the loaders that must never run code from a file (YAML safe_load only, torch.load weights_only).
"""
from __future__ import annotations

import ast
import dataclasses
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ssl_ray import config as C
from ssl_ray.data import list_datasets
from ssl_ray.errors import SSLRayError
from ssl_ray.methods import get_method, list_methods
from ssl_ray.tuning.spaces import DATASET_KEYS, DISTRIBUTIONS, SCHEDULER_KEYS, SPACES_DIR, SearchSpace, \
    parse_space

torch.set_num_threads(1)

METHODS = [m.name for m in list_methods()]
DATASETS = {d.name: d for d in list_datasets()}
SHIPPED_TEXT = [p.read_text() for p in sorted(SPACES_DIR.glob("*.yaml"))]
PKG = Path(__file__).resolve().parents[1] / "ssl_ray"


def fast(n: int) -> settings:
    """n examples, no deadline, no example database written into the checkout."""
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# ---- value strategies ----------------------------------------------------------------------------------
BIG = 10 ** 400  # beyond any float: float(BIG) raises OverflowError
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(-10 ** 12, 10 ** 12), st.sampled_from([BIG, -BIG]),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2), st.text(max_size=6),
    st.sampled_from(["uniform", "1,2", "0.5,0.5", "1,2,3,4", "a,b", "nan,1", "auto", "mlp", "conv", "true", "1e-3",
                     "", " ", "=", "0x10", ".inf"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                      max_leaves=8)


def _near(x):
    """Values on and around a bound (where off-by-one and open/closed mistakes live)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return [x]
    return [x, x - 1, x + 1, x - 1e-9, x + 1e-9, x * 2, -x, x / 2]


def field_values(cls: type, key: str) -> st.SearchStrategy:
    """Values aimed at one hyperparameter: its default, bounds and neighbours, choices, and junk."""
    info = C.describe_field(cls, key) if key in {f.name for f in dataclasses.fields(cls)} else {}
    near = [info.get("default")]
    for b in (info.get("low"), info.get("high")):
        if b is not None:
            near += _near(b)
    near += list(info.get("choices") or [])
    if info.get("type") == "int":
        near += [0, 1, 2, 7, 64, 1000, 1.0, 2.5]
    if info.get("type") == "str":
        near += [c.upper() for c in info.get("choices") or []]
    return st.one_of(st.sampled_from(near), scalars, values)


def keys_for(cls: type) -> st.SearchStrategy:
    return st.one_of(st.sampled_from([f.name for f in dataclasses.fields(cls)]), st.text(max_size=6),
                     st.integers(-3, 3), st.sampled_from(["lr ", "LR", "batch-size", "seed", "method"]))


# ---- independent checks of accepted values ------------------------------------------------------------
def assert_in_declared_range(info: dict, v, *, strict_type: bool = True) -> None:
    """The field's declared type, choices and [low, high] (open ends honoured), read from describe()."""
    name, tp = info["name"], info["type"]
    if strict_type:
        want = {"bool": bool, "int": int, "float": float, "str": str}[tp]
        assert type(v) is want, f"{name}: {v!r} is not a {tp}"
    if info["choices"]:
        assert v in info["choices"], f"{name}: {v!r} not in {info['choices']}"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        assert math.isfinite(v), f"{name}: {v!r} not finite"
        lo, hi = info["low"], info["high"]
        if lo is not None:
            assert (v > lo) if info["low_open"] else (v >= lo), f"{name}: {v!r} below {lo}"
        if hi is not None:
            assert (v < hi) if info["high_open"] else (v <= hi), f"{name}: {v!r} above {hi}"


def assert_valid_config(cls: type, cfg) -> None:
    for info in C.describe(cls):
        assert_in_declared_range(info, getattr(cfg, info["name"]))
    cfg.check()


def assert_valid_space(space: SearchSpace, method: str | None) -> None:
    """An accepted space holds only valid values: every bound, choice and sample is a valid field value."""
    assert isinstance(space, SearchSpace)
    assert space.method in METHODS and (method is None or space.method == method)
    cls = get_method(space.method).Config
    infos = {d["name"]: d for d in C.describe(cls)}
    for k, v in space.fixed.items():
        assert C.check_value(cls, k, v) == v
        assert_in_declared_range(infos[k], v)
    rng = np.random.default_rng(0)
    for k, p in space.search.items():
        assert k in infos and k not in space.fixed and p.dist in DISTRIBUTIONS
        if p.dist in ("choice", "grid"):
            assert p.args
            for a in p.args:
                assert C.check_value(cls, k, a) == a
                assert_in_declared_range(infos[k], a)
            continue
        lo, hi = p.args[0], p.args[1]
        assert all(math.isfinite(a) for a in p.args) and lo < hi
        if p.dist in ("loguniform", "qloguniform"):
            assert lo > 0
        if len(p.args) == 3:
            assert p.args[2] > 0
        for b in (lo, hi - 1 if p.dist == "randint" else hi):
            C.check_value(cls, k, b)
            assert_in_declared_range(infos[k], b, strict_type=False)
        # what Ray Tune will really draw: every sample must be a valid value too
        dom = p.to_tune()
        for s in dom.sample(size=8, random_state=rng):
            C.check_value(cls, k, s)
            assert_in_declared_range(infos[k], s, strict_type=False)
    C.build(cls, {**space.fixed, **{k: p.args[0] for k, p in space.search.items()}})
    d = space.data
    assert d.name in DATASETS and set(d.options) <= set(DATASETS[d.name].options)
    assert type(d.labels) is int and d.labels >= 1
    assert d.val_size is None or (type(d.val_size) is int and d.val_size >= 0)
    assert d.root is None or isinstance(d.root, str)
    assert isinstance(d.download, bool) and isinstance(space.description, str)
    s = space.scheduler
    assert s.name in ("asha", "fifo")
    for k in ("max_epochs", "grace_epochs", "reduction_factor"):
        assert type(getattr(s, k)) is int and getattr(s, k) >= 1
    assert s.grace_epochs <= s.max_epochs and (s.name != "asha" or s.reduction_factor >= 2)
    assert type(space.num_samples) is int and space.num_samples >= 1


def parse_or_own_error(text: str, method: str | None):
    try:
        space = parse_space(text, source="fuzz.yaml", method=method)
    except SSLRayError as e:
        assert str(e), "an error without a message"
        event("refused")
        return None
    event("accepted")
    return space


# ---- search spaces: random text -------------------------------------------------------------------------
FRAGMENTS = ["method: ", "search:\n", "  lr: ", "{uniform: [", "]}", "{choice: []}", "fixed:\n", "dataset: ",
             "{name: circles, options: {noise: ", "scheduler: {name: asha, ", "num_samples: ", "- ", "? ", "&a ",
             "*a", "!!python/object/apply:os.system ['echo pwned']", "!!binary aGk=", "!!set {a, b}", "!!float",
             "!!timestamp 2001-12-14", "\t", "\n", "  ", ": ", "{", "}", "[", "]", ",", "'", '"', "#", "%YAML 1.1\n",
             "---\n", "...\n", "|\n  x", ">-\n  y", "1e400", ".nan", "-.inf", "0x1F", "0o17", "~", "null", "yes",
             "supervised", "vat", "loguniform", "randint", "qrandint", "quniform", "grid", "[" * 300, "]" * 300]
mutations = st.tuples(st.integers(0, 10 ** 6), st.integers(0, 8), st.one_of(st.sampled_from(FRAGMENTS),
                                                                           st.text(max_size=4)))


@st.composite
def mutated_shipped(draw) -> str:
    """A shipped space with a few random cuts/insertions: mostly nearly-valid YAML, sometimes broken."""
    text = draw(st.sampled_from(SHIPPED_TEXT))
    for pos, cut, ins in draw(st.lists(mutations, min_size=1, max_size=4)):
        p = pos % (len(text) + 1)
        text = text[:p] + ins + text[p + cut:]
    return text


yaml_texts = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5),
                                                      max_size=12).map("".join), mutated_shipped())


@fast(120)
@given(text=yaml_texts, method=st.sampled_from(METHODS) | st.none())
def test_random_yaml_text_is_parsed_or_refused_with_config_error(text, method):
    space = parse_or_own_error(text, method)
    if space is not None:
        assert_valid_space(space, method)


def test_deeply_nested_yaml_is_a_config_error_not_a_recursion_error():
    with pytest.raises(SSLRayError):
        parse_space("search: " + "[" * 2000 + "]" * 2000)


@pytest.mark.parametrize("text", ["a: !!float ''", "a: !!timestamp nope", "a: !!int abc", "a: !!timestamp 2001-13-45"])
def test_yaml_constructor_crashes_are_config_errors(text):
    """PyYAML raises ValueError/IndexError/AttributeError (not YAMLError) on these: found by the fuzzing."""
    with pytest.raises(SSLRayError, match="malformed YAML"):
        parse_space(text)
    raw = text.removeprefix("a: ")
    assert C.parse_set([f"lr={raw}"]) == {"lr": raw}


def test_python_tags_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f"method: supervised\ndescription: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(SSLRayError, match="malformed YAML"):
        parse_space(text)
    assert not marker.exists()


# ---- search spaces: random structured documents ----------------------------------------------------------
@st.composite
def dataset_docs(draw):
    name = draw(st.sampled_from(sorted(DATASETS)) | scalars)
    if draw(st.booleans()):
        return name
    entry = DATASETS.get(name) if isinstance(name, str) else None
    opt_keys = (sorted(entry.options) if entry else []) or ["noise"]
    opts = draw(st.dictionaries(st.sampled_from(opt_keys) | st.text(max_size=4),
                                st.sampled_from([0, 1, -1, 0.5, 2.5, 1000, "x", True, BIG, 1e300]) | scalars,
                                max_size=3) | values)
    doc = {"name": name, "labels": draw(st.sampled_from([1, 2, 10, 50, 0, -1, 2.0, "50", None, True]) | scalars),
           "val_size": draw(st.sampled_from([None, 0, 10, -1, 1.5, "abc", [1], True])),
           "root": draw(st.sampled_from([None, "/nonexistent", 5, ["a"], {"a": 1}])),
           "download": draw(st.sampled_from([False, True, "yes", 1, None])), "options": opts}
    keys = draw(st.sets(st.sampled_from(sorted(DATASET_KEYS) + ["nme", "labelz"])))
    return {k: doc.get(k, 1) for k in keys}


@st.composite
def search_entries(draw, cls):
    key = draw(keys_for(cls))
    dist = draw(st.sampled_from(list(DISTRIBUTIONS)) | st.sampled_from(["normal", "", "Uniform"]) | scalars)
    vals = field_values(cls, key if isinstance(key, str) else "")
    nargs = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 4]))
    args = draw(st.lists(vals, min_size=nargs, max_size=nargs) | vals)
    if draw(st.integers(0, 9)) == 0:  # two distributions at once, or no mapping at all
        return key, draw(st.sampled_from([{dist: args, "choice": [1]}, args, dist, None]))
    return key, {dist: args}


@st.composite
def space_docs(draw, method):
    cls = get_method(method).Config
    doc = {}
    if draw(st.integers(0, 4)):
        doc["method"] = draw(st.sampled_from([method] * 6 + METHODS) | scalars)
    if draw(st.booleans()):
        doc["description"] = draw(st.text(max_size=10) | values)
    if draw(st.booleans()):
        doc["dataset"] = draw(dataset_docs())
    if draw(st.booleans()):
        doc["fixed"] = draw(st.lists(keys_for(cls).flatmap(
            lambda k: st.tuples(st.just(k), field_values(cls, k if isinstance(k, str) else ""))),
            max_size=4).map(dict) | values)
    if draw(st.integers(0, 5)):
        doc["search"] = draw(st.lists(search_entries(cls), max_size=4).map(dict) | values)
    if draw(st.booleans()):
        sched = {k: draw(st.sampled_from([1, 2, 3, 5, 20, 0, -1, 2.0, "asha", "fifo", "hyperband", None, True]))
                 for k in draw(st.sets(st.sampled_from(list(SCHEDULER_KEYS) + ["grace"])))}
        doc["scheduler"] = draw(st.just(sched) | st.sampled_from(["asha", "fifo", "x", 3, []]))
    if draw(st.booleans()):
        doc["num_samples"] = draw(st.sampled_from([1, 8, 0, -2, 2.0, "8", True, None]))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.text(max_size=5) | st.integers())] = draw(scalars)
    return doc


@pytest.mark.parametrize("method", METHODS)
@fast(35)
@given(data=st.data())
def test_random_structured_space_is_valid_or_config_error(method, data):
    doc = data.draw(space_docs(method))
    text = yaml.safe_dump(doc, sort_keys=False)
    passed = data.draw(st.sampled_from([None, method]))
    space = parse_or_own_error(text, passed)
    if space is not None:
        assert_valid_space(space, passed)


def test_a_valid_structured_space_is_accepted():
    """The strategies above can produce accepted documents: the acceptance checks are really exercised."""
    doc = {"method": "supervised", "dataset": {"name": "circles", "labels": 8, "options": {"noise": 0.1}},
           "fixed": {"batch_size": 32}, "search": {"lr": {"qloguniform": [0.001, 0.01, 0.001]},
                                                    "labeled_ratio": {"quniform": [0.2, 1.0, 0.2]},
                                                    "steps_per_epoch": {"qrandint": [1, 9, 4]}},
           "scheduler": {"name": "fifo", "max_epochs": 3}, "num_samples": 2}
    assert_valid_space(parse_space(yaml.safe_dump(doc)), "supervised")


@pytest.mark.parametrize("search, needle", [
    ({"lr": {"quniform": [0.001, 0.0105, 0.002]}}, "multiple"),   # Ray refuses bounds that are not multiples of q
    ({"lr": {"qloguniform": [0.003, 0.01, 0.002]}}, "multiple"),
    ({"steps_per_epoch": {"qrandint": [1, 3, 5]}}, "multiple"),  # no multiple of q in range: nothing to sample
    ({"lr": {"uniform": [BIG, BIG + 1]}}, "lr"),
    ({"batch_size": {"choice": [BIG]}}, "batch_size"),
    ({"lr": {"quniform": [0.001, 0.01, float("inf")]}}, "q"),
])
def test_ray_would_refuse_it_so_parse_space_refuses_it(search, needle):
    text = yaml.safe_dump({"method": "supervised", "search": search})
    with pytest.raises(SSLRayError, match=needle):
        parse_space(text)


@pytest.mark.parametrize("dataset", [{"name": ["digits"]}, {"name": "circles", "options": [1, 2]},
                                     {"name": "circles", "options": "noise"}, {"name": 5},
                                     {"name": "circles", "options": {"noise": BIG}}, {"val_size": "abc"},
                                     {"val_size": -1}, {"root": 5}, {"download": "yes"}])
def test_bad_dataset_fields_are_config_errors(dataset):
    with pytest.raises(SSLRayError, match="dataset"):
        parse_space(yaml.safe_dump({"method": "supervised", "dataset": dataset}))


# ---- --set key=value ----------------------------------------------------------------------------------------
def _as_text(v) -> str:
    if isinstance(v, str):
        return v
    return yaml.safe_dump(v, default_flow_style=True, width=10 ** 6).strip().removesuffix("...").strip() \
        if not isinstance(v, (int, float)) else str(v)


@st.composite
def set_items(draw, cls):
    key = draw(keys_for(cls))
    key = str(key)
    val = _as_text(draw(field_values(cls, key)))
    return draw(st.sampled_from([f"{key}={val}", f" {key} = {val}", f"{key}=", f"={val}", key, f"{key}=={val}",
                                 f"{key}={val}={val}"]))


@pytest.mark.parametrize("method", METHODS)
@fast(30)
@given(data=st.data())
def test_random_set_strings_build_a_valid_config_or_config_error(method, data):
    cls = get_method(method).Config
    items = data.draw(st.lists(set_items(cls), max_size=4))
    try:
        cfg = C.build(cls, C.parse_set(items), source="--set")
    except SSLRayError as e:
        assert str(e)
        event("refused")
        return
    event("accepted")
    assert_valid_config(cls, cfg)


def test_set_with_deep_nesting_or_huge_numbers_is_a_config_error():
    cls = get_method("supervised").Config
    for item in ["lr=" + "[" * 2000, "lr=" + "9" * 500, "batch_size=" + "9" * 500 + ".0", "lr=1e400"]:
        with pytest.raises(SSLRayError):
            C.build(cls, C.parse_set([item]))


# ---- the command line, without Ray ---------------------------------------------------------------------------
SUMMARY = {"val_error": 1.0, "test_error": 2.0, "epochs": 1, "seconds": 0.1, "output": "x", "method": "m",
           "dataset": "d", "labels": 1, "num_trials": 1, "num_stopped_early": 0, "num_errored": 0, "num_completed": 1,
           "results": "r", "experiment": "e"}


@pytest.fixture
def recorder(monkeypatch, tmp_path):
    """run_train / run_tune replaced: an accepted command line stops there, and we check what it passed."""
    import ssl_ray.tuning.train as T
    import ssl_ray.tuning.tune as U

    calls = []
    monkeypatch.setattr(T, "run_train", lambda spec, **kw: calls.append(("train", spec, kw)) or dict(SUMMARY))
    monkeypatch.setattr(U, "run_tune", lambda space, o: calls.append(("tune", space, o)) or dict(SUMMARY))
    monkeypatch.chdir(tmp_path)  # any stray relative path lands in the test's folder
    (tmp_path / "empty_data").mkdir()
    (tmp_path / "a_file").write_text("")
    return calls, tmp_path


def _num(kind):
    ints = st.sampled_from(["0", "1", "2", "3", "-1", "5", "50", "100000", "2.5", "abc", "", str(2 ** 40),
                            str(2 ** 70)])
    floats = st.sampled_from(["1", "0.5", "0", "-1", "nan", "inf", "-inf", "1e400", "abc", "2"])
    return ints if kind == "int" else floats


def _dataset_opts():
    return st.sampled_from(["noise=0.1", "noise=-1", "noise=abc", "factor=0.3", "factor=1.5", "n_train=300",
                            "n_train=0", "n_train=-5", "n_test=100", "n_test=0", "n_test=5000", "data_seed=-1",
                            "data_seed=3", f"data_seed={2 ** 40}", "sigma=0.2", "sigma=-1", "size=8", "nosuch=1",
                            "noise", "=1", "noise=[1"])


COMMON = {"--labels": _num("int"), "--val-size": _num("int"), "--seed": _num("int"), "--set": None,
          "--data-opt": None, "--workers": _num("int"), "--max-failures": _num("int"), "--address": st.text(max_size=5),
          "--dataset": st.sampled_from(sorted(DATASETS) + ["nosuch", ""])}
TRAIN = {**COMMON, "--epochs": _num("int"), "--batch-size": _num("int"), "--cpus-per-worker": _num("float"),
         "--gpus-per-worker": _num("float"), "--json": "flag"}
TUNE = {**COMMON, "--num-samples": _num("int"), "--max-epochs": _num("int"), "--grace-epochs": _num("int"),
        "--reduction-factor": _num("int"), "--scheduler": st.sampled_from(["asha", "fifo", "hyperband"]),
        "--max-concurrent": _num("int"), "--cpus-per-trial": _num("float"), "--gpus-per-trial": _num("float"),
        "--name": st.text(alphabet="abc-_", min_size=1, max_size=5), "--resume": "flag",
        "--confirm-seeds": _num("int"), "--quiet": "flag", "--json": "flag"}
EXTRA = st.sampled_from(["--nosuch", "-x", "extra", "--epochs", "--set", "--", "-h", "--labels=5", "--seed=-3"])


@st.composite
def command_lines(draw, command, root: Path):
    opts = TRAIN if command == "train" else TUNE
    method = draw(st.sampled_from(METHODS + ["nosuch"]))
    cls = get_method(method).Config if method in METHODS else get_method("supervised").Config
    args = [command, method]
    for opt in draw(st.lists(st.sampled_from(sorted(opts)), max_size=6)):
        if opts[opt] == "flag":
            args.append(opt)
        elif opt == "--set":
            args += [opt, draw(set_items(cls))]
        elif opt == "--data-opt":
            args += [opt, draw(_dataset_opts())]
        else:
            args += [opt, draw(opts[opt])]
    # datasets that need files point at an empty folder; outputs stay in the test's folder
    args += ["--data-root", str(root / "empty_data")]
    if command == "train" and draw(st.booleans()):
        args += ["--output", draw(st.sampled_from([str(root / "out"), str(root / "a_file" / "x")]))]
    if command == "tune":
        args += ["--storage", draw(st.sampled_from([str(root / "store"), str(root / "a_file" / "x"), "s3://b/x"]))]
        if draw(st.integers(0, 2)) == 0:
            space = root / "space.yaml"
            space.write_text(draw(st.sampled_from([yaml.safe_dump(draw(space_docs(method if method in METHODS
                                                                                    else "supervised")))])
                             | yaml_texts))
            args += ["--space", str(space)]
    if draw(st.integers(0, 4)) == 0:
        args.insert(draw(st.integers(1, len(args))), draw(EXTRA))
    assert "--download" not in args
    return args


def _check_cli_result(result, calls, args):
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 2), f"exit {result.exit_code} for {args}:\n{result.output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args} raised {result.exception!r}"
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert not calls, f"{args}: error after the run started"
        assert "error" in result.output.lower() or "usage" in result.output.lower()


@fast(40)
@given(data=st.data())
def test_random_train_command_lines(recorder, data):
    from ssl_ray.cli import main

    calls, root = recorder
    calls.clear()
    args = data.draw(command_lines("train", root))
    result = CliRunner().invoke(main, args)
    _check_cli_result(result, calls, args)
    for _, spec, kw in calls:
        assert spec.method in METHODS and spec.epochs >= 1 and 0 <= spec.seed < 2 ** 32
        assert_valid_config(get_method(spec.method).Config, spec.method_config())
        assert kw["workers"] >= 1 and math.isfinite(kw["cpus_per_worker"]) and kw["cpus_per_worker"] > 0
        g = kw["gpus_per_worker"]
        assert g is None or (math.isfinite(g) and g >= 0)
        assert kw["max_failures"] >= 0 and Path(kw["output"]).is_dir()
        assert spec.data.root == str(root / "empty_data") and not spec.data.download


@fast(40)
@given(data=st.data())
def test_random_tune_command_lines(recorder, data):
    from ssl_ray.cli import main

    calls, root = recorder
    calls.clear()
    args = data.draw(command_lines("tune", root))
    result = CliRunner().invoke(main, args)
    _check_cli_result(result, calls, args)
    for _, space, o in calls:
        assert_valid_space(space, None)
        assert math.isfinite(o.cpus_per_trial) and o.cpus_per_trial > 0
        assert o.gpus_per_trial is None or (math.isfinite(o.gpus_per_trial) and o.gpus_per_trial >= 0)
        assert o.workers >= 1 and o.confirm_seeds >= 0 and o.max_failures >= 0
        assert o.max_concurrent is None or o.max_concurrent >= 1
        assert 0 <= o.seed and o.seed + o.confirm_seeds < 2 ** 32
        assert space.data.root == str(root / "empty_data") and not space.data.download


def test_cli_fixes_found_by_the_fuzzing(recorder):
    """Concrete cases the random command lines found (each was a traceback or an accepted bad value)."""
    from ssl_ray.cli import main

    calls, root = recorder
    for args in (["train", "supervised", "--seed", "-1"], ["train", "supervised", "--cpus-per-worker", "nan"],
                 ["train", "supervised", "--gpus-per-worker", "-1"], ["train", "supervised", "--max-failures", "-1"],
                 ["tune", "supervised", "--cpus-per-trial", "inf"], ["tune", "supervised", "--reduction-factor", "-2",
                                                                      "--scheduler", "fifo"],
                 ["train", "supervised", "--dataset", "circles", "--data-opt", "n_train=-5"],
                 ["train", "supervised", "--dataset", "digits", "--data-opt", "n_test=0"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and r.output.startswith("error: "), (args, r.output, r.exception)
    assert not calls
    r = CliRunner().invoke(main, ["train", "supervised", "--labels", "20", "--output", str(root / "ok")])
    assert r.exit_code == 0 and len(calls) == 1, r.output


# ---- loaders that must never run code from a file -----------------------------------------------------------
def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            yield name, node


def _kw(node, name):
    return next((k.value for k in node.keywords if k.arg == name), None)


def unsafe_loader_calls(pkg: Path) -> list[str]:
    """Every call in the package that could run code from a file (the CIFAR pickle reader excepted)."""
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        funcs = {id(n): f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
        rel = path.relative_to(pkg.parent).as_posix()
        for name, node in _calls(tree):
            where = f"{rel}:{node.lineno} {name}"
            loader = _kw(node, "Loader")
            if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all",
                        "yaml.full_load_all") or (name.startswith("yaml.") and loader is not None
                                                  and getattr(loader, "attr", None) not in ("SafeLoader",
                                                                                            "CSafeLoader")):
                bad.append(where)
            if name == "torch.load":
                w = _kw(node, "weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    bad.append(where + " without weights_only=True")
            if name in ("np.load", "numpy.load"):
                a = _kw(node, "allow_pickle")
                if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
                    bad.append(where + " with allow_pickle")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads",
                        "marshal.loads", "cloudpickle.load", "cloudpickle.loads", "eval", "exec"):
                if not (rel == "ssl_ray/data/vision.py" and name == "pickle.load"
                        and funcs.get(id(node)) == "_unpickle"):
                    bad.append(where)
    return bad


def test_source_uses_only_safe_loaders():
    assert unsafe_loader_calls(PKG) == []
    # the CIFAR reader is the one pickle.load, and it is found (the scan sees real calls)
    assert any("vision.py" in p.as_posix() for p in PKG.rglob("*.py"))


def test_the_scan_would_catch_an_unsafe_loader(tmp_path):
    pkg = tmp_path / "ssl_ray"
    (pkg / "data").mkdir(parents=True)
    (pkg / "m.py").write_text("import torch, yaml, pickle\nx = torch.load('f')\ny = yaml.load('a', Loader=yaml.Loader)\n"
                              "z = torch.load('f', weights_only=True)\nw = yaml.safe_load('a')\n"
                              "v = pickle.loads(b'')\nu = eval('1')\nt = yaml.load('a', Loader=yaml.SafeLoader)\n")
    (pkg / "data" / "vision.py").write_text("import pickle\ndef _unpickle(f):\n    return pickle.load(f)\n"
                                            "def other(f):\n    return pickle.load(f)\n")
    assert unsafe_loader_calls(pkg) == ["ssl_ray/data/vision.py:5 pickle.load", "ssl_ray/m.py:2 torch.load without "
                                        "weights_only=True", "ssl_ray/m.py:3 yaml.load", "ssl_ray/m.py:6 pickle.loads",
                                        "ssl_ray/m.py:7 eval", "ssl_ray/m.py:8 yaml.load"]  # policy: safe_load only


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_a_pickled_object_is_refused_and_never_runs(tmp_path):
    from ssl_ray.engine import checkpoint

    marker = tmp_path / "pwned"
    d = tmp_path / "ckpt"
    d.mkdir()
    torch.save({"epoch": 1, "payload": _Evil(marker)}, d / checkpoint.STATE_FILE)  # pickles the __reduce__ call
    with pytest.raises(SSLRayError, match="cannot be loaded safely"):
        checkpoint.load(d)
    assert not marker.exists()
    # the same file really is dangerous: a plain unpickler would have run the command
    with open(d / checkpoint.STATE_FILE, "rb") as f:
        assert b"system" in f.read()
    # a legitimate checkpoint still loads
    checkpoint.save(d, {"epoch": 3, "w": torch.ones(2)})
    got = checkpoint.load(d)
    assert got["epoch"] == 3
    torch.testing.assert_close(got["w"], torch.ones(2))


def test_a_model_file_with_a_pickled_object_is_refused_in_one_line_naming_what(tmp_path):
    """predict / export's model.pt: refused without running the payload, in one line that says what was refused
    (it was the first line of torch's paragraph, "Weights only load failed. In PyTorch 2.6, we changed ...")."""
    from ssl_ray.export.predict import load_model

    marker = tmp_path / "pwned3"
    torch.save({"meta": {"format": 1}, "payload": _Evil(marker)}, tmp_path / "model.pt")
    with pytest.raises(SSLRayError) as e:
        load_model(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'model.pt'} cannot be loaded safely as an ssl-ray "
                                               f"model: UnpicklingError: ") and "GLOBAL posix.system" in msg, msg
    assert not marker.exists()


def test_raw_pickle_file_as_checkpoint_is_refused(tmp_path):
    from ssl_ray.engine import checkpoint

    marker = tmp_path / "pwned2"
    (tmp_path / checkpoint.STATE_FILE).write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(SSLRayError):
        checkpoint.load(tmp_path)
    assert not marker.exists()
    with pytest.raises(SSLRayError, match="no checkpoint"):
        checkpoint.load(tmp_path / "absent")
