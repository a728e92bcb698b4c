"""What methods/ itself says about a method, so that nothing above it switches on method classes: the module
export writes (Method.export_module), the weight average's hyperparameters (one EMAConfig) and its checkpoint
state (written in one place, EMAEvaluated)."""
from __future__ import annotations

import pytest
import torch

from ssl_ray import config as C
from ssl_ray.data import DataInfo
from ssl_ray.methods import get_method
from ssl_ray.methods.common import EMA, ClassifierConfig, ClassifierMethod, EMAConfig, EMAEvaluated

INFO = DataInfo("points", (2,), 2, "points", ("a", "b"))


class Averaged(EMAEvaluated[ClassifierConfig], ClassifierMethod[ClassifierConfig]):
    """A classifier evaluated through the average of its weights, and nothing else."""

    Config = ClassifierConfig

    def build(self) -> None:
        super().build()
        self.ema = EMA(self.net, 0.9)

    def trained_net(self):
        return self.net


def test_the_average_is_saved_and_restored_by_the_evaluated_method():
    torch.manual_seed(0)
    a = Averaged(ClassifierConfig(arch="mlp"), INFO)
    for _ in range(3):
        with torch.no_grad():
            for p in a.net.parameters():
                p.add_(0.1)
        a.ema.update(a.net)
    state = a.state_dict()
    assert state["extra"]["ema"]["num_updates"] == 3
    b = Averaged(ClassifierConfig(arch="mlp"), INFO)
    b.load_state_dict(state)
    assert b.ema.num_updates == 3
    for x, y in zip(a.ema.shadow.parameters(), b.ema.shadow.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert b.export_module() is b.ema.shadow  # what export writes: the average it evaluates


@pytest.mark.parametrize("name, decay, warmup", [("fixmatch", 0.999, True), ("meanteacher", 0.99, False)])
def test_one_ema_config_with_each_methods_defaults(name, decay, warmup):
    cls = get_method(name)
    assert issubclass(cls.Config, EMAConfig)
    cfg = C.build(cls.Config, {})
    assert (cfg.ema_decay, cfg.ema_warmup) == (decay, warmup)
    assert C.build(cls.Config, {"ema_warmup": not warmup}).ema_warmup is not warmup


def test_make_ema_follows_the_config():
    net = torch.nn.Linear(2, 2)
    assert EMAConfig(ema_decay=0.0).make_ema(net) is None
    ema = EMAConfig(ema_decay=0.5, ema_warmup=False).make_ema(net)
    assert ema is not None and ema.current_decay() == 0.5
    assert EMAConfig(ema_decay=0.5).make_ema(net).current_decay() == pytest.approx(0.1)  # n = 0: 1/10


def test_a_method_without_a_network_to_export_says_so():
    from ssl_ray.errors import SSLRayError
    from ssl_ray.methods.base import Method

    class NoNet(Method[ClassifierConfig]):
        Config = ClassifierConfig

        def build(self) -> None:
            pass

    with pytest.raises(SSLRayError, match="cannot export method NoNet"):
        NoNet(ClassifierConfig(), INFO).export_module()
