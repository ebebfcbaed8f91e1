"""LSNet (Wang et al. 2025, "LSNet: See Large, Focus Small").

Deployment: the LS convolution. Large-kernel perception (LKP): 1×1 conv-BN-ReLU to C/2, a 7×7
depthwise conv-BN, a 1×1 conv that *generates weights*: for each of G channel groups a k×k kernel
per pixel. Small-kernel aggregation (SKA): a dynamic depthwise conv — each output is
Σᵢ w[g, i, h, w] · x[c, h+δᵢ, w+δᵢ] over the k×k neighbourhood, so activations multiply
activations (no static weight to fold); written here with pad + k² shifted slices, which lowers to
plain slice/mul/add (the reference CUDA kernel's math). Blocks: RepVGG-style depthwise 3×3 + 1×1
+ identity branches (train-time, summed), LS conv, FFN, residual ADDs; the last stage uses
multi-head self-attention (softmax, batched matmuls).

Widths reduced (stage dims 32–128).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from examples.zoo._common import build, conv_bn


class LSConv(nn.Module):
    def __init__(self, c: int, lk: int = 7, sk: int = 3, group_ch: int = 8) -> None:
        super().__init__()
        self.sk, self.groups = sk, c // group_ch
        self.lkp = nn.Sequential(conv_bn(c, c // 2, 1, act=nn.ReLU), conv_bn(c // 2, c // 2, lk, groups=c // 2),
                                 conv_bn(c // 2, self.groups * sk * sk, 1))
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        wts = self.lkp(x).reshape(b, self.groups, 1, self.sk * self.sk, h, w)
        xs = x.reshape(b, self.groups, c // self.groups, h, w)
        p = self.sk // 2
        xp = F.pad(xs.reshape(b, c, h, w), (p, p, p, p)).reshape(b, self.groups, c // self.groups, h + 2 * p, w + 2 * p)
        out = 0
        for i in range(self.sk):
            for j in range(self.sk):
                out = out + xp[..., i:i + h, j:j + w] * wts[:, :, :, i * self.sk + j]
        return self.bn(out.reshape(b, c, h, w))


class RepDW(nn.Module):
    """Depthwise 3×3 conv-BN + depthwise 1×1 conv-BN + identity, summed (train-time form), then BN."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.conv1 = conv_bn(c, c, 3, groups=c), conv_bn(c, c, 1, groups=c, padding=0)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)


class FFN(nn.Module):
    def __init__(self, c: int, ratio: int = 2) -> None:
        super().__init__()
        self.pw1, self.pw2 = conv_bn(c, c * ratio, 1, act=nn.ReLU), conv_bn(c * ratio, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.pw1(x))


class Attention(nn.Module):
    def __init__(self, c: int, key_dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.kd, self.vd = heads, key_dim, c // heads
        self.qkv = conv_bn(c, heads * (2 * key_dim + self.vd), 1)
        self.proj = nn.Sequential(nn.ReLU(), conv_bn(c, c, 1))
        self.scale = key_dim ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, self.heads, -1, h * w).split([self.kd, self.kd, self.vd], dim=2)
        attn = (q.transpose(-2, -1) @ k * self.scale).softmax(-1)
        return self.proj((v @ attn.transpose(-2, -1)).reshape(b, c, h, w))


class LSBlock(nn.Module):
    def __init__(self, c: int, attn: bool) -> None:
        super().__init__()
        self.dw = RepDW(c)
        self.mixer = Attention(c) if attn else LSConv(c)
        self.ffn = FFN(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dw(x)
        x = x + self.mixer(x)
        return x + self.ffn(x)


class LSNet(nn.Module):
    def __init__(self, dims=(32, 64, 96, 128), depths=(1, 2, 2, 1), num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, dims[0] // 4, 3, 2, act=nn.ReLU), conv_bn(dims[0] // 4, dims[0] // 2, 3, 2, act=nn.ReLU),
                                  conv_bn(dims[0] // 2, dims[0], 3, 2))
        stages: list[nn.Module] = []
        for i, (d, n) in enumerate(zip(dims, depths)):
            down = [conv_bn(dims[i - 1], dims[i - 1], 3, 2, groups=dims[i - 1]), conv_bn(dims[i - 1], d, 1)] if i else []
            stages.append(nn.Sequential(*down, *(LSBlock(d, attn=i == len(dims) - 1) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.BatchNorm1d(dims[-1]), nn.Linear(dims[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def lsnet(size: int = 224):
    return build(lambda: LSNet(), f"zoo-lsnet-{size}", size)


def lsnet_small(size: int = 64):
    return build(lambda: LSNet((16, 32, 48, 64), (1, 1, 1, 1), num_classes=10), f"zoo-lsnet-small-{size}", size)
