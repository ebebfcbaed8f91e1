"""ECA-Net (Wang et al. 2020, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks"), on a ResNet backbone with basic blocks.

Deployment: efficient channel attention — global average pool, then a *1-D* conv of adaptive
kernel size k (k = nearest odd of (log2 C + 1) / 2) across the channel axis, reached by
squeeze(-1).transpose(-1, -2) → Conv1d(1, 1, k) → transpose(-1, -2).unsqueeze(-1), a sigmoid, and
x * y.expand_as(x): a broadcast MUL of an activation by an activation, after BN and before the
residual ADD. Conv1d over a reshaped tensor is a shape pattern converters often mishandle.

ResNet-18-like with widths 32–256 and one or two basic blocks per stage.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from examples.zoo._common import build, conv_bn


def eca_kernel(c: int, gamma: int = 2, b: int = 1) -> int:
    t = int(abs((math.log2(c) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        k = eca_kernel(c)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.adaptive_avg_pool2d(x, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y).expand_as(x)


class ECABasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
        self.conv2 = conv_bn(cout, cout, 3)
        self.eca = ECA(cout)
        self.down = conv_bn(cin, cout, 1, stride, padding=0) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.eca(self.conv2(self.conv1(x)))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class ECAResNet(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), depths=(1, 2, 2, 1), num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, widths[0], 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                blocks.append(ECABasicBlock(cin, w, 2 if i and j == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def ecanet(size: int = 224):
    return build(lambda: ECAResNet(), f"zoo-ecanet-{size}", size)


def ecanet_small(size: int = 64):
    return build(lambda: ECAResNet((16, 24, 32, 64), (1, 1, 1, 1), num_classes=10), f"zoo-ecanet-small-{size}", size)
