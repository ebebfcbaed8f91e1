"""Models for the Tune-mode, reparameterization and QAT tests: conv-BN patterns and reparam nets.

Every model comes with trained-looking BN statistics (`randomize_bn`) so a wrong fold shows.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgeconv.prepare.reparam.blocks import (ACBlock, DilatedReparamBlock, DiverseBranchBlock, MobileOneBlock,
                                     RepVGGBlock, repvgg_a0)  # noqa: F401 (re-exported for tests)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
            if m.affine:
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model


# --- conv-BN patterns for Tune mode: (name, factory, input shape, pairs switched, pairs left alone)

class Plain(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, bias=True), nn.BatchNorm2d(8))


class Depthwise(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU6(),
                         nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6, affine=False))


class Bottleneck(nn.Module):
    """ResNet bottleneck with a projection shortcut: 4 pairs, inplace ReLU, residual add."""

    def __init__(self, cin: int = 8, mid: int = 4, cout: int = 16, stride: int = 2) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + self.down(x))


class OneAndThree(nn.Module):
    """Conv1d-BN1d and Conv3d-BN3d, and a reflect-padded Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(3, 5, 3, padding=1), nn.BatchNorm1d(5)
        self.c3, self.b3 = nn.Conv3d(3, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4)
        self.c2, self.b2 = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.b1(self.c1(x.mean(-1))).mean()
        b = self.b3(self.c3(x.unsqueeze(2).repeat(1, 1, 3, 1, 1))).mean()
        return self.b2(self.c2(x)) + a + b


class ConvOutputReused(nn.Module):
    """The conv output feeds the BN *and* a skip: that pair must keep Eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        return self.bn2(self.conv2(self.bn(z) + z))


class BNAfterReLU(nn.Sequential):
    """torchcrepe's order: Conv -> ReLU -> BN is not a Tune-mode pair at all."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))


class SharedConv(nn.Module):
    """One conv-BN pair called twice: switching it once would be wrong for neither call, but the
    trace cannot prove the single-user property per call, so it is left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.bn(self.conv(x))))


class ControlFlow(nn.Module):
    """Data-dependent branching: torch.fx cannot trace it, torch.export (with inputs) can."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if x.shape[-1] > 4:  # shape-dependent: fine for export, a Proxy bool for fx
            y = F.relu(y)
        return y


TUNE_ZOO = [
    ("plain", Plain, (2, 3, 9, 9), 2, 0),
    ("depthwise", Depthwise, (2, 4, 7, 7), 2, 0),
    ("bottleneck", Bottleneck, (2, 8, 8, 8), 4, 0),
    ("conv1d-3d-reflect", OneAndThree, (2, 3, 6, 6), 3, 0),
    ("conv-output-reused", ConvOutputReused, (2, 3, 6, 6), 1, 1),
    ("bn-after-relu", BNAfterReLU, (2, 3, 6, 6), 1, 0),
    ("shared-conv", SharedConv, (2, 3, 6, 6), 0, 1),
    ("control-flow", ControlFlow, (2, 3, 6, 6), 1, 0),
]


# --- reparameterizable blocks and nets ----------------------------------------------------------

BLOCK_ZOO = [
    ("repvgg", lambda: RepVGGBlock(8, 8), (2, 8, 9, 9)),
    ("repvgg-stride2", lambda: RepVGGBlock(8, 16, stride=2), (2, 8, 9, 9)),
    ("mobileone", lambda: MobileOneBlock(8, 8, num_branches=3), (2, 8, 9, 9)),
    ("mobileone-dw", lambda: MobileOneBlock(8, 8, groups=8, num_branches=2), (2, 8, 9, 9)),
    ("mobileone-1x1", lambda: MobileOneBlock(8, 12, k=1), (2, 8, 9, 9)),
    ("acnet", lambda: ACBlock(6, 8), (2, 6, 9, 9)),
    ("acnet-stride2", lambda: ACBlock(6, 8, stride=2, k=5), (2, 6, 11, 11)),
    ("dbb", lambda: DiverseBranchBlock(6), (2, 6, 9, 9)),
    ("dbb-stride2", lambda: DiverseBranchBlock(6, stride=2), (2, 6, 9, 9)),
    ("dilated-reparam-7", lambda: DilatedReparamBlock(6, k=7), (2, 6, 15, 15)),
    ("dilated-reparam-13", lambda: DilatedReparamBlock(4, k=13), (2, 4, 21, 21)),
]


class RepNet(nn.Module):
    """A small net of every block kind, with a pool and a linear head (fp32 whole-model checks)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            RepVGGBlock(3, 16, stride=2), RepVGGBlock(16, 16), ACBlock(16, 24, stride=2),
            MobileOneBlock(24, 24, groups=24, num_branches=2), MobileOneBlock(24, 32, k=1),
            DiverseBranchBlock(32), DilatedReparamBlock(32, k=5, act=True))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def strip_methods(model: nn.Module) -> nn.Module:
    """Turn every reparam block into a plain module of the same forward without any merge method,
    so only the graph pass can merge it (the pass must not rely on the protocol)."""
    from edgeconv.prepare.reparam.protocol import METHODS

    for m in model.modules():
        cls = type(m)
        if any(hasattr(cls, name) for name in METHODS):
            bare = type(f"Bare{cls.__name__}", (cls,), {name: None for name in METHODS})
            m.__class__ = bare
    return model
