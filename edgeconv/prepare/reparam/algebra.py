"""Branch algebra: every linear branch becomes one (kernel, bias) of a single conv (TECHNIQUES.md §2).

Kernels are `[Cout, Cin/groups, kH, kW]`. Parallel branches with equal stride and groups add after
zero-padding the smaller kernels to the centre; identity and average pooling are kernels too;
1×1 then k×k composes; a dilated k×k kernel is a sparse dense one of size r(k−1)+1. The functions
take tensors (not modules) so the block library and the graph pass share them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

KB = tuple["torch.Tensor", "torch.Tensor"]  # (kernel, bias)


def fuse_bn(kernel: "torch.Tensor", bias: "torch.Tensor | None", mean: "torch.Tensor",
            var: "torch.Tensor", gamma: "torch.Tensor | None", beta: "torch.Tensor | None",
            eps: float) -> KB:
    """conv(K, b) followed by BN(eval) == conv(K·c, β + c·(b − μ)), c = γ / sqrt(σ² + eps)."""
    import torch

    c = torch.rsqrt(var + eps)
    if gamma is not None:
        c = gamma * c
    b = (torch.zeros_like(mean) if bias is None else bias) - mean
    b = b * c + (0 if beta is None else beta)
    return kernel * c.reshape(-1, *([1] * (kernel.dim() - 1))), b


def pad_to(kernel: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """Zero-pad a kernel to `size` keeping its centre (sizes must differ by even amounts)."""
    from torch.nn import functional as F

    dh, dw = size[0] - kernel.shape[-2], size[1] - kernel.shape[-1]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"cannot centre a {tuple(kernel.shape[-2:])} kernel in {size}")
    return F.pad(kernel, (dw // 2, dw // 2, dh // 2, dh // 2))


def identity_kernel(channels: int, groups: int, dtype: "torch.dtype", size: tuple[int, int] = (1, 1)) -> "torch.Tensor":
    """Id[i, i % (C/g), centre] = 1: the identity as a grouped conv kernel."""
    import torch

    per = channels // groups
    k = torch.zeros(channels, per, *size, dtype=dtype)
    k[torch.arange(channels), torch.arange(channels) % per, size[0] // 2, size[1] // 2] = 1
    return k


def avgpool_kernel(channels: int, groups: int, k: tuple[int, int], dtype: "torch.dtype") -> "torch.Tensor":
    """avg_pool(k×k, count_include_pad) as a grouped conv: 1/(kH·kW) on each channel's own plane."""
    import torch

    per = channels // groups
    out = torch.zeros(channels, per, *k, dtype=dtype)
    out[torch.arange(channels), torch.arange(channels) % per] = 1.0 / (k[0] * k[1])
    return out


def dilate(kernel: "torch.Tensor", rate: tuple[int, int]) -> "torch.Tensor":
    """A kernel at dilation r as a dense kernel of size r(k−1)+1, taps at multiples of r."""
    import torch

    kh, kw = kernel.shape[-2:]
    out = torch.zeros(*kernel.shape[:-2], rate[0] * (kh - 1) + 1, rate[1] * (kw - 1) + 1,
                      dtype=kernel.dtype)
    out[..., ::rate[0], ::rate[1]] = kernel
    return out


def compose_1x1_kxk(k1: "torch.Tensor", b1: "torch.Tensor", k2: "torch.Tensor", b2: "torch.Tensor") -> KB:
    """conv_k2(conv_k1(x)) for a 1×1 first conv, groups 1: K = K2 · K1 over the middle channels.

    Exact only where the k×k conv's zero padding sees zeros: with padding, b1 must be 0
    (the caller checks; DiverseBranchBlock pads with the BN bias for that reason).
    """
    import torch

    k = torch.einsum("omhw,mi->oihw", k2, k1[:, :, 0, 0])
    b = b2 + (k2.sum(dim=(2, 3)) @ b1)
    return k, b


def add(branches: list[KB]) -> KB:
    """Sum of parallel branches, each padded to the largest kernel."""
    size = (max(k.shape[-2] for k, _ in branches), max(k.shape[-1] for k, _ in branches))
    kernel = sum(pad_to(k, size) for k, _ in branches)
    bias = sum(b for _, b in branches)
    return kernel, bias
