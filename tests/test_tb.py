"""`ssl-ray tensorboard`'s log directory (tuning/tb.py): trial numbers zero-padded to the plan's width, and the
HParams columns declared from the search space (Discrete for choices, intervals labelled log for log-searched
ones), read back from the written file and through TensorBoard's own hparams plugin backend. The trials' event
files are real ones, written by the training loop's TBLogger (each declaring its own HParams experiment, as trials
do)."""
import json
from pathlib import Path

import pytest

from ssl_ray.engine.tblog import TBLogger
from ssl_ray.tuning import tb

SEARCH = {"arch": {"choice": ["mlp", "conv_small"]}, "labeled_ratio": {"uniform": [0.3, 0.7]},
          "n_fake": {"choice": [200, 400]}, "lr": {"loguniform": [0.0005, 0.01]}, "k": {"randint": [1, 5]}}


def _experiment(root: Path, n_plan: int, indices: list[int], search=SEARCH) -> Path:
    exp = root / "exp"
    exp.mkdir(parents=True)
    (exp / "ssl_ray_space.json").write_text(json.dumps({"search": search, "plan": [{}] * n_plan}))
    for i in indices:
        trial = exp / f"trial_fn_{(977 * (i + 1)) % 1000:03x}ab_{i}"  # Tune's trial ids: not in plan order
        cfg = {"arch": "mlp", "labeled_ratio": 0.5, "n_fake": 400, "lr": 0.001, "k": 2, "batch_size": 32}
        (trial).mkdir()
        (trial / "params.json").write_text(json.dumps(cfg))
        log = TBLogger(trial / "tensorboard")
        log.hparams(cfg, searched=list(search))  # the trial's own HParams declaration, as a trial writes it
        log.scalars({"val_error": 10.0 + i}, 1)
        log.close()
    return exp


def test_trial_numbers_sort_as_numbers(tmp_path):
    exp = _experiment(tmp_path, 12, [0, 1, 2, 9, 10, 11])
    names = [n.split("/")[1].split("_")[0] for n, _ in tb.runs(str(exp))]
    assert names == ["trial00", "trial01", "trial02", "trial09", "trial10", "trial11"]
    assert names == sorted(names)  # text order is the trials' order (was trial0, trial1, trial10, trial11, ...)
    exp2 = _experiment(tmp_path / "b", 101, [3, 100])  # the plan's width, not only the trials present
    assert [n.split("/")[1].split("_")[0] for n, _ in tb.runs(str(exp2))] == ["trial003", "trial100"]
    (exp2 / "ssl_ray_space.json").write_text("{damaged")  # no plan: the widest trial number present
    assert [n.split("/")[1].split("_")[0] for n, _ in tb.runs(str(exp2))] == ["trial003", "trial100"]


def _read_declared(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(path))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/experiment"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).experiment


def test_the_hparams_columns_come_from_the_space(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    exp = _experiment(tmp_path, 3, [0, 1, 2])
    root = tmp_path / "logdir"
    root.mkdir()
    tb.build_logdir([str(exp)], str(root))
    assert (root / tb.HPARAMS_FILE).is_file() and not list(root.glob("events.out.tfevents.*"))  # no trial's run
    declared = {h.name: h for h in _read_declared(root).hparam_infos}
    assert sorted(declared) == sorted(SEARCH)
    arch, n_fake, lr, ratio, k = (declared[x] for x in ("arch", "n_fake", "lr", "labeled_ratio", "k"))
    assert arch.type == api_pb2.DATA_TYPE_STRING and [v.string_value for v in arch.domain_discrete.values] == \
        ["mlp", "conv_small"]
    assert n_fake.type == api_pb2.DATA_TYPE_FLOAT64 and not n_fake.HasField("domain_interval")
    assert [v.number_value for v in n_fake.domain_discrete.values] == [200.0, 400.0]  # a choice, not 200..400
    assert (lr.domain_interval.min_value, lr.domain_interval.max_value) == (0.0005, 0.01)
    assert lr.display_name == "lr (log)" and "log-uniformly" in lr.description and "Logarithmic" in lr.description
    assert ratio.display_name == "labeled_ratio" and "log" not in ratio.description
    assert (ratio.domain_interval.min_value, ratio.domain_interval.max_value) == (0.3, 0.7)
    assert (k.domain_interval.min_value, k.domain_interval.max_value) == (1.0, 4.0)  # randint's end is exclusive
    # each trial declares its own experiment (n_fake continuous there): TensorBoard's plugin takes ours
    trial_decl = {h.name: h for h in _read_declared(next(exp.glob("*/tensorboard"))).hparam_infos}
    assert not trial_decl["n_fake"].domain_discrete.values
    assert _plugin_experiment(root) == sorted((h.name, h.display_name) for h in declared.values())


def _plugin_experiment(root: Path):
    """What TensorBoard's hparams plugin serves (its Python loader, --load_fast=false): (name, display name)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    m = plugin_event_multiplexer.EventMultiplexer()
    m.AddRunsFromDirectory(str(root))
    m.Reload()
    ctx = backend_context.Context(base_plugin.TBContext(logdir=str(root), multiplexer=m,
                                                        data_provider=data_provider.MultiplexerDataProvider(m, str(root))))
    rc = context.RequestContext()
    md = ctx.hparams_metadata(rc, "")
    exp = ctx.experiment_from_metadata(rc, "", True, md, ctx.hparams_from_data_provider(rc, "", None))
    return sorted((h.name, h.display_name) for h in exp.hparam_infos)


def test_several_experiments_merge_their_domains():
    a = {"n_fake": {"choice": [200, 400]}, "lr": {"loguniform": [0.001, 0.01]}, "tau": {"uniform": [1.0, 2.0]}}
    b = {"n_fake": {"choice": [400, 800]}, "lr": {"loguniform": [0.0001, 0.005]}, "tau": {"loguniform": [1.0, 4.0]},
         "arch": {"grid": ["mlp"]}, "odd": {"choice": [1]}}
    c = {"odd": {"uniform": [0.0, 1.0]}}
    got = tb.merged_domains([a, b, c])
    assert got == {"n_fake": ("discrete", [200, 400, 800]), "lr": ("log", [0.0001, 0.01]),
                   "tau": ("interval", [1.0, 4.0]), "arch": ("discrete", ["mlp"]), "odd": ("", [])}
    assert tb.merged_domains([{"x": "not a dict"}]) == {"x": ("", [])}
    assert tb.write_hparams_config("/nonexistent", []) is None  # no searched keys: nothing declared


@pytest.mark.parametrize("bad", [{"x": {"uniform": ["a", 1]}}, {"x": {"choice": []}}, {"x": {"normal": [0, 1]}}])
def test_unknown_domains_are_declared_without_one(tmp_path, bad):
    from tensorboard.plugins.hparams import api_pb2

    (info,) = tb.hparam_infos([bad])
    assert info.name == "x" and info.type == api_pb2.DATA_TYPE_UNSET
    assert not info.HasField("domain_interval") and not info.HasField("domain_discrete")
