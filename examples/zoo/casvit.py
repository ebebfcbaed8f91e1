"""CAS-ViT (Zhang et al. 2024, "CAS-ViT: Convolutional Additive Self-attention Vision Transformers
for Efficient Mobile Applications").

Deployment: convolutional additive token mixing (CATM) replaces softmax attention: Q, K, V from
1×1 convs; a spatial gate on Q (depthwise 3×3 → BN → ReLU → 1×1 → sigmoid, times Q) and a
channel gate on K (global pool → 1×1 → ReLU → 1×1 → sigmoid, times K) are *added*, mixed by a
depthwise 3×3 conv, and *multiplied by V* — products of activations throughout, no softmax, no
matmul. Blocks: a depthwise-conv local residual, CATM and an MLP, each behind BN with layer scale
and residual ADDs. Stem: two 3×3 stride-2 conv-BN-ReLU; patch embedding between stages: 3×3
stride-2 conv-BN.

Widths reduced (stage dims 24–192, depths 1-1-2-1).
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build, conv_bn, layer_scale


class SpatialGate(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_bn(c, c, 3, groups=c, act=nn.ReLU), nn.Conv2d(c, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.net(x)


class ChannelGate(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.net(x)


class CATM(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.sg, self.cg = SpatialGate(c), ChannelGate(c)
        self.mix = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.proj = nn.Conv2d(c, c, 3, padding=1, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        return self.proj(self.mix(self.sg(q) + self.cg(k)) * v)


class CASBlock(nn.Module):
    def __init__(self, c: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.GELU())
        self.norm1, self.attn = nn.BatchNorm2d(c), CATM(c)
        self.norm2 = nn.BatchNorm2d(c)
        self.mlp = nn.Sequential(nn.Conv2d(c, c * mlp_ratio, 1), nn.GELU(), nn.Conv2d(c * mlp_ratio, c, 1))
        self.g1, self.g2 = layer_scale(c), layer_scale(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.local(x)
        x = x + self.g1[:, None, None] * self.attn(self.norm1(x))
        return x + self.g2[:, None, None] * self.mlp(self.norm2(x))


class CASViT(nn.Module):
    def __init__(self, dims=(24, 48, 96, 192), depths=(1, 1, 2, 1), num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, dims[0] // 2, 3, 2, act=nn.ReLU), conv_bn(dims[0] // 2, dims[0], 3, 2, act=nn.ReLU))
        stages: list[nn.Module] = []
        for i, (d, n) in enumerate(zip(dims, depths)):
            down = [conv_bn(dims[i - 1], d, 3, 2)] if i else []
            stages.append(nn.Sequential(*down, *(CASBlock(d) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.stages(self.stem(x))).mean((2, 3)))


def casvit(size: int = 224):
    return build(lambda: CASViT(), f"zoo-casvit-{size}", size)


def casvit_small(size: int = 64):
    return build(lambda: CASViT((16, 24, 32, 48), (1, 1, 1, 1), num_classes=10), f"zoo-casvit-small-{size}", size)
