"""SimpleNet (Hasanpour et al. 2016, "Lets keep it simple, Using simple architectures to outperform
deeper and more complex architectures").

Deployment: the plain baseline — a VGG-like stack of 3×3 conv-BN-ReLU (13 layers, two of them 1×1)
with max pooling (an int8 op that must keep its input's scale), global max pooling and a Linear
head. Every BatchNorm folds; nothing but conv/ReLU/pool remains: if this net fails, everything else
will.

Widths reduced from the paper's (24–192, a 384-wide 1×1 bottleneck; 13 conv layers at 224²).
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build, conv_bn

# channels, or "M" for 2×2 max pool; (c, 1) marks a 1×1 conv.
LAYOUT = (24, "M", 48, 48, 48, "M", 96, 96, "M", 192, 192, "M", (384, 1), (96, 1), "M", 96)
SMALL = (16, 32, 32, "M", 32, 64, "M", 64, "M", (128, 1), (32, 1), "M", 32)


class SimpleNet(nn.Module):
    def __init__(self, layout=LAYOUT, num_classes: int = 1000) -> None:
        super().__init__()
        stem = layout is LAYOUT  # at 224² the first conv has stride 2, as in the paper's ImageNet variant
        layers: list[nn.Module] = [conv_bn(3, 24, 3, 2, act=nn.ReLU)] if stem else []
        cin = 24 if stem else 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            c, k = item if isinstance(item, tuple) else (item, 3)
            layers.append(conv_bn(cin, c, k, act=nn.ReLU))
            cin = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.amax(self.features(x), dim=(2, 3))
        return self.fc(x)


def simplenet(size: int = 224):
    return build(lambda: SimpleNet(), f"zoo-simplenet-{size}", size)


def simplenet_small(size: int = 64):
    return build(lambda: SimpleNet(SMALL, 10), f"zoo-simplenet-small-{size}", size)
