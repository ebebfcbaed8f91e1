"""Small models for the spine's tests, importable as factories (`tests.zoo:NAME`)."""
from __future__ import annotations

import torch
import torch.nn as nn

from edgeconv.models import ModelSpec


class ConvReluBn(nn.Module):
    """Conv → ReLU → BN, the torchcrepe pattern: the BN must not fold into the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.bn(torch.relu(self.conv(x)))
        y = self.bn2(self.conv2(y))
        return self.fc(y.mean((2, 3)))


def _randomize_bn(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
    return m.eval()


def conv_relu_bn() -> ModelSpec:
    torch.manual_seed(0)
    return ModelSpec(module=_randomize_bn(ConvReluBn()), example_inputs=(torch.randn(1, 3, 16, 16),),
                     name="conv-relu-bn")


def raises() -> nn.Module:
    raise RuntimeError("checkpoint server unreachable")


def not_a_module() -> int:
    return 42


class Unlowerable(nn.Module):
    """An op no edge converter lowers (FFT)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.fft.rfft2(self.conv(x)).abs().mean((2, 3))


def unlowerable() -> ModelSpec:
    return ModelSpec(module=Unlowerable().eval(), example_inputs=(torch.randn(1, 3, 16, 16),), name="unlowerable")


def needs_32() -> ModelSpec:
    """A model with a fixed-size linear head: any other spatial size fails."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)).eval()
    return ModelSpec(module=m, example_inputs=(torch.randn(1, 3, 32, 32),), name="needs-32")


class FloatTail(nn.Module):
    """Ends in an op the quantizer leaves float (cumsum): the program's output has no int8 step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(torch.relu(self.conv(x)).mean((2, 3))), 1)


def float_tail() -> ModelSpec:
    return ModelSpec(module=FloatTail().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="float-tail")
