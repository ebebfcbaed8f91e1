"""RepVGG (Ding et al. 2021, "RepVGG: Making VGG-style ConvNets Great Again") and MobileOne
(Vasu et al. 2023, "MobileOne: An Improved One millisecond Mobile Backbone").

Deployment: both train with parallel linear branches that collapse, in eval mode, into one conv
per block — structural reparameterization. RepVGG: 3×3 conv-BN + 1×1 conv-BN + identity-BN, summed,
ReLU; MobileOne: depthwise 3×3 with k over-parameterized conv-BN branches + 1×1 scale branch +
identity-BN, then pointwise 1×1 with k branches + identity-BN. Exported *unmerged*, each block is
3–(k+2) convs and an n-way ADD of int8 tensors with different scales; merged, a plain conv-ReLU
chain. The merge methods carry their origin's names (`switch_to_deploy()` for RepVGG,
`reparameterize()` for MobileOne), so edgeconv's reparam-merge stage (and timm's walker) find them.
The blocks are written here from the papers (not edgeconv's own `reparam.blocks`): the zoo tests
edgeconv on blocks it did not write.

Widths are reduced (RepVGG-A-like stage layout, MobileOne-S0-like) so a 224² export takes seconds.
"""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import build, conv_bn, deploy_conv, fuse_conv_bn, identity_kernel, pad_to


class RepVGGBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dense = conv_bn(cin, cout, 3, stride)
        self.one = conv_bn(cin, cout, 1, stride, padding=0)
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "reparam"):
            return self.act(self.reparam(x))
        y = self.dense(x) + self.one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if hasattr(self, "reparam"):
            return
        k, b = fuse_conv_bn(self.dense[0], self.dense[1])
        k1, b1 = fuse_conv_bn(self.one[0], self.one[1])
        k, b = k + pad_to(k1, 3), b + b1
        if self.identity is not None:
            ki, bi = fuse_conv_bn(None, self.identity, identity_kernel(self.identity.num_features, 1, 3))
            k, b = k + ki, b + bi
        self.reparam = deploy_conv(self.dense[0], k, b)
        del self.dense, self.one, self.identity


class RepVGG(nn.Module):
    def __init__(self, widths=(32, 48, 96, 192), depths=(1, 2, 4, 1), stem: int = 32, num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RepVGGBlock(3, stem, 2)]
        cin = stem
        for w, d in zip(widths, depths):
            for i in range(d):
                blocks.append(RepVGGBlock(cin, w, 2 if i == 0 else 1))
                cin = w
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class MobileOneBlock(nn.Module):
    """k over-parameterized conv-BN branches (k×k) + a 1×1 conv-BN "scale" branch (k×k > 1 only) +
    identity BN (stride 1, cin == cout), summed, ReLU. Grouped (depthwise) or dense."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, branches: int = 2) -> None:
        super().__init__()
        self.k, self.groups = k, groups
        self.convs = nn.ModuleList(conv_bn(cin, cout, k, stride, groups) for _ in range(branches))
        self.scale = conv_bn(cin, cout, 1, stride, groups, padding=0) if k > 1 else None
        self.skip = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "reparam"):
            return self.act(self.reparam(x))
        y = self.skip(x) if self.skip is not None else 0
        if self.scale is not None:
            y = y + self.scale(x)
        for c in self.convs:
            y = y + c(x)
        return self.act(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if hasattr(self, "reparam"):
            return
        first = self.convs[0][0]
        k = torch.zeros_like(first.weight)
        b = torch.zeros(first.out_channels)
        for c in self.convs:
            kc, bc = fuse_conv_bn(c[0], c[1])
            k, b = k + kc, b + bc
        if self.scale is not None:
            ks, bs = fuse_conv_bn(self.scale[0], self.scale[1])
            k, b = k + pad_to(ks, self.k), b + bs
        if self.skip is not None:
            ki, bi = fuse_conv_bn(None, self.skip, identity_kernel(self.skip.num_features, self.groups, self.k))
            k, b = k + ki, b + bi
        self.reparam = deploy_conv(first, k, b)
        del self.convs, self.scale, self.skip


def mobileone_unit(cin: int, cout: int, stride: int, branches: int) -> nn.Sequential:
    """MobileOne's basic block: depthwise 3×3 MobileOneBlock, then pointwise 1×1 MobileOneBlock."""
    return nn.Sequential(MobileOneBlock(cin, cin, 3, stride, groups=cin, branches=branches),
                         MobileOneBlock(cin, cout, 1, 1, branches=branches))


class MobileOne(nn.Module):
    def __init__(self, widths=(48, 96, 192, 384), depths=(2, 3, 4, 1), stem: int = 32, branches: int = 2,
                 num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [MobileOneBlock(3, stem, 3, 2, branches=1)]
        cin = stem
        for w, d in zip(widths, depths):
            for i in range(d):
                blocks.append(mobileone_unit(cin, w, 2 if i == 0 else 1, branches))
                cin = w
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def repvgg(size: int = 224):
    return build(lambda: RepVGG(), f"zoo-repvgg-{size}", size)


def repvgg_small(size: int = 64):
    return build(lambda: RepVGG((16, 24, 32, 48), (1, 2, 1, 1), stem=16, num_classes=10), f"zoo-repvgg-small-{size}", size)


def mobileone(size: int = 224):
    return build(lambda: MobileOne(), f"zoo-mobileone-{size}", size)


def mobileone_small(size: int = 64):
    return build(lambda: MobileOne((16, 32, 48, 64), (1, 1, 2, 1), stem=16, num_classes=10),
                 f"zoo-mobileone-small-{size}", size)
