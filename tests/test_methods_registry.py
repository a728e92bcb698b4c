"""Registry-driven tests: every registered method, on a 2-D set and on 8x8 images, the day it is added.

For each method: a short CPU run gives finite losses and an error rate in [0, 100]; every optimiser's
parameters move; each optimiser step (one player's) moves that player's parameters only; the parts of the
method interface the loop reads are declared (num_clusters, all_modules(), the players partitioning the
parameters, a labeled_ratio knob exactly where labels are used); a checkpoint written after one epoch and
restored into a fresh trainer continues with exactly the numbers of an uninterrupted run.
"""
import dataclasses
import math

import pytest
import torch

from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.methods import list_methods
from ssl_ray.methods.common import EMA

METHODS = [m.name for m in list_methods()]
TINY = {"batch_size": 16, "steps_per_epoch": 2}


def _spec(method: str, image: bool, epochs: int = 1) -> RunSpec:
    cls = next(m for m in list_methods() if m.name == method)
    if image:
        data = DataSpec("digits", labels=20, val_size=100)
    elif cls.uses_labels:
        data = DataSpec("circles", labels=8, val_size=100, options={"n_train": 500, "n_test": 200})
    else:
        data = DataSpec("gaussians", labels=8, val_size=100, options={"n_train": 500, "n_test": 200})
    return RunSpec(method, data, epochs=epochs, seed=3, config=dict(TINY), eval_test=True)


def test_registry_lists_the_product_methods():
    for name in ("supervised", "improvedgan", "i2gan", "vat", "advgen", "vcagan", "gan", "infogan", "entropy"):
        assert name in METHODS, f"{name} is not registered"


@pytest.mark.parametrize("image", [False, True], ids=["points", "digits"])
@pytest.mark.parametrize("method", METHODS)
def test_train_step_runs_and_moves_every_optimiser(method, image):
    tr = Trainer(_spec(method, image), progress=False)
    before = {name: [p.detach().clone() for g in opt.param_groups for p in g["params"]]
              for name, opt in tr.method.optimizers.items()}
    m = tr.fit()
    losses = {k: v for k, v in m.items() if k.startswith("loss_")}
    assert losses, "train_step returned no losses"
    for k, v in losses.items():
        assert math.isfinite(v), f"{k} = {v}"
    assert 0.0 <= m["val_error"] <= 100.0
    assert 0.0 <= m["test_error"] <= 100.0
    for name, opt in tr.method.optimizers.items():
        after = [p.detach() for g in opt.param_groups for p in g["params"]]
        moved = any(not torch.equal(a, b) for a, b in zip(after, before[name]))
        assert moved, f"optimiser {name!r} of {method} did not change its parameters"


@pytest.mark.parametrize("image", [False, True], ids=["points", "digits"])
@pytest.mark.parametrize("method", METHODS)
def test_the_interface_the_loop_reads_is_declared(method, image):
    tr = Trainer(_spec(method, image), progress=False)
    m, cls = tr.method, tr.method_cls
    # num_clusters: how many ids a clustering method's predictions take (the classes otherwise)
    assert isinstance(m.num_clusters, int) and m.num_clusters >= 1
    if not cls.clustering:
        assert m.num_clusters == tr.info.num_classes
    # all_modules(): every module the method holds (attributes, EMA copies), so the loop syncs all their buffers
    declared = {id(x) for x in m.all_modules()}
    held = [v for v in vars(m).values() if isinstance(v, torch.nn.Module)]
    held += [v.shadow for v in vars(m).values() if isinstance(v, EMA)]
    held += list(m.modules.values())
    missing = [type(x).__name__ for x in held if id(x) not in declared]
    assert not missing, f"{method} holds modules that all_modules() does not declare: {missing}"
    # the players: each optimiser steps its own parameters; together they are every trainable parameter
    owner: dict[int, str] = {}
    for name, opt in m.optimizers.items():
        for p in (p for g in opt.param_groups for p in g["params"]):
            assert id(p) not in owner, f"a parameter is stepped by both {owner[id(p)]!r} and {name!r}"
            owner[id(p)] = name
    trainable = {id(p) for mod in m.modules.values() for p in mod.parameters() if p.requires_grad}
    assert trainable == set(owner), f"{method}: the optimisers' parameters are not the modules' trainable ones"
    # a labelled share R/T is a knob exactly where batches carry labels
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    assert ("labeled_ratio" in fields) == cls.uses_labels, f"{method}: labeled_ratio knob vs uses_labels"


@pytest.mark.parametrize("image", [False, True], ids=["points", "digits"])
@pytest.mark.parametrize("method", METHODS)
def test_each_players_step_moves_only_its_parameters(method, image):
    """Every optimiser step of a training epoch (Method.step(opt, ...): one player's) changes parameters of
    that optimiser only; every player moves at some step; the freezing of the others is undone after it."""
    tr = Trainer(_spec(method, image), progress=False)
    m = tr.method
    players = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in m.optimizers.items()}
    moved_by: dict[str, set[str]] = {name: set() for name in players}
    orig = m.step

    def spy(opt, loss, params=None):
        before = {k: [p.detach().clone() for p in ps] for k, ps in players.items()}
        orig(opt, loss, params)
        me = next(k for k, o in m.optimizers.items() if o is opt)
        moved = {k for k, ps in players.items() if any(not torch.equal(b, p) for b, p in zip(before[k], ps))}
        assert moved <= {me}, f"{method}: the step of {me!r} moved {sorted(moved - {me})}"
        moved_by[me] |= moved

    m.step = spy
    tr.run_epoch()
    assert all(moved_by[k] == {k} for k in players), f"{method}: players that never moved: {moved_by}"
    flags = [p.requires_grad for ps in players.values() for p in ps]
    assert all(flags), f"{method}: parameters left frozen after training steps"


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_resume_matches_uninterrupted_run(method):
    straight = Trainer(_spec(method, image=False, epochs=2), progress=False)
    straight.fit()
    m_straight = straight.history[-1]

    first = Trainer(_spec(method, image=False, epochs=1), progress=False)
    first.fit()
    state = first.state()
    # through a real file, loaded the safe way
    import tempfile

    from ssl_ray.engine import checkpoint

    with tempfile.TemporaryDirectory() as d:
        checkpoint.save(d, state)
        loaded = checkpoint.load(d)
    resumed = Trainer(_spec(method, image=False, epochs=2), progress=False)
    resumed.restore(loaded)
    assert resumed.epoch == 1
    resumed.fit()
    m_resumed = resumed.history[-1]
    for k in ("val_error", "test_error"):
        assert m_resumed[k] == pytest.approx(m_straight[k], abs=1e-9), k
    for k in (k for k in m_straight if k.startswith("loss_")):
        torch.testing.assert_close(torch.tensor(m_resumed[k]), torch.tensor(m_straight[k]), rtol=1e-5, atol=1e-6)
