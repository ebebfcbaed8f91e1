"""ConvFormer and CAFormer (Yu et al. 2023, "MetaFormer Baselines for Vision").

Deployment: MetaFormer blocks run channels-last (N×H×W×C) with Linear layers, so the graph is
full of PERMUTEs around the depthwise conv and the downsampling convs; normalisation is LayerNorm
*without bias*; the activation is StarReLU, s·relu(x)² + b with learnable scalars (a square of an
activation). ConvFormer's token mixer is the separable conv (Linear C→2C, StarReLU, 7×7 depthwise,
Linear 2C→C); CAFormer replaces it with multi-head self-attention (batched matmul, softmax) in its
last two stages. Stem: 7×7 stride-4 conv; downsampling: LayerNorm + 3×3 stride-2 conv. Head: pool,
LayerNorm, MLP head with squared ReLU and LayerNorm.

Widths reduced (stage dims 32–256, depths 1-1-2-1; attention head dim 32).
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build


class StarReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.8944))
        self.bias = nn.Parameter(torch.tensor(-0.4472))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.relu(x) ** 2 + self.bias


def ln(c: int) -> nn.LayerNorm:
    return nn.LayerNorm(c, eps=1e-6, bias=False)


class SepConv(nn.Module):
    def __init__(self, c: int, k: int = 7) -> None:
        super().__init__()
        h = 2 * c
        self.pw1, self.act, self.pw2 = nn.Linear(c, h, bias=False), StarReLU(), nn.Linear(h, c, bias=False)
        self.dw = nn.Conv2d(h, h, k, padding=k // 2, groups=h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.pw1(x)).permute(0, 3, 1, 2)
        return self.pw2(self.dw(x).permute(0, 2, 3, 1))


class Attention(nn.Module):
    def __init__(self, c: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads, self.hd = c // head_dim, head_dim
        self.qkv, self.proj = nn.Linear(c, 3 * c, bias=False), nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * self.hd ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, h, w, c))


class MetaFormerBlock(nn.Module):
    def __init__(self, c: int, attn: bool) -> None:
        super().__init__()
        self.norm1, self.mixer = ln(c), (Attention(c) if attn else SepConv(c))
        self.norm2 = ln(c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c, bias=False), StarReLU(), nn.Linear(4 * c, c, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Downsample(nn.Module):
    """LayerNorm (channels-last) then a strided conv (channels-first), or the stem conv then LayerNorm."""

    def __init__(self, cin: int, cout: int, k: int, s: int, p: int, pre_norm: bool) -> None:
        super().__init__()
        self.pre = ln(cin) if pre_norm else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, k, s, p)
        self.post = nn.Identity() if pre_norm else ln(cout)
        self.first = not pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.first:
            x = self.pre(x).permute(0, 3, 1, 2)
        return self.post(self.conv(x).permute(0, 2, 3, 1))


class SquaredReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) ** 2


class MetaFormer(nn.Module):
    def __init__(self, mixers=("conv",) * 4, dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), num_classes: int = 1000) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for i, (d, n, m) in enumerate(zip(dims, depths, mixers)):
            down = Downsample(3, d, 7, 4, 2, False) if i == 0 else Downsample(dims[i - 1], d, 3, 2, 1, True)
            stages.append(nn.Sequential(down, *(MetaFormerBlock(d, m == "attn") for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        h = 4 * dims[-1]
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Sequential(nn.Linear(dims[-1], h), SquaredReLU(), nn.LayerNorm(h), nn.Linear(h, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.stages(x).mean((1, 2))))


CONV = ("conv", "conv", "conv", "conv")
CA = ("conv", "conv", "attn", "attn")


def convformer(size: int = 224):
    return build(lambda: MetaFormer(CONV), f"zoo-convformer-{size}", size)


def convformer_small(size: int = 64):
    return build(lambda: MetaFormer(CONV, (16, 32, 32, 64), (1, 1, 1, 1), 10), f"zoo-convformer-small-{size}", size)


def caformer(size: int = 224):
    return build(lambda: MetaFormer(CA), f"zoo-caformer-{size}", size)


def caformer_small(size: int = 64):
    return build(lambda: MetaFormer(CA, (16, 32, 32, 64), (1, 1, 1, 1), 10), f"zoo-caformer-small-{size}", size)
