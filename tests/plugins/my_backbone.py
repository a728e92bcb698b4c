"""Your own backbone, used by ssl-ray without forking it (the example of docs/ADDING_A_METHOD.md).

    export PYTHONPATH=/path/to/this/folder SSL_RAY_PLUGINS=my_backbone
    ssl-ray train my_supervised --set hidden=256
"""
from dataclasses import dataclass

import torch
from torch import nn

from ssl_ray.config import hp
from ssl_ray.methods.common import adam
from ssl_ray.methods.registry import register
from ssl_ray.methods.supervised import Supervised, SupervisedConfig


class MyBackbone(nn.Module):
    """Any nn.Module mapping float inputs (N, *input_shape) to K logits."""

    def __init__(self, input_shape, num_classes: int, hidden: int):
        super().__init__()
        d = int(torch.tensor(input_shape).prod())
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.GELU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


@dataclass
class MyConfig(SupervisedConfig):
    hidden: int = hp(128, "units of MyBackbone's hidden layer", low=1)


@register
class MySupervised(Supervised):
    """The supervised baseline on MyBackbone. Any ClassifierMethod (vat, entropy, ...) can be subclassed the
    same way: build() sets self.net (what predict() and `ssl-ray export` use) and its optimiser."""

    name = "my_supervised"
    Config = MyConfig
    paper = "example plugin"

    def build(self) -> None:
        self.net = MyBackbone(self.info.input_shape, self.info.num_classes, self.cfg.hidden)
        self.modules["net"] = self.net
        self.optimizers["opt"] = adam(self.net.parameters(), self.cfg.lr, weight_decay=self.cfg.weight_decay)
