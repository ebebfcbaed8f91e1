"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s").

Deployment: 7×7 depthwise conv, then *channels-last* LayerNorm and Linear 4C → GELU → Linear C
(PERMUTEs around every block), layer scale γ, residual ADD; channels-first LayerNorm in the stem
(4×4 stride-4 "patchify" conv) and before each 2×2 stride-2 downsampling conv. No BatchNorm at all:
nothing to fold, every normalisation is computed at run time (mean, var, rsqrt).

Widths reduced (stage dims 32–256, depths 1-1-3-1).
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import LayerNorm2d, build, layer_scale


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.act, self.pw2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = layer_scale(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pw2(self.act(self.pw1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(32, 64, 128, 256), depths=(1, 1, 3, 1), num_classes: int = 1000) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for i, (d, n) in enumerate(zip(dims, depths)):
            down = [nn.Conv2d(3, d, 4, 4), LayerNorm2d(d)] if i == 0 else [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
            stages.append(nn.Sequential(*down, *(ConvNeXtBlock(d) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.stages(x).mean((2, 3))))


def convnext(size: int = 224):
    return build(lambda: ConvNeXt(), f"zoo-convnext-{size}", size)


def convnext_small(size: int = 64):
    return build(lambda: ConvNeXt((16, 32, 48, 64), (1, 1, 1, 1), num_classes=10), f"zoo-convnext-small-{size}", size)
