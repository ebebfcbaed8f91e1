"""In-repo layer descriptions of the conv nets that qai-hub-models publishes measurements for.

Each function rebuilds one architecture's op list analytically (shapes, MACs, parameters) at the
input resolution qai-hub-models measured it at (its manifest.yaml). Architectures follow the
torchvision definitions those models are built from (qai_hub_models/models/<id>/model.py names
the builder). Checked against published MAC counts in tests/test_costmodel.py.
"""
from __future__ import annotations

import math
from typing import Callable

from edgeconv.costops import Op
from edgeconv.devices.costmodel.ops import Builder, T


def _div(v: float, d: int = 8, min_value: int | None = None) -> int:
    """torchvision's _make_divisible: round to a multiple of d, never below 90 % of v."""
    min_value = min_value or d
    new = max(min_value, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def _head(b: Builder, x: T, classes: int = 1000) -> T:
    return b.fc(b.gpool(x), classes)


# --- MobileNets ------------------------------------------------------------------------------

def mobilenet_v2(res: int = 224) -> list[Op]:
    b = Builder("mobilenet_v2", (3, res, res))
    x = b.conv(b.input, 32, 3, s=2)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            y = b.conv(x, x.c * t, 1) if t != 1 else x
            y = b.conv(y, y.c, 3, s=stride, g=y.c)
            y = b.conv(y, c, 1)
            x = b.eltwise("add", x, y) if stride == 1 and x.c == c else y
    x = b.conv(x, 1280, 1)
    return _done(b, _head(b, x))


def _mbv3(b: Builder, cfg: list[tuple], last: int, hidden: int) -> None:
    x = b.conv(b.input, 16, 3, s=2)
    x = b.eltwise("hardswish", x)
    for k, exp, out, se, act, s in cfg:
        y = x
        if exp != x.c:
            y = b.conv(y, exp, 1)
            if act == "HS":
                y = b.eltwise("hardswish", y)
        y = b.conv(y, exp, k, s=s, g=exp)
        if act == "HS":
            y = b.eltwise("hardswish", y)
        if se:
            y = b.se(y, _div(exp // 4), gate="hardsigmoid")
        y = b.conv(y, out, 1)
        x = b.eltwise("add", x, y) if s == 1 and x.c == out else y
    x = b.eltwise("hardswish", b.conv(x, last, 1))
    x = b.eltwise("hardswish", b.fc(b.gpool(x), hidden))
    b.fc(x, 1000)


def mobilenet_v3_large(res: int = 224) -> list[Op]:
    b = Builder("mobilenet_v3_large", (3, res, res))
    _mbv3(b, [(3, 16, 16, 0, "RE", 1), (3, 64, 24, 0, "RE", 2), (3, 72, 24, 0, "RE", 1),
              (5, 72, 40, 1, "RE", 2), (5, 120, 40, 1, "RE", 1), (5, 120, 40, 1, "RE", 1),
              (3, 240, 80, 0, "HS", 2), (3, 200, 80, 0, "HS", 1), (3, 184, 80, 0, "HS", 1),
              (3, 184, 80, 0, "HS", 1), (3, 480, 112, 1, "HS", 1), (3, 672, 112, 1, "HS", 1),
              (5, 672, 160, 1, "HS", 2), (5, 960, 160, 1, "HS", 1), (5, 960, 160, 1, "HS", 1)],
         960, 1280)
    return b.ops


def mobilenet_v3_small(res: int = 224) -> list[Op]:
    b = Builder("mobilenet_v3_small", (3, res, res))
    _mbv3(b, [(3, 16, 16, 1, "RE", 2), (3, 72, 24, 0, "RE", 2), (3, 88, 24, 0, "RE", 1),
              (5, 96, 40, 1, "HS", 2), (5, 240, 40, 1, "HS", 1), (5, 240, 40, 1, "HS", 1),
              (5, 120, 48, 1, "HS", 1), (5, 144, 48, 1, "HS", 1), (5, 288, 96, 1, "HS", 2),
              (5, 576, 96, 1, "HS", 1), (5, 576, 96, 1, "HS", 1)],
         576, 1024)
    return b.ops


def mnasnet05(res: int = 224) -> list[Op]:
    b = Builder("mnasnet05", (3, res, res))
    d = [16, 8, 16, 24, 40, 48, 96, 160]  # torchvision _get_depths(0.5)
    x = b.conv(b.input, d[0], 3, s=2)
    x = b.conv(x, d[0], 3, g=d[0])
    x = b.conv(x, d[1], 1)
    for cin, cout, k, s, e, n in [(d[1], d[2], 3, 2, 3, 3), (d[2], d[3], 5, 2, 3, 3),
                                  (d[3], d[4], 5, 2, 6, 3), (d[4], d[5], 3, 1, 6, 2),
                                  (d[5], d[6], 5, 2, 6, 4), (d[6], d[7], 3, 1, 6, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            y = b.conv(x, x.c * e, 1)
            y = b.conv(y, y.c, k, s=stride, g=y.c)
            y = b.conv(y, cout, 1)
            x = b.eltwise("add", x, y) if stride == 1 and x.c == cout else y
    return _done(b, _head(b, b.conv(x, 1280, 1)))


def shufflenet_v2(res: int = 224, widths: tuple[int, ...] = (24, 48, 96, 192, 1024)) -> list[Op]:
    """torchvision shufflenet_v2_x0_5 (the width qai-hub-models ships)."""
    b = Builder("shufflenet_v2", (3, res, res))
    x = b.pool(b.conv(b.input, widths[0], 3, s=2), 3, 2, 1)
    for out, reps in zip(widths[1:4], (4, 8, 4)):
        half = out // 2
        for i in range(reps):
            if i == 0:
                l = b.conv(b.conv(x, x.c, 3, s=2, g=x.c), half, 1)
                r = b.conv(x, half, 1)
                r = b.conv(b.conv(r, half, 3, s=2, g=half), half, 1)
            else:
                l = T(half, x.h, x.w)
                r = b.conv(b.conv(b.conv(l, half, 1), half, 3, g=half), half, 1)
            x = b.concat([l, r])
            x = b.shuffle(x)
    return _done(b, _head(b, b.conv(x, widths[4], 1)))


def squeezenet1_1(res: int = 224) -> list[Op]:
    b = Builder("squeezenet1_1", (3, res, res))
    x = b.pool(b.conv(b.input, 64, 3, s=2, p=0), 3, 2, ceil=True)

    def fire(x: T, sq: int, e: int) -> T:
        s = b.conv(x, sq, 1)
        return b.concat([b.conv(s, e, 1), b.conv(s, e, 3)])

    x = fire(fire(x, 16, 64), 16, 64)
    x = b.pool(x, 3, 2, ceil=True)
    x = fire(fire(x, 32, 128), 32, 128)
    x = b.pool(x, 3, 2, ceil=True)
    for sq, e in [(48, 192), (48, 192), (64, 256), (64, 256)]:
        x = fire(x, sq, e)
    return _done(b, b.gpool(b.conv(x, 1000, 1)))


# --- ResNet family -----------------------------------------------------------------------------

def _resnet(name: str, layers: list[int], bottleneck: bool, groups: int = 1, width_per_group: int = 64,
            res: int = 224) -> list[Op]:
    b = Builder(name, (3, res, res))
    x = b.pool(b.conv(b.input, 64, 7, s=2, bias=False), 3, 2, 1)
    exp = 4 if bottleneck else 1
    for planes, n, s in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
        for i in range(n):
            stride = s if i == 0 else 1
            if bottleneck:
                width = int(planes * width_per_group / 64) * groups
                y = b.conv(x, width, 1)
                y = b.conv(y, width, 3, s=stride, g=groups)
                y = b.conv(y, planes * exp, 1)
            else:
                y = b.conv(b.conv(x, planes, 3, s=stride), planes, 3)
            sc = b.conv(x, planes * exp, 1, s=stride) if stride != 1 or x.c != planes * exp else x
            x = b.eltwise("add", sc, y)
    return _done(b, _head(b, x))


def resnet18(res: int = 224) -> list[Op]:
    return _resnet("resnet18", [2, 2, 2, 2], False, res=res)


def resnet50(res: int = 224) -> list[Op]:
    return _resnet("resnet50", [3, 4, 6, 3], True, res=res)


def resnet101(res: int = 224) -> list[Op]:
    return _resnet("resnet101", [3, 4, 23, 3], True, res=res)


def resnext50(res: int = 224) -> list[Op]:
    return _resnet("resnext50", [3, 4, 6, 3], True, groups=32, width_per_group=4, res=res)


def resnext101(res: int = 224) -> list[Op]:
    return _resnet("resnext101", [3, 4, 23, 3], True, groups=32, width_per_group=8, res=res)


def wideresnet50(res: int = 224) -> list[Op]:
    return _resnet("wideresnet50", [3, 4, 6, 3], True, width_per_group=128, res=res)


def _regnet(name: str, depth: int, w_0: float, w_a: float, w_m: float, group_width: int,
            se_ratio: float | None, res: int) -> list[Op]:
    """torchvision BlockParams.from_init_params + ResBottleneckBlock, bottleneck multiplier 1."""
    widths_cont = [i * w_a + w_0 for i in range(depth)]
    caps = [round(math.log(w / w_0) / math.log(w_m)) for w in widths_cont]
    block_w = [int(round(w_0 * w_m ** c / 8) * 8) for c in caps]
    stages: list[list[int]] = []  # [width, depth]
    for w in block_w:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    b = Builder(name, (3, res, res))
    x = b.conv(b.input, 32, 3, s=2)
    for w, n in stages:
        g = min(group_width, w)
        w = _div(w, g, g)  # width compatible with the group width
        for i in range(n):
            stride = 2 if i == 0 else 1
            y = b.conv(x, w, 1)
            y = b.conv(y, w, 3, s=stride, g=w // g)
            if se_ratio:
                y = b.se(y, int(round(se_ratio * x.c)))
            y = b.conv(y, w, 1)
            sc = b.conv(x, w, 1, s=stride) if stride != 1 or x.c != w else x
            x = b.eltwise("add", sc, y)
    return _done(b, _head(b, x))


def regnet(res: int = 224) -> list[Op]:
    """regnet_x_3_2gf, the RegNet qai-hub-models ships as `regnet`."""
    return _regnet("regnet", 25, 88, 26.31, 2.25, 48, None, res)


def regnet_y_800mf(res: int = 224) -> list[Op]:
    return _regnet("regnet_y_800mf", 14, 56, 38.84, 2.4, 16, 0.25, res)


# --- EfficientNets -----------------------------------------------------------------------------

def _mbconv(b: Builder, x: T, exp: int, k: int, s: int, out: int, fused: bool = False) -> T:
    y = x
    if fused:
        y = b.eltwise("silu", b.conv(y, x.c * exp if exp != 1 else out, k, s=s))
        if exp != 1:
            y = b.conv(y, out, 1)
    else:
        if exp != 1:
            y = b.eltwise("silu", b.conv(y, x.c * exp, 1))
        y = b.eltwise("silu", b.conv(y, y.c, k, s=s, g=y.c))
        y = b.se(y, max(1, x.c // 4))
        y = b.conv(y, out, 1)
    return b.eltwise("add", x, y) if s == 1 and x.c == out else y


def _efficientnet(name: str, width: float, depth: float, res: int) -> list[Op]:
    b = Builder(name, (3, res, res))
    x = b.eltwise("silu", b.conv(b.input, _div(32 * width), 3, s=2))
    for e, k, s, _cin, cout, n in [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
                                   (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                                   (6, 3, 1, 192, 320, 1)]:
        for i in range(int(math.ceil(n * depth))):
            x = _mbconv(b, x, e, k, s if i == 0 else 1, _div(cout * width))
    x = b.eltwise("silu", b.conv(x, 4 * x.c, 1))
    return _done(b, _head(b, x))


def efficientnet_b0(res: int = 224) -> list[Op]:
    return _efficientnet("efficientnet_b0", 1.0, 1.0, res)


def efficientnet_b4(res: int = 380) -> list[Op]:
    return _efficientnet("efficientnet_b4", 1.4, 1.8, res)


def efficientnet_v2_s(res: int = 384) -> list[Op]:
    b = Builder("efficientnet_v2_s", (3, res, res))
    x = b.eltwise("silu", b.conv(b.input, 24, 3, s=2))
    for fused, e, s, cout, n in [(1, 1, 1, 24, 2), (1, 4, 2, 48, 4), (1, 4, 2, 64, 4),
                                 (0, 4, 2, 128, 6), (0, 6, 1, 160, 9), (0, 6, 2, 256, 15)]:
        for i in range(n):
            x = _mbconv(b, x, e, 3, s if i == 0 else 1, cout, fused=bool(fused))
    x = b.eltwise("silu", b.conv(x, 1280, 1))
    return _done(b, _head(b, x))


# --- Inception / DenseNet ----------------------------------------------------------------------

def googlenet(res: int = 224) -> list[Op]:
    b = Builder("googlenet", (3, res, res))
    x = b.pool(b.conv(b.input, 64, 7, s=2), 3, 2, ceil=True)
    x = b.pool(b.conv(b.conv(x, 64, 1), 192, 3), 3, 2, ceil=True)

    def inc(x: T, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> T:
        # torchvision's GoogLeNet uses a 3x3 where the paper has a 5x5
        return b.concat([b.conv(x, c1, 1), b.conv(b.conv(x, c3r, 1), c3, 3),
                         b.conv(b.conv(x, c5r, 1), c5, 3),
                         b.conv(b.pool(x, 3, 1, 1, ceil=True), pp, 1)])

    x = inc(x, 64, 96, 128, 16, 32, 32)
    x = inc(x, 128, 128, 192, 32, 96, 64)
    x = b.pool(x, 3, 2, ceil=True)
    for cfg in [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)]:
        x = inc(x, *cfg)
    x = b.pool(x, 2, 2, ceil=True)
    x = inc(x, 256, 160, 320, 32, 128, 128)
    x = inc(x, 384, 192, 384, 48, 128, 128)
    return _done(b, _head(b, x))


def inception_v3(res: int = 224) -> list[Op]:
    b = Builder("inception_v3", (3, res, res))
    c = b.conv
    x = c(b.input, 32, 3, s=2, p=0)
    x = c(x, 32, 3, p=0)
    x = b.pool(c(x, 64, 3), 3, 2)
    x = b.pool(c(c(x, 80, 1), 192, 3, p=0), 3, 2)

    def avgp(x: T) -> T:
        return b.pool(x, 3, 1, 1)

    def inc_a(x: T, pf: int) -> T:
        return b.concat([c(x, 64, 1), c(c(x, 48, 1), 64, 5), c(c(c(x, 64, 1), 96, 3), 96, 3),
                         c(avgp(x), pf, 1)])

    def inc_c(x: T, c7: int) -> T:
        a = c(c(c(x, c7, 1), c7, (1, 7)), 192, (7, 1))
        d = c(c(c(c(c(x, c7, 1), c7, (7, 1)), c7, (1, 7)), c7, (7, 1)), 192, (1, 7))
        return b.concat([c(x, 192, 1), a, d, c(avgp(x), 192, 1)])

    def inc_e(x: T) -> T:
        a = c(x, 384, 1)
        d = c(c(x, 448, 1), 384, 3)
        return b.concat([c(x, 320, 1), c(a, 384, (1, 3)), c(a, 384, (3, 1)),
                         c(d, 384, (1, 3)), c(d, 384, (3, 1)), c(avgp(x), 192, 1)])

    x = inc_a(inc_a(inc_a(x, 32), 64), 64)
    x = b.concat([c(x, 384, 3, s=2, p=0), c(c(c(x, 64, 1), 96, 3), 96, 3, s=2, p=0), b.pool(x, 3, 2)])
    for c7 in (128, 160, 160, 192):
        x = inc_c(x, c7)
    x = b.concat([c(c(x, 192, 1), 320, 3, s=2, p=0),
                  c(c(c(c(x, 192, 1), 192, (1, 7)), 192, (7, 1)), 192, 3, s=2, p=0), b.pool(x, 3, 2)])
    x = inc_e(inc_e(x))
    return _done(b, _head(b, x))


def densenet121(res: int = 224) -> list[Op]:
    b = Builder("densenet121", (3, res, res))
    x = b.pool(b.conv(b.input, 64, 7, s=2, bias=False), 3, 2, 1)
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            # pre-activation BN+ReLU cannot fold into the conv before it (a concat sits between)
            y = b.eltwise("bn_relu", x, weights=2 * x.c)
            y = b.conv(y, 128, 1, bias=False)
            y = b.conv(y, 32, 3, bias=False)
            x = b.concat([x, y])
        if i < 3:
            x = b.eltwise("bn_relu", x, weights=2 * x.c)
            x = b.pool(b.conv(x, x.c // 2, 1, bias=False), 2, 2)
    x = b.eltwise("bn_relu", x, weights=2 * x.c)
    return _done(b, _head(b, x))


# --- ConvNeXt ----------------------------------------------------------------------------------

def _convnext(name: str, depths: tuple[int, ...], dims: tuple[int, ...], res: int) -> list[Op]:
    b = Builder(name, (3, res, res))

    def ln(x: T) -> T:
        return b.eltwise("layernorm", x, weights=2 * x.c, work=5)

    x = ln(b.conv(b.input, dims[0], 4, s=4, p=0))
    for i, (n, d) in enumerate(zip(depths, dims)):
        if i:
            x = b.conv(ln(x), d, 2, s=2, p=0)
        for _ in range(n):
            y = ln(b.conv(x, d, 7, g=d))
            y = b.eltwise("gelu", b.linear(y, 4 * d), work=8)
            y = b.eltwise("layer_scale", b.linear(y, d), weights=d)
            x = b.eltwise("add", x, y)
    return _done(b, b.fc(ln(b.gpool(x)), 1000))


def convnext_tiny(res: int = 224) -> list[Op]:
    return _convnext("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768), res)


def convnext_base(res: int = 224) -> list[Op]:
    return _convnext("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024), res)


def _done(b: Builder, _last: T) -> list[Op]:
    return b.ops


# qai-hub-models model id -> builder (at the resolution its manifest.yaml states)
ZOO: dict[str, Callable[[], list[Op]]] = {
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mnasnet05": mnasnet05,
    "shufflenet_v2": shufflenet_v2,
    "squeezenet1_1": squeezenet1_1,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnext50": resnext50,
    "resnext101": resnext101,
    "wideresnet50": wideresnet50,
    "regnet": regnet,
    "regnet_y_800mf": regnet_y_800mf,
    "efficientnet_b0": efficientnet_b0,
    "efficientnet_b4": efficientnet_b4,
    "efficientnet_v2_s": efficientnet_v2_s,
    "googlenet": googlenet,
    "inception_v3": inception_v3,
    "densenet121": densenet121,
    "convnext_tiny": convnext_tiny,
    "convnext_base": convnext_base,
}
