"""Shared pieces of the zoo: conv-BN helpers, reparameterization algebra, and `build()`, which turns
a freshly constructed net into a deterministic `ModelSpec` with realistic normalisation layers.

Realistic here means: random-but-sane BatchNorm / LayerNorm affine parameters (γ around 1, small
β) and BatchNorm running statistics *measured on real photos* (`images.batch`): the net runs in
train mode with `momentum=None` (a cumulative average over the batches) under `no_grad`, then
switches to eval. Int8 calibration on pure-init statistics (mean 0, var 1) is meaningless: the
activation ranges a quantizer sees would have nothing to do with a trained net's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_IMAGES = 8  # photos run through the net for the running statistics (one train-mode batch)
BN_BATCH = 8


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet's channel rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn(cin: int, cout: int, k=3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = None,
            padding=None, dilation: int = 1) -> nn.Sequential:
    if padding is None:
        padding = (k // 2 * dilation) if isinstance(k, int) else (k[0] // 2, k[1] // 2)
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of an N×C×H×W tensor, written out (ConvNeXt / HorNet
    `data_format="channels_first"`): mean, var, rsqrt — the ops an exporter must lower."""

    def __init__(self, c: int, eps: float = 1e-6, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        x = self.weight[:, None, None] * x
        return x + self.bias[:, None, None] if self.bias is not None else x


# --- structural reparameterization algebra (RepVGG, MobileOne, UniRepLKNet) ---------------------

def fuse_conv_bn(conv: nn.Conv2d | None, bn: nn.BatchNorm2d, kernel: torch.Tensor | None = None):
    """(kernel, bias) of conv→BN as one conv; `kernel` overrides conv.weight (identity branches)."""
    w = conv.weight if kernel is None else kernel
    b = conv.bias if conv is not None and conv.bias is not None else torch.zeros(bn.num_features)
    std = torch.sqrt(bn.running_var + bn.eps)
    t = bn.weight / std
    return w * t.reshape(-1, 1, 1, 1), bn.bias + (b - bn.running_mean) * t


def pad_to(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Zero-pad a centred kh×kw kernel to k×k."""
    ph, pw = (k - kernel.shape[-2]) // 2, (k - kernel.shape[-1]) // 2
    return F.pad(kernel, (pw, pw, ph, ph))


def identity_kernel(channels: int, groups: int, k: int) -> torch.Tensor:
    per = channels // groups
    w = torch.zeros(channels, per, k, k)
    for i in range(channels):
        w[i, i % per, k // 2, k // 2] = 1.0
    return w


def dilate_kernel(kernel: torch.Tensor, d: int) -> torch.Tensor:
    """A k×k kernel with dilation d as the equivalent ((k-1)d+1)² dense kernel."""
    if d == 1:
        return kernel
    c, i, kh, kw = kernel.shape
    out = torch.zeros(c, i, (kh - 1) * d + 1, (kw - 1) * d + 1)
    out[:, :, ::d, ::d] = kernel
    return out


def deploy_conv(src: nn.Conv2d, kernel: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A conv with `src`'s channels, stride and groups carrying the merged (kernel, bias)."""
    k = kernel.shape[-1]
    conv = nn.Conv2d(src.in_channels, kernel.shape[0], k, src.stride, k // 2, groups=src.groups, bias=True)
    conv.weight.data.copy_(kernel)
    conv.bias.data.copy_(bias)
    return conv


# --- realistic parameters ---------------------------------------------------------------------

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, LayerNorm2d)


@torch.no_grad()
def sane_affine(model: nn.Module, seed: int) -> None:
    """γ ~ U(0.6, 1.4), β ~ N(0, 0.1) on every normalisation layer, in module order (seeded)."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, NORMS):
            w, b = getattr(m, "weight", None), getattr(m, "bias", None)
            if w is not None:
                w.copy_(torch.rand(w.shape, generator=g) * 0.8 + 0.6)
            if b is not None:
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


@torch.no_grad()
def bn_stats_from_images(model: nn.Module, height: int, width: int, mean=(), std=(),
                         n: int = BN_IMAGES, batch: int = BN_BATCH, seed: int = 0) -> int:
    """Set every BatchNorm's running mean/var from `n` real photo crops (train mode, momentum=None:
    a cumulative average), then eval(). Returns the number of BatchNorm layers set."""
    from examples.zoo.images import batch as photo_batch

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    x = torch.from_numpy(photo_batch(n, height, width, mean, std, seed))
    model.train()
    for i in range(0, n, batch):
        model(x[i:i + batch])
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
    return len(bns)


def build(ctor, name: str, height: int, width: int | None = None, *, task: str = "classify", seed: int = 0):
    """Construct `ctor()` under a fixed seed, give it realistic norms, return its ModelSpec.

    Global RNG state is restored afterwards (the factory has no side effect on the caller's seed)."""
    from edgeconv.models import ModelSpec

    width = width or height
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if task == "classify" else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ctor()
        sane_affine(model, seed)
        bn_stats_from_images(model, height, width, mean, std, seed=seed)
        model.eval()
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
        if task != "classify":
            x = x.abs().clamp(0, 3) / 3  # an SR net reads [0, 1] pixels
    return ModelSpec(module=model, example_inputs=(x,), name=name, mean=mean, std=std)


def layer_scale(dim: int, value: float = 0.5) -> nn.Parameter:
    """Layer-scale γ. Papers init at 1e-6 (training grows it); a random-weight net with 1e-6 would be
    identity blocks, so the zoo uses `value` (trained nets have γ of order 0.1–1)."""
    return nn.Parameter(torch.full((dim,), value))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

