"""Super-resolution nets (×3 upscaling): ESPCN, IMDN, CFSR.

- ESPCN (Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient
  Sub-Pixel Convolutional Neural Network"): 5×5 conv → tanh → 3×3 conv → tanh → 3×3 conv to 3·r²
  channels → PIXEL SHUFFLE (depth-to-space). Deployment: tanh (an int8 lookup), the pixel shuffle's
  reshape/transpose, an image output whose int8 scale is the whole [0, 1] range.
- IMDN (Hui et al. 2019, "Lightweight Image Super-Resolution with Information Multi-distillation
  Network"): information multi-distillation blocks — 3×3 conv, LeakyReLU(0.05), channel SPLIT into
  a distilled quarter and a remainder refined again (four steps), CONCAT of the distilled parts,
  contrast-aware channel attention (per-channel *standard deviation* + mean over H×W: pow, sqrt,
  division — then 1×1 → ReLU → 1×1 → sigmoid → MUL), 1×1 fusion, residual ADD; then a CONCAT of
  all blocks' outputs, 1×1 + 3×3 fusion, long skip, 3×3 conv → pixel shuffle.
- CFSR (Wu et al. 2024, "Transforming Image Super-Resolution: A ConvFormer-based Efficient
  Approach"): a ConvFormer-style SR net — each block is a large-kernel convolutional token mixer
  (1×1 → 9×9 depthwise → 1×1, gated by a 1×1 branch: a MUL of activations) and an edge-preserving
  feed-forward network (1×1 expand, GELU, a 3×3 depthwise "edge" branch added back, 1×1), each
  behind a channels-first LayerNorm with a residual ADD; a 3×3 conv head and pixel-shuffle upsampler.
  Written from the paper's description, reduced; details (e.g. the exact EFN) simplified.

Inputs are RGB in [0, 1] (mean 0, std 1). `*` at 64² (full) → 192²; `*_small` at 32² → 96².
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import LayerNorm2d, build

SCALE = 3


class ESPCN(nn.Module):
    def __init__(self, r: int = SCALE, f1: int = 64, f2: int = 32) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, f1, 5, padding=2), nn.Conv2d(f1, f2, 3, padding=1)
        self.c3 = nn.Conv2d(f2, 3 * r * r, 3, padding=1)
        self.shuffle = nn.PixelShuffle(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.c3(torch.tanh(self.c2(torch.tanh(self.c1(x))))))


class CCA(nn.Module):
    """Contrast-aware channel attention: std + mean over H×W, squeeze-excite, sigmoid gate."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(c, c // reduction, 1), nn.ReLU(), nn.Conv2d(c // reduction, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        std = (x - mean).pow(2).mean((2, 3), keepdim=True).sqrt()
        return x * self.fc(std + mean)


class IMDB(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.d = c // 4
        self.r = c - self.d
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(self.r, c, 3, padding=1)
        self.c3 = nn.Conv2d(self.r, c, 3, padding=1)
        self.c4 = nn.Conv2d(self.r, self.d, 3, padding=1)
        self.act = nn.LeakyReLU(0.05)
        self.cca = CCA(4 * self.d)
        self.fuse = nn.Conv2d(4 * self.d, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r1 = torch.split(self.act(self.c1(x)), (self.d, self.r), dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), (self.d, self.r), dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), (self.d, self.r), dim=1)
        d4 = self.c4(r3)
        return self.fuse(self.cca(torch.cat([d1, d2, d3, d4], dim=1))) + x


class IMDN(nn.Module):
    def __init__(self, c: int = 48, blocks: int = 4, r: int = SCALE) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(IMDB(c) for _ in range(blocks))
        self.fuse = nn.Sequential(nn.Conv2d(c * blocks, c, 1), nn.LeakyReLU(0.05))
        self.lr = nn.Conv2d(c, c, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(c, 3 * r * r, 3, padding=1), nn.PixelShuffle(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.head(x)
        outs, y = [], fea
        for b in self.blocks:
            y = b(y)
            outs.append(y)
        return self.up(self.lr(self.fuse(torch.cat(outs, dim=1))) + fea)


class LKMixer(nn.Module):
    def __init__(self, c: int, k: int = 9) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, c, k, padding=k // 2, groups=c))
        self.v = nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.a(x) * self.v(x))


class EFN(nn.Module):
    def __init__(self, c: int, ratio: int = 2) -> None:
        super().__init__()
        h = c * ratio
        self.pw1, self.act = nn.Conv2d(c, h, 1), nn.GELU()
        self.edge = nn.Conv2d(h, h, 3, padding=1, groups=h)
        self.pw2 = nn.Conv2d(h, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.pw1(x))
        return self.pw2(y + self.edge(y))


class CFBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.n1, self.mixer, self.n2, self.ffn = LayerNorm2d(c), LKMixer(c), LayerNorm2d(c), EFN(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.n1(x))
        return x + self.ffn(self.n2(x))


class CFSR(nn.Module):
    def __init__(self, c: int = 48, blocks: int = 4, r: int = SCALE) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(CFBlock(c) for _ in range(blocks)))
        self.tail = nn.Conv2d(c, c, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(c, 3 * r * r, 3, padding=1), nn.PixelShuffle(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.head(x)
        return self.up(self.tail(self.body(fea)) + fea)


def _sr(ctor, name: str, size: int):
    return build(ctor, f"zoo-{name}-x{SCALE}-{size}", size, task="super-resolution")


def espcn(size: int = 64):
    return _sr(lambda: ESPCN(), "espcn", size)


def espcn_small(size: int = 32):
    return _sr(lambda: ESPCN(f1=16, f2=8), "espcn-small", size)


def imdn(size: int = 64):
    return _sr(lambda: IMDN(), "imdn", size)


def imdn_small(size: int = 32):
    return _sr(lambda: IMDN(16, 2), "imdn-small", size)


def cfsr(size: int = 64):
    return _sr(lambda: CFSR(), "cfsr", size)


def cfsr_small(size: int = 32):
    return _sr(lambda: CFSR(16, 2), "cfsr-small", size)
