"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks") and
MobileNetV3-Small (Howard et al. 2019, "Searching for MobileNetV3").

Deployment: V2 is the headline edge net — 1×1 expand → 3×3 depthwise → linear 1×1 projection,
ReLU6 (a clamp the int8 output range absorbs), residual ADDs between int8 tensors of different
scales. V3 adds squeeze-and-excitation (global pool → 1×1 → ReLU → 1×1 → hard-sigmoid → MUL of an
activation by an activation), hard-swish (x·relu6(x+3)/6, a product the quantizer must keep or
lower), 5×5 depthwise kernels and a Linear→hard-swish→Linear head.

`mobilenet_v2` is the real layout (the paper's Table 2, width 1.0, 224²);
`mobilenet_v3` the real Small layout (Table 2) at 224². The `_small` variants keep every op kind
with fewer blocks and channels at 64².
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build, conv_bn, make_divisible

# (expansion t, output channels c, repeats n, first stride s): MobileNetV2's Table 2.
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
V2_SMALL = ((1, 16, 1, 1), (6, 24, 1, 2), (6, 32, 2, 2), (6, 64, 1, 2), (6, 96, 1, 1), (6, 160, 1, 2))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, width: float = 1.0, settings=V2_SETTINGS, last: int = 1280, num_classes: int = 1000) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        blocks: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in settings:
            cout = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = make_divisible(last * max(1.0, width))
        blocks.append(conv_bn(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcite(nn.Module):
    """SE as in MobileNetV3: squeeze to make_divisible(C/4), ReLU, excite, hard-sigmoid gate."""

    def __init__(self, c: int, ratio: float = 0.25) -> None:
        super().__init__()
        mid = make_divisible(c * ratio)
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)
        self.act, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class V3Block(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type[nn.Module], stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(conv_bn(cin, exp, 1, act=act))
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp))
        layers.append(conv_bn(exp, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


RE, HS = nn.ReLU, nn.Hardswish
# MobileNetV3-Small, Table 2: kernel, expansion size, out channels, SE, nonlinearity, stride.
V3_SMALL = ((3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
            (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
            (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1), (5, 288, 96, True, HS, 2),
            (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1))
V3_TINY = ((3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
           (5, 96, 40, True, HS, 2), (5, 120, 40, True, HS, 1))


class MobileNetV3(nn.Module):
    def __init__(self, settings=V3_SMALL, last: int = 576, head: int = 1024, num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv_bn(3, 16, 3, 2, act=HS)]
        cin = 16
        for k, exp, c, se, act, s in settings:
            blocks.append(V3Block(cin, k, exp, c, se, act, s))
            cin = c
        blocks.append(conv_bn(cin, last, 1, act=HS))
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(last, head), nn.Hardswish(), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.head(x)


def mobilenet_v2(size: int = 224):
    return build(lambda: MobileNetV2(1.0), f"zoo-mobilenet-v2-{size}", size)


def mobilenet_v2_small(size: int = 64):
    return build(lambda: MobileNetV2(0.5, V2_SMALL, last=256, num_classes=10), f"zoo-mobilenet-v2-small-{size}", size)


def mobilenet_v3(size: int = 224):
    return build(lambda: MobileNetV3(), f"zoo-mobilenet-v3-{size}", size)


def mobilenet_v3_small(size: int = 64):
    return build(lambda: MobileNetV3(V3_TINY, last=96, head=128, num_classes=10), f"zoo-mobilenet-v3-small-{size}", size)
