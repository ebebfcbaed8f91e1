"""GhostNet-style nets with DFC attention: GhostNetV2 (Tang et al. 2022, "GhostNetV2: Enhance Cheap
Operation with Long-Range Attention"), on GhostNet's layout (Han et al. 2020).

Deployment: the Ghost module makes half its channels with a 1×1 conv and the other half with a
*cheap* 3×3 depthwise conv of those, CONCATenated and sliced to the output width. DFC attention
(decoupled fully connected): 2×2 average pool, 1×1 conv-BN, 1×5 and 5×1 depthwise conv-BN
(horizontal/vertical band kernels), sigmoid, *nearest-neighbour upsampling* back to full size, and
a MUL with the Ghost output. Bottlenecks add squeeze-and-excitation with GhostNet's hard sigmoid
(relu6(x + 3) / 6), strided depthwise convs and conv shortcuts.

`ghostnet` is GhostNet's full 16-bottleneck layout at width 0.5, 224²; `ghostnet_small` a
7-bottleneck subset at 64².
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from examples.zoo._common import build, conv_bn, make_divisible


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


class SE(nn.Module):
    def __init__(self, c: int, ratio: float = 0.25) -> None:
        super().__init__()
        mid = make_divisible(c * ratio, 4)
        self.reduce, self.expand = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * hard_sigmoid(s)


class GhostModuleV2(nn.Module):
    def __init__(self, cin: int, cout: int, relu: bool, attn: bool) -> None:
        super().__init__()
        self.cout = cout
        init = math.ceil(cout / 2)
        act = nn.ReLU if relu else None
        self.primary = conv_bn(cin, init, 1, act=act)
        self.cheap = conv_bn(init, init, 3, groups=init, act=act)
        self.dfc = nn.Sequential(conv_bn(cin, cout, 1), conv_bn(cout, cout, (1, 5), groups=cout),
                                 conv_bn(cout, cout, (5, 1), groups=cout)) if attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], dim=1)[:, :self.cout]
        if self.dfc is None:
            return out
        gate = torch.sigmoid(self.dfc(F.avg_pool2d(x, 2, 2)))
        return out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")


class GhostBottleneckV2(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, k: int, stride: int, se: float, layer_id: int) -> None:
        super().__init__()
        self.ghost1 = GhostModuleV2(cin, mid, relu=True, attn=layer_id > 1)
        self.dw = conv_bn(mid, mid, k, stride, groups=mid) if stride > 1 else None
        self.se = SE(mid, se) if se else None
        self.ghost2 = GhostModuleV2(mid, cout, relu=False, attn=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Sequential(
            conv_bn(cin, cin, k, stride, groups=cin), conv_bn(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.dw is not None:
            y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.ghost2(y)
        return y + (x if self.shortcut is None else self.shortcut(x))


# GhostNet's layout: kernel, expansion (mid) size, out channels, SE ratio, stride.
CFGS = ((3, 16, 16, 0, 1), (3, 48, 24, 0, 2), (3, 72, 24, 0, 1), (5, 72, 40, 0.25, 2), (5, 120, 40, 0.25, 1),
        (3, 240, 80, 0, 2), (3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1), (5, 672, 160, 0.25, 2), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1))
SMALL = CFGS[:2] + CFGS[3:4] + CFGS[5:6] + CFGS[9:10] + CFGS[11:13]


class GhostNetV2(nn.Module):
    def __init__(self, width: float = 0.5, cfgs=CFGS, head: int = 1280, num_classes: int = 1000) -> None:
        super().__init__()
        cin = make_divisible(16 * width, 4)
        self.stem = conv_bn(3, cin, 3, 2, act=nn.ReLU)
        blocks: list[nn.Module] = []
        for i, (k, exp, c, se, s) in enumerate(cfgs):
            cout, mid = make_divisible(c * width, 4), make_divisible(exp * width, 4)
            blocks.append(GhostBottleneckV2(cin, mid, cout, k, s, se, i))
            cin = cout
        last = make_divisible(cfgs[-1][1] * width, 4)
        blocks.append(conv_bn(cin, last, 1, act=nn.ReLU))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = nn.Conv2d(last, head, 1)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x)).mean((2, 3), keepdim=True)
        return self.fc(torch.flatten(torch.relu(self.conv_head(x)), 1))


def ghostnet(size: int = 224):
    return build(lambda: GhostNetV2(0.5), f"zoo-ghostnet-v2-{size}", size)


def ghostnet_small(size: int = 64):
    return build(lambda: GhostNetV2(0.5, SMALL, head=256, num_classes=10), f"zoo-ghostnet-v2-small-{size}", size)
