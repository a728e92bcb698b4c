"""The weight average used for evaluation (ImprovedGAN, I2GAN): TensorFlow's num_updates warm-up against a hand
computation, the cap at the configured decay, and an exact resume (the update counter is state)."""
from __future__ import annotations

import tempfile

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.methods.common import EMA


def _scalar_module(v: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(v)
    return m


def _hand_average(values: list[float], start: float, decay: float, warmup: bool) -> float:
    a = start
    for n, v in enumerate(values):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        a = d * a + (1 - d) * v
    return a


@pytest.mark.parametrize("warmup", [True, False])
def test_average_matches_hand_computation(warmup):
    torch.manual_seed(0)
    values = torch.randn(30, dtype=torch.float64).tolist()
    net = _scalar_module(5.0).double()
    ema = EMA(net, 0.9999, warmup=warmup)
    for v in values:
        with torch.no_grad():
            net.weight.fill_(v)
        ema.update(net)
    hand = _hand_average(values, 5.0, 0.9999, warmup)
    assert_close(ema.shadow.weight.item(), hand, rtol=1e-12, atol=1e-12)
    assert ema.num_updates == 30


def test_warmup_forgets_the_initial_weights_at_a_short_budget():
    """The issue's case: 220 updates with decay 1 - 1e-4. Without warm-up ~98 % of the start remains;
    with it the start's weight is prod_n d_n = prod (1+n)/(10+n) = 9! * 220! / 229! (about 1e-15)."""
    start, target = 1.0, 0.0
    warm = EMA(_scalar_module(start), 0.9999)
    cold = EMA(_scalar_module(start), 0.9999, warmup=False)
    net = _scalar_module(target)
    for _ in range(220):
        warm.update(net)
        cold.update(net)
    assert_close(cold.shadow.weight.item(), 0.9999 ** 220, rtol=1e-5, atol=0)
    assert 0.97 < cold.shadow.weight.item() < 0.99
    assert abs(warm.shadow.weight.item()) < 1e-6


def test_decay_schedule_and_cap():
    ema = EMA(_scalar_module(0.0), 0.99)
    assert ema.current_decay() == pytest.approx(0.1, abs=1e-12)  # n = 0: 1/10
    ema.num_updates = 10
    assert ema.current_decay() == pytest.approx(11 / 20, abs=1e-12)
    ema.num_updates = 890  # 891/900 = 0.99: the cap is reached here
    assert ema.current_decay() == pytest.approx(0.99, abs=1e-12)
    ema.num_updates = 10 ** 6
    assert ema.current_decay() == 0.99
    assert EMA(_scalar_module(0.0), 0.5).current_decay() == pytest.approx(0.1)  # min(decay, 1/10)
    assert EMA(_scalar_module(0.0), 0.05).current_decay() == 0.05


def test_state_dict_round_trip_continues_exactly():
    torch.manual_seed(1)
    net = nn.Linear(3, 2)
    straight, first = EMA(net, 0.999), EMA(net, 0.999)
    steps = [torch.randn(2, 3) for _ in range(12)]
    for i, w in enumerate(steps):
        with torch.no_grad():
            net.weight.copy_(w)
        straight.update(net)
        if i < 5:
            first.update(net)
        if i == 4:
            resumed = EMA(nn.Linear(3, 2), 0.999)
            resumed.load_state_dict(first.state_dict())
            assert resumed.num_updates == 5
        elif i > 4:
            resumed.update(net)
    assert resumed.num_updates == straight.num_updates == 12
    for a, b in zip(resumed.shadow.parameters(), straight.shadow.parameters()):
        assert torch.equal(a, b)


def test_trainer_resume_keeps_the_counter():
    """A Trainer checkpoint (through a real file) restores the EMA's update counter and weights exactly."""
    def spec(epochs):
        return RunSpec("improvedgan", DataSpec("digits", labels=20, val_size=100), epochs=epochs, seed=3,
                       config={"batch_size": 16, "steps_per_epoch": 3})
    straight = Trainer(spec(2), progress=False)
    straight.fit()
    first = Trainer(spec(1), progress=False)
    first.fit()
    with tempfile.TemporaryDirectory() as d:
        checkpoint.save(d, first.state())
        loaded = checkpoint.load(d)
    resumed = Trainer(spec(2), progress=False)
    resumed.restore(loaded)
    assert resumed.method.ema.num_updates == 3
    resumed.fit()
    assert resumed.method.ema.num_updates == straight.method.ema.num_updates == 6
    for a, b in zip(resumed.method.ema.shadow.parameters(), straight.method.ema.shadow.parameters()):
        assert_close(a, b, rtol=1e-6, atol=1e-7)
