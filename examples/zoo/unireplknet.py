"""UniRepLKNet (Ding et al. 2024, "UniRepLKNet: A Universal Perception Large-Kernel ConvNet for
Audio, Video, Point Cloud, Time-Series and Image Recognition").

Deployment: the Dilated Reparam Block — a large depthwise K×K conv-BN in parallel with small
*dilated* depthwise conv-BNs (for K=13: 5×5 d1, 7×7 d2, 3×3 d3, 3×3 d4, 3×3 d5), summed; in eval
mode they merge into one K×K depthwise conv (`merge_dilated_branches()`, the origin's name), a
dilated k×k being a sparse ((k-1)d+1)² kernel. Unmerged, the export carries dilated depthwise convs
and a 6-way ADD. Each block then has BN, squeeze-and-excitation (sigmoid gate: a MUL of two
activations), an FFN with GELU and GRN (global response normalisation: an L2 norm over H×W divided
by its channel mean — a reduction-and-division an int8 graph must keep in range), and layer scale.

Widths reduced (stage dims 32–256, one to two blocks per stage); kernel 13 in stages 2–3, 7 elsewhere.
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build, conv_bn, dilate_kernel, fuse_conv_bn, layer_scale, pad_to

BRANCHES = {13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)), 7: ((5, 1), (3, 2), (3, 3)), 5: ((3, 1), (3, 2))}


class DilatedReparamBlock(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.c, self.k = c, k
        self.lk = conv_bn(c, c, k, groups=c)
        self.dil = nn.ModuleList(conv_bn(c, c, ks, groups=c, dilation=d) for ks, d in BRANCHES[k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "merged"):
            return self.merged(x)
        y = self.lk(x)
        for b in self.dil:
            y = y + b(x)
        return y

    @torch.no_grad()
    def merge_dilated_branches(self) -> None:
        if hasattr(self, "merged"):
            return
        k, b = fuse_conv_bn(self.lk[0], self.lk[1])
        for br in self.dil:
            kb, bb = fuse_conv_bn(br[0], br[1])
            k, b = k + pad_to(dilate_kernel(kb, br[0].dilation[0]), self.k), b + bb
        conv = nn.Conv2d(self.c, self.c, self.k, 1, self.k // 2, groups=self.c, bias=True)
        conv.weight.copy_(k)
        conv.bias.copy_(b)
        self.merged = conv
        del self.lk, self.dil


class SEBlock(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.down, self.up = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.up(torch.relu(self.down(s))))


class GRN(nn.Module):
    """ConvNeXt V2's global response normalisation, channels-first."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, c, 1, 1), 0.3))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(2, 3), keepdim=True)
        nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class UniRepLKBlock(nn.Module):
    def __init__(self, c: int, k: int, ffn_ratio: int = 4) -> None:
        super().__init__()
        self.dwconv = DilatedReparamBlock(c, k) if k in BRANCHES else conv_bn(c, c, k, groups=c)
        self.norm = nn.BatchNorm2d(c)
        self.se = SEBlock(c, c // 4)
        h = c * ffn_ratio
        self.pw1, self.act, self.grn, self.pw2 = nn.Conv2d(c, h, 1), nn.GELU(), GRN(h), conv_bn(h, c, 1)
        self.gamma = layer_scale(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pw2(self.grn(self.act(self.pw1(y))))
        return x + self.gamma[:, None, None] * y


class UniRepLKNet(nn.Module):
    def __init__(self, dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), kernels=(7, 13, 13, 7), num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, dims[0] // 2, 3, 2, act=nn.GELU), conv_bn(dims[0] // 2, dims[0], 3, 2))
        stages: list[nn.Module] = []
        for i, (d, n, k) in enumerate(zip(dims, depths, kernels)):
            down = [conv_bn(dims[i - 1], d, 3, 2)] if i else []
            stages.append(nn.Sequential(*down, *(UniRepLKBlock(d, k) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x)).mean((2, 3))
        return self.head(self.norm(x))


def unireplknet(size: int = 224):
    return build(lambda: UniRepLKNet(), f"zoo-unireplknet-{size}", size)


def unireplknet_small(size: int = 64):
    return build(lambda: UniRepLKNet((16, 32, 48, 64), (1, 1, 1, 1), (5, 7, 13, 5), num_classes=10),
                 f"zoo-unireplknet-small-{size}", size)
