"""HorNet (Rao et al. 2022, "HorNet: Efficient High-Order Spatial Interactions with Recursive Gated
Convolutions").

Deployment: the recursive gated convolution gⁿConv — a 1×1 conv to 2C, split into a gate p₀ and a
stack of n feature maps of widths C/2ⁿ⁻¹ … C that go through one 7×7 depthwise conv (times a
scale), then p_{k+1} = 1×1(p_k) · q_k recursively: *products of activations* n deep (order 2–5
across the stages), whose int8 ranges multiply. Channels-first LayerNorm written out (mean, var,
sqrt) before gⁿConv; channels-last LayerNorm + Linear MLP (PERMUTEs); layer scale; residual ADDs.

Widths reduced (stage dims 32–256 so order 5 still has C/16 = 16 channels; depths 1-1-2-1).
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import LayerNorm2d, build, layer_scale


class GnConv(nn.Module):
    def __init__(self, c: int, order: int, k: int = 7, s: float = 1.0 / 3.0) -> None:
        super().__init__()
        self.dims = [c // 2 ** i for i in range(order)][::-1]
        self.proj_in = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(sum(self.dims), sum(self.dims), k, padding=k // 2, groups=sum(self.dims))
        self.proj_out = nn.Conv2d(c, c, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        self.scale = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        dw = torch.split(self.dw(abc) * self.scale, self.dims, dim=1)
        x = pwa * dw[0]
        for i, pw in enumerate(self.pws):
            x = pw(x) * dw[i + 1]
        return self.proj_out(x)


class HorBlock(nn.Module):
    def __init__(self, c: int, order: int) -> None:
        super().__init__()
        self.norm1, self.gnconv = LayerNorm2d(c), GnConv(c, order)
        self.norm2 = nn.LayerNorm(c, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))
        self.g1, self.g2 = layer_scale(c), layer_scale(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.g1[:, None, None] * self.gnconv(self.norm1(x))
        y = self.g2 * self.mlp(self.norm2(x.permute(0, 2, 3, 1)))
        return x + y.permute(0, 3, 1, 2)


class HorNet(nn.Module):
    def __init__(self, dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), orders=(2, 3, 4, 5), num_classes: int = 1000) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for i, (d, n, o) in enumerate(zip(dims, depths, orders)):
            down = [nn.Conv2d(3, d, 4, 4), LayerNorm2d(d)] if i == 0 else [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
            stages.append(nn.Sequential(*down, *(HorBlock(d, o) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.stages(x).mean((2, 3))))


def hornet(size: int = 224):
    return build(lambda: HorNet(), f"zoo-hornet-{size}", size)


def hornet_small(size: int = 64):
    return build(lambda: HorNet((16, 32, 32, 64), (1, 1, 1, 1), (2, 2, 3, 3), num_classes=10), f"zoo-hornet-small-{size}", size)
