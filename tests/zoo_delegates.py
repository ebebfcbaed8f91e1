"""Tiny nets that plant one op a delegate table excludes, for tests/test_delegates.py.

Random weights with a fixed seed; what matters is the op list of the exported file, not accuracy.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgeconv.models import ModelSpec


class UpsampleIsland(nn.Module):
    """conv -> nearest x2 upsample -> conv -> global mean -> linear: RESIZE_NEAREST_NEIGHBOR sits
    between two runs of ops every table takes, so a delegate without it splits the graph in two."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.relu(self.c2(x))
        return self.fc(x.mean((2, 3)))


class AvgPoolNet(nn.Module):
    """conv -> 2x2 average pool -> conv -> mean -> linear: in int8, AVERAGE_POOL_2D is an op XNNPACK
    accepts only in float32 (a parameter rule, not a missing op)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        return self.fc(x.mean((2, 3)))


def upsample_island() -> ModelSpec:
    return ModelSpec(module=UpsampleIsland().eval(), example_inputs=(torch.rand(1, 3, 16, 16),), name="upsample-island")


def avgpool_net() -> ModelSpec:
    return ModelSpec(module=AvgPoolNet().eval(), example_inputs=(torch.rand(1, 3, 16, 16),), name="avgpool-net")


class ConvChain(nn.Module):
    """Three convs in a row: full-integer, the Hexagon DSP (8-bit only) takes every op; with the
    middle conv left in float (a quant config naming `c2`), that conv and its DEQUANTIZE stay on the
    CPU and split the graph."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(F.relu(self.c2(F.relu(self.c1(x)))))


def _noise(n: int = 16):
    """Bundled calibration data (uniform noise, marked not real) so `edgeconv gate` can export it."""
    import numpy as np
    from edgeconv.calib.data import DataSet

    x = np.random.default_rng(0).random((n, 3, 16, 16), dtype=np.float32)
    return DataSet(x, None, "uniform noise (tests/zoo_delegates.py)", real=False)


def conv_chain() -> ModelSpec:
    return ModelSpec(module=ConvChain().eval(), example_inputs=(torch.rand(1, 3, 16, 16),), name="conv-chain",
                     data=_noise)
