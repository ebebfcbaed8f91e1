"""InceptionNeXt (Yu et al. 2024, "InceptionNeXt: When Inception Meets ConvNeXt").

Deployment: the Inception depthwise token mixer splits the channels four ways — an identity
branch, a 3×3 square depthwise conv, a 1×11 and an 11×1 *band* depthwise conv (band kernels) —
and concatenates them; the block then applies BatchNorm (foldable only into what precedes a
concat, i.e. it is a per-channel affine *after* a CONCAT of differently-scaled int8 tensors), an
MLP of 1×1 convs with GELU, layer scale and a residual ADD. Stem: 4×4 stride-4 conv + BN;
downsampling: BN + 2×2 stride-2 conv; head: pool → Linear → GELU → LayerNorm → Linear.

Widths reduced (stage dims 32–256, depths 1-1-3-1).
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build, layer_scale


class InceptionDWConv2d(nn.Module):
    def __init__(self, c: int, square: int = 3, band: int = 11, ratio: float = 0.125) -> None:
        super().__init__()
        gc = int(c * ratio)
        self.dw_hw = nn.Conv2d(gc, gc, square, padding=square // 2, groups=gc)
        self.dw_w = nn.Conv2d(gc, gc, (1, band), padding=(0, band // 2), groups=gc)
        self.dw_h = nn.Conv2d(gc, gc, (band, 1), padding=(band // 2, 0), groups=gc)
        self.splits = (c - 3 * gc, gc, gc, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.splits, dim=1)
        return torch.cat((x_id, self.dw_hw(x_hw), self.dw_w(x_w), self.dw_h(x_h)), dim=1)


class MetaNeXtBlock(nn.Module):
    def __init__(self, c: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.mixer = InceptionDWConv2d(c)
        self.norm = nn.BatchNorm2d(c)
        self.mlp = nn.Sequential(nn.Conv2d(c, c * mlp_ratio, 1), nn.GELU(), nn.Conv2d(c * mlp_ratio, c, 1))
        self.gamma = layer_scale(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.mixer(x)))
        return x + self.gamma[:, None, None] * y


class InceptionNeXt(nn.Module):
    def __init__(self, dims=(32, 64, 128, 256), depths=(1, 1, 3, 1), num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), nn.BatchNorm2d(dims[0]))
        stages: list[nn.Module] = []
        for i, (d, n) in enumerate(zip(dims, depths)):
            down = [nn.BatchNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)] if i else []
            ratio = 3 if i == len(dims) - 1 else 4
            stages.append(nn.Sequential(*down, *(MetaNeXtBlock(d, ratio) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        h = dims[-1] * 3
        self.head = nn.Sequential(nn.Linear(dims[-1], h), nn.GELU(), nn.LayerNorm(h), nn.Linear(h, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def inceptionnext(size: int = 224):
    return build(lambda: InceptionNeXt(), f"zoo-inceptionnext-{size}", size)


def inceptionnext_small(size: int = 64):
    return build(lambda: InceptionNeXt((16, 32, 48, 64), (1, 1, 1, 1), num_classes=10), f"zoo-inceptionnext-small-{size}", size)
