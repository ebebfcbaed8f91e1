"""The embedded demo network: a tiny edge-style conv net for 32x32 digit images.

It has the parts real edge nets have, so every pass and exporter meets them on the default run:
a 3x3 stride-2 Conv-BN-ReLU6 stem on 3 channels, depthwise-separable blocks, an inverted-residual
add, global average pooling and a linear classifier.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Normalisation of the preprocessed digits (pixels in [0, 1] after dividing by 16, bilinear
# upsampled): mean/std of the whole load_digits set, rounded. Fixed here so training, the bundled
# held-out split and a user's own images agree.
MEAN = (0.305, 0.305, 0.305)
STD = (0.324, 0.324, 0.324)
INPUT_SHAPE = (1, 3, 32, 32)
NUM_CLASSES = 10


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class SeparableBlock(nn.Module):
    """3x3 depthwise conv-BN-ReLU6, then 1x1 pointwise conv-BN; residual add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = conv_bn(cin, cin, 3, stride=stride, groups=cin)
        self.pointwise = conv_bn(cin, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


class DemoNet(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        c = width
        self.stem = conv_bn(3, c, 3, stride=2)              # 32 -> 16
        self.blocks = nn.Sequential(
            SeparableBlock(c, 2 * c, stride=2),             # 16 -> 8
            SeparableBlock(2 * c, 2 * c),                   # residual
            SeparableBlock(2 * c, 4 * c, stride=2),         # 8 -> 4
        )
        self.head_act = nn.ReLU6()  # pointwise convs are linear; activate once before pooling
        self.fc = nn.Linear(4 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_act(self.blocks(self.stem(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)
