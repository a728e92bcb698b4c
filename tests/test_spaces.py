"""Search spaces: every shipped YAML validates, and every kind of mistake is an error naming file, line, key."""

import pytest

from ssl_ray.errors import ConfigError
from ssl_ray.tuning.spaces import SPACES_DIR, load_space, parse_space

SHIPPED = sorted(SPACES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_space_validates(path):
    space = load_space(path)
    assert space.search, f"{path.name} searches nothing"
    from ssl_ray.methods import get_method

    if get_method(space.method).uses_labels and space.method != "supervised":
        assert "labeled_ratio" in space.search, f"{path.name} does not search R/T (labeled_ratio)"
    assert space.scheduler.grace_epochs <= space.scheduler.max_epochs


def test_every_method_has_a_default_space():
    from ssl_ray.methods import list_methods

    for m in list_methods():
        if not m.__module__.startswith("ssl_ray.methods."):
            continue  # a plugin method registered by another test
        assert (SPACES_DIR / f"{m.name}.yaml").exists(), f"no search_spaces/{m.name}.yaml"


GOOD = """\
method: supervised
dataset: {name: digits, labels: 50}
fixed: {batch_size: 32}
search:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  weight_decay: {choice: [0.0, 0.001]}
  steps_per_epoch: {randint: [1, 5]}
scheduler: {name: asha, max_epochs: 5, grace_epochs: 1, reduction_factor: 2}
num_samples: 3
"""


def test_good_space_parses_to_the_right_values():
    s = parse_space(GOOD, source="good.yaml")
    assert s.method == "supervised" and s.data.name == "digits" and s.data.labels == 50
    assert s.fixed == {"batch_size": 32}
    assert s.search["lr"].dist == "loguniform" and s.search["lr"].args == [1e-4, 1e-2]
    assert s.search["steps_per_epoch"].args == [1, 5]
    assert (s.scheduler.max_epochs, s.scheduler.grace_epochs, s.scheduler.reduction_factor) == (5, 1, 2)
    assert s.num_samples == 3
    ps = s.param_space()
    assert set(ps) == {"lr", "weight_decay", "steps_per_epoch"}


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_space(text, source="bad.yaml")
    return str(e.value)


@pytest.mark.parametrize("bad, must_contain", [
    (GOOD.replace("  lr: {loguniform", "  lrr: {loguniform"), ["bad.yaml:5", "search.lrr", "unknown hyperparameter",
                                                               "weight_decay"]),
    (GOOD.replace("loguniform: [1.0e-4, 1.0e-2]", "loguniform: [1.0e-2, 1.0e-4]"), ["bad.yaml:5", "search.lr",
                                                                                  "inverted"]),
    (GOOD.replace("loguniform: [1.0e-4, 1.0e-2]", "uniform: [0.1, 0.1]"), ["search.lr", "empty"]),
    (GOOD.replace("loguniform: [1.0e-4, 1.0e-2]", "loguniform: [0.0, 1.0]"), ["search.lr", "low > 0"]),
    (GOOD.replace("loguniform: [1.0e-4, 1.0e-2]", "normal: [0.0, 1.0]"), ["search.lr", "unknown distribution",
                                                                        "loguniform"]),
    (GOOD.replace("randint: [1, 5]", "uniform: [1, 5]"), ["search.steps_per_epoch", "int", "randint"]),
    (GOOD.replace("randint: [1, 5]", "randint: [-3, 5]"), ["search.steps_per_epoch", "out of range"]),
    (GOOD.replace("choice: [0.0, 0.001]", "choice: []"), ["search.weight_decay", "non-empty"]),
    (GOOD.replace("choice: [0.0, 0.001]", "choice: [0.0, -1.0]"), ["search.weight_decay", "out of range"]),
    (GOOD.replace("choice: [0.0, 0.001]", "choice: [0.0, abc]"), ["search.weight_decay", "expected float"]),
    (GOOD.replace("fixed: {batch_size: 32}", "fixed: {batch_size: 32, lr: 0.1}"), ["search.lr", "both fixed"]),
    (GOOD.replace("fixed: {batch_size: 32}", "fixed: {batch_size: 0}"), ["bad.yaml:3", "fixed.batch_size",
                                                                         "out of range"]),
    (GOOD.replace("fixed: {batch_size: 32}", "fixed: {labeled_ratio: 1.5}"), ["fixed.labeled_ratio", "(0, 1]"]),
    (GOOD.replace("method: supervised", "method: nosuch"), ["bad.yaml:1", "unknown method", "supervised"]),
    (GOOD + "extra: 1\n", ["bad.yaml:10", "extra", "allowed"]),
    (GOOD.replace("grace_epochs: 1", "grace_epochs: 9"), ["scheduler.grace_epochs", "exceeds"]),
    (GOOD.replace("name: asha", "name: hyperband"), ["scheduler.name", "asha, sha, fifo or pbt"]),
    (GOOD.replace("num_samples: 3", "num_samples: 0"), ["num_samples", "positive"]),
    (GOOD.replace("{name: digits, labels: 50}", "{name: nosuch}"), ["dataset", "unknown dataset"]),
    (GOOD.replace("{name: digits, labels: 50}", "{name: circles, options: {noyse: 1}}"), ["dataset", "noyse"]),
    (GOOD.replace("lr: {loguniform: [1.0e-4, 1.0e-2]}", "lr: {loguniform: [1.0e-4, 1.0e-2"), ["bad.yaml",
                                                                                          "malformed YAML"]),
    ("- just\n- a list\n", ["bad.yaml", "mapping"]),
])
def test_each_mistake_is_named(bad, must_contain):
    msg = _err(bad)
    for part in must_contain:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_set_fixes_a_value_and_stops_searching_it(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(GOOD)
    s = load_space(p, sets={"lr": 0.01})
    assert s.fixed["lr"] == 0.01 and "lr" not in s.search
    with pytest.raises(ConfigError, match="--set lr"):
        load_space(p, sets={"lr": -1})


def test_missing_file_and_wrong_method(tmp_path):
    with pytest.raises(ConfigError, match=r"search space .*nope.yaml: no such file"):
        load_space(tmp_path / "nope.yaml")
    p = tmp_path / "s.yaml"
    p.write_text(GOOD)
    with pytest.raises(ConfigError, match="not 'vat'"):
        load_space(p, method="vat")
