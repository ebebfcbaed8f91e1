"""Training-time reparameterizable blocks for people who design nets for the edge.

Each block trains with parallel linear branches and collapses, in eval mode, to a single conv
(TECHNIQUES.md §2). The merge method carries the name its origin uses, so the protocol caller
(`edgeconv.prepare.reparam.protocol`) and third-party walkers such as timm's find it:

| block               | origin                          | branches (all from the same input, summed)            | merge method             |
|---------------------|---------------------------------|--------------------------------------------------------|--------------------------|
| RepVGGBlock         | RepVGG (Ding et al. 2021)       | k×k conv-BN, 1×1 conv-BN, identity BN                 | `switch_to_deploy()`     |
| MobileOneBlock      | MobileOne (Vasu et al. 2023)    | n × k×k conv-BN, 1×1 conv-BN, identity BN (grouped ok)| `reparameterize()`       |
| ACBlock             | ACNet (Ding et al. 2019)        | k×k conv-BN, 1×k conv-BN, k×1 conv-BN                 | `switch_to_deploy()`     |
| DiverseBranchBlock  | DBB (Ding et al. 2021), reduced | k×k conv-BN, 1×1 conv-BN, 1×1→k×k conv-BN, avg-pool-BN| `switch_to_deploy()`     |
| DilatedReparamBlock | UniRepLKNet (Ding et al. 2024)  | large depthwise K×K conv-BN, dilated small dw conv-BNs| `merge_dilated_branches()`|

The 1×1→k×k branch of the reduced DBB has no bias between the two convs, so the k×k conv's zero
padding sees what the merged conv's padding sees (DBB proper pads with the BN bias instead).
"""
from __future__ import annotations

import torch
from torch import nn

from edgeconv.prepare.reparam import algebra


def conv_bn(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1, padding: int | tuple[int, int] = 0,
            groups: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


def _seq_kb(seq: nn.Sequential) -> algebra.KB:
    conv, bn = seq[0], seq[1]
    k = algebra.dilate(conv.weight, conv.dilation) if max(conv.dilation) > 1 else conv.weight
    return algebra.fuse_bn(k, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


def _bn_kb(bn: nn.BatchNorm2d, groups: int) -> algebra.KB:
    ident = algebra.identity_kernel(bn.num_features, groups, bn.running_mean.dtype)
    return algebra.fuse_bn(ident, None, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


class _Reparam(nn.Module):
    """Shared deploy switch: `_branches()` lists (kernel, bias) pairs; the sum becomes `self.reparam`."""

    cin: int
    cout: int
    stride: int
    groups: int

    def _branches(self) -> list[algebra.KB]:
        raise NotImplementedError

    def _branch_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def deployed(self) -> bool:
        return hasattr(self, "reparam")

    @torch.no_grad()
    def _merge(self) -> None:
        if self.deployed:  # idempotent: walkers may call the method twice
            return
        if self.training:
            raise RuntimeError(f"{type(self).__name__} must be in eval mode to merge (BN running stats)")
        kernel, bias = algebra.add(self._branches())
        conv = nn.Conv2d(self.cin, self.cout, tuple(kernel.shape[-2:]), self.stride,
                         (kernel.shape[-2] // 2, kernel.shape[-1] // 2), groups=self.groups, bias=True,
                         dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        for name in self._branch_names():
            delattr(self, name)
        self.reparam = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.act(self.reparam(x))
        return self.act(self._train_forward(x))

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RepVGGBlock(_Reparam):
    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3, act: bool = True) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.groups = cin, cout, stride, 1
        self.dense = conv_bn(cin, cout, k, stride, k // 2)
        self.one = conv_bn(cin, cout, 1, stride, 0)
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.act = nn.ReLU() if act else nn.Identity()

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x) + self.one(x)
        return y + self.identity(x) if self.identity is not None else y

    def _branches(self) -> list[algebra.KB]:
        out = [_seq_kb(self.dense), _seq_kb(self.one)]
        return out + ([_bn_kb(self.identity, 1)] if self.identity is not None else [])

    def _branch_names(self) -> list[str]:
        return ["dense", "one", "identity"]

    def switch_to_deploy(self) -> None:
        self._merge()


class MobileOneBlock(_Reparam):
    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3, groups: int = 1,
                 num_branches: int = 2, act: bool = True) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.groups = cin, cout, stride, groups
        self.convs = nn.ModuleList(conv_bn(cin, cout, k, stride, k // 2, groups) for _ in range(num_branches))
        self.scale = conv_bn(cin, cout, 1, stride, 0, groups) if k > 1 else None
        self.skip = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.act = nn.ReLU() if act else nn.Identity()

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [c(x) for c in self.convs]
        ys += [self.scale(x)] if self.scale is not None else []
        ys += [self.skip(x)] if self.skip is not None else []
        return sum(ys[1:], ys[0])  # no `0 +`: a scalar add would hide the branch sum from the graph

    def _branches(self) -> list[algebra.KB]:
        out = [_seq_kb(c) for c in self.convs]
        out += [_seq_kb(self.scale)] if self.scale is not None else []
        return out + ([_bn_kb(self.skip, self.groups)] if self.skip is not None else [])

    def _branch_names(self) -> list[str]:
        return ["convs", "scale", "skip"]

    def reparameterize(self) -> None:
        self._merge()


class ACBlock(_Reparam):
    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3, act: bool = True) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.groups = cin, cout, stride, 1
        self.square = conv_bn(cin, cout, k, stride, k // 2)
        self.hor = conv_bn(cin, cout, (1, k), stride, (0, k // 2))
        self.ver = conv_bn(cin, cout, (k, 1), stride, (k // 2, 0))
        self.act = nn.ReLU() if act else nn.Identity()

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.square(x) + self.hor(x) + self.ver(x)

    def _branches(self) -> list[algebra.KB]:
        return [_seq_kb(self.square), _seq_kb(self.hor), _seq_kb(self.ver)]

    def _branch_names(self) -> list[str]:
        return ["square", "hor", "ver"]

    def switch_to_deploy(self) -> None:
        self._merge()


class DiverseBranchBlock(_Reparam):
    """Reduced DBB: needs cin == cout for the avg-pool branch (it is a per-channel conv)."""

    def __init__(self, channels: int, stride: int = 1, k: int = 3, act: bool = True) -> None:
        super().__init__()
        c = channels
        self.cin, self.cout, self.stride, self.groups = c, c, stride, 1
        self.dense = conv_bn(c, c, k, stride, k // 2)
        self.one = conv_bn(c, c, 1, stride, 0)
        self.squeeze = nn.Conv2d(c, c, 1, bias=False)
        self.seq = conv_bn(c, c, k, stride, k // 2)
        self.pool = nn.AvgPool2d(k, stride, k // 2)  # count_include_pad=True: a plain conv
        self.pool_bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU() if act else nn.Identity()

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x) + self.one(x) + self.seq(self.squeeze(x)) + self.pool_bn(self.pool(x))

    def _branches(self) -> list[algebra.KB]:
        k2, b2 = _seq_kb(self.seq)
        zero = torch.zeros(self.cout, dtype=k2.dtype)
        seq = algebra.compose_1x1_kxk(self.squeeze.weight, zero, k2, b2)
        ks = self.pool.kernel_size
        pool = algebra.avgpool_kernel(self.cout, 1, (ks, ks), k2.dtype)
        bn = self.pool_bn
        pool = algebra.fuse_bn(pool, None, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
        return [_seq_kb(self.dense), _seq_kb(self.one), seq, pool]

    def _branch_names(self) -> list[str]:
        return ["dense", "one", "squeeze", "seq", "pool", "pool_bn"]

    def switch_to_deploy(self) -> None:
        self._merge()


class DilatedReparamBlock(_Reparam):
    """UniRepLKNet: a depthwise large kernel plus dilated small depthwise kernels of the same reach."""

    BRANCHES = {13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)), 9: ((5, 1), (5, 2), (3, 3), (3, 4)),
                7: ((5, 1), (3, 2), (3, 3)), 5: ((3, 1), (3, 2))}

    def __init__(self, channels: int, k: int = 7, act: bool = False) -> None:
        super().__init__()
        c = channels
        self.cin, self.cout, self.stride, self.groups = c, c, 1, c
        self.origin = conv_bn(c, c, k, 1, k // 2, groups=c)
        self.dilated = nn.ModuleList(conv_bn(c, c, ks, 1, (r * (ks - 1) + 1) // 2, groups=c, dilation=r)
                                     for ks, r in self.BRANCHES[k])
        self.act = nn.GELU() if act else nn.Identity()

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.origin(x)
        for d in self.dilated:
            y = y + d(x)
        return y

    def _branches(self) -> list[algebra.KB]:
        return [_seq_kb(self.origin)] + [_seq_kb(d) for d in self.dilated]

    def _branch_names(self) -> list[str]:
        return ["origin", "dilated"]

    def merge_dilated_branches(self) -> None:
        self._merge()


def repvgg_a0(num_classes: int = 1000, width: float = 1.0) -> nn.Sequential:
    """RepVGG-A0 shape: stages of 1, 2, 4, 14, 1 RepVGG blocks, widths 48, 48, 96, 192, 1280
    (64·a with a = 0.75, last stage 512·b with b = 2.5), global pool, linear head."""
    widths = [min(64, int(64 * 0.75 * width)), int(64 * 0.75 * width), int(128 * 0.75 * width),
              int(256 * 0.75 * width), int(512 * 2.5 * width)]
    layers: list[nn.Module] = []
    cin = 3
    for depth, cout in zip((1, 2, 4, 14, 1), widths):
        for i in range(depth):
            layers.append(RepVGGBlock(cin, cout, stride=2 if i == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
