"""Small models for the spine's tests, importable as factories (`tests.zoo:NAME`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeconv.models import ModelSpec


class ConvReluBn(nn.Module):
    """Conv → ReLU → BN, the torchcrepe pattern: the BN must not fold into the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.bn(torch.relu(self.conv(x)))
        y = self.bn2(self.conv2(y))
        return self.fc(y.mean((2, 3)))


def _randomize_bn(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
    return m.eval()


def conv_relu_bn() -> ModelSpec:
    torch.manual_seed(0)
    return ModelSpec(module=_randomize_bn(ConvReluBn()), example_inputs=(torch.randn(1, 3, 16, 16),),
                     name="conv-relu-bn")


def raises() -> nn.Module:
    raise RuntimeError("checkpoint server unreachable")


def not_a_module() -> int:
    return 42


class Unlowerable(nn.Module):
    """An op no edge converter lowers (FFT)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.fft.rfft2(self.conv(x)).abs().mean((2, 3))


def unlowerable() -> ModelSpec:
    return ModelSpec(module=Unlowerable().eval(), example_inputs=(torch.randn(1, 3, 16, 16),), name="unlowerable")


def needs_32() -> ModelSpec:
    """A model with a fixed-size linear head: any other spatial size fails."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)).eval()
    return ModelSpec(module=m, example_inputs=(torch.randn(1, 3, 32, 32),), name="needs-32")


class FloatTail(nn.Module):
    """Ends in an op the quantizer leaves float (cumsum): the program's output has no int8 step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(torch.relu(self.conv(x)).mean((2, 3))), 1)


def float_tail() -> ModelSpec:
    return ModelSpec(module=FloatTail().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="float-tail")


class ScalarGate(nn.Module):
    """Scales its features by a 0-d activation (the mean over everything): a tensor with no batch
    dimension that every int8 format stores and the per-layer check reads back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        return self.fc((self.c2(y) * y.mean()).mean((2, 3)))


def scalar_gate() -> ModelSpec:
    return ModelSpec(module=ScalarGate().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),), name="scalar-gate")


class ParamSoftmaxHead(nn.Module):
    """Fuses three feature maps with `weights.softmax(-1)` of a parameter, as timm EfficientViM's
    head does: arithmetic on parameters alone that activation ops read."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.weights = nn.Parameter(torch.tensor([0.3, -0.2, 1.0]))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        w = self.weights.softmax(-1)
        return self.fc((w[0] * a + w[1] * b + w[2] * a * b).mean((2, 3)))


def param_softmax_head() -> ModelSpec:
    return ModelSpec(module=ParamSoftmaxHead().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="param-softmax-head")


class ClassTokenHead(nn.Module):
    """Patches, a class token, LayerNorm, and the head reading the class token `x[:, 0]` after the
    final norm, as every ViT-style timm net does: a select that shares the norm's qparams."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16) * 0.1)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(self.norm(t)[:, 0])


def class_token_head() -> ModelSpec:
    return ModelSpec(module=ClassTokenHead().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="class-token-head")


class BlockAttention(nn.Module):
    """Attention inside 2×2 blocks of tokens on 5-D query/key/value (batch, heads, blocks, tokens,
    dim), as timm NesT and Hiera call scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.qkv = nn.Linear(16, 48)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x)  # [B, 16, 4, 4] -> 4 blocks of 4 tokens, 2 heads of 8
        b = t.shape[0]
        t = t.reshape(b, 16, 2, 2, 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, 4, 4, 16)
        q, k, v = self.qkv(t).reshape(b, 4, 4, 3, 2, 8).permute(3, 0, 4, 1, 2, 5).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, 2, 4, 4, 8]
        return self.head(y.permute(0, 2, 3, 1, 4).reshape(b, 16, 16).mean(1))


def block_attention() -> ModelSpec:
    return ModelSpec(module=BlockAttention().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),),
                     name="block-attention")


class Blockify(nn.Module):
    """timm NesT's blocks: a rank-6 reshape, transpose(2, 3), reshape; then qkv as a rank-6 reshape
    permuted (3, 0, 4, 1, 2, 5) and unbound along dim 0, attention on 5-D. Core ML holds rank <= 5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 2, 2)
        self.qkv = nn.Linear(16, 48)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).permute(0, 2, 3, 1)  # [B, 8, 8, 16]: 2×2 blocks of 4×4 tokens
        b = t.shape[0]
        t = t.reshape(b, 2, 4, 2, 4, 16).transpose(2, 3).reshape(b, 4, 16, 16)
        q, k, v = self.qkv(t).reshape(b, 4, 16, 3, 2, 8).permute(3, 0, 4, 1, 2, 5).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, 2, 4, 16, 8]
        return self.head(y.permute(0, 2, 3, 4, 1).reshape(b, 4, 16, 16).mean((1, 2)))


def blockify() -> ModelSpec:
    return ModelSpec(module=Blockify().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="blockify")



class SwinHardswish(nn.Module):
    """A Swin block's relayouts and MobileNetV3's activations, small: hard-swish after the stem,
    a shifted window (roll along two dims), a window partition as a rank-6 reshape → permute →
    reshape, a hard-sigmoid gate, the reverse partition, and a MaxViT grid partition (six dims
    apart in the permutation, one of them the batch of 1) and its reverse. Core ML holds rank <= 5 and has no
    hard-swish op; every one of these reads int8 data in coreml-w8a8."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = F.hardswish(self.stem(x), inplace=True).permute(0, 2, 3, 1)  # [B, 8, 8, C]; timm: in place
        b, h, w, c = y.shape
        y = torch.roll(y, shifts=(-2, -2), dims=(1, 2))
        t = y.reshape(b, h // 4, 4, w // 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, c)
        t = self.mix(t) * F.hardsigmoid(t)
        y = t.reshape(b, h // 4, w // 4, 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        g = y.reshape(b, 2, h // 2, 2, w // 2, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, 4, c)  # MaxViT's grid
        g = self.mix(g).reshape(b, h // 2, w // 2, 2, 2, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c)
        return self.head(g.mean((1, 2)))


def swin_hardswish() -> ModelSpec:
    return ModelSpec(module=SwinHardswish().eval(), example_inputs=(torch.zeros(1, 3, 8, 8),), name="swin-hardswish")


class HighRank(nn.Module):
    """Rank-6 tensors as three timm families write them, small. Twins' locally-grouped attention:
    a window partition transposed and fed straight to the qkv linear. MViTv2's decomposed relative
    position: the attention viewed at rank 6 plus two unsqueezed terms, viewed back. Hiera: qkv
    permuted with size-1 dims next to the split dim, a mask-unit max-pool (a rank-6 view → amax),
    and its unroll, a permutation of six dims none of which stay together. Core ML holds rank <= 5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 2, 2)
        self.qkv = nn.Linear(16, 48)
        self.rel_h = nn.Linear(8, 4)
        self.rel_w = nn.Linear(8, 4)
        self.qkv1 = nn.Linear(16, 48)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).permute(0, 2, 3, 1)  # [B, 8, 8, 16]
        b, c = t.shape[0], t.shape[3]
        win = t.reshape(b, 2, 4, 2, 4, c).transpose(2, 3)  # Twins: 2×2 windows of 4×4 tokens
        q, k, v = self.qkv(win).reshape(b, 4, 16, 3, 2, 8).permute(3, 0, 1, 4, 2, 5).unbind(0)
        q, k, v = (z.reshape(b * 4, 2, 16, 8) for z in (q, k, v))
        attn = (q * 8 ** -0.5) @ k.transpose(-2, -1)  # [4B, 2, 16, 16]: 4×4 queries by 4×4 keys
        rel_h = self.rel_h(q).reshape(b * 4, 2, 4, 4, 4)  # MViTv2's terms along key rows and columns
        rel_w = self.rel_w(q).reshape(b * 4, 2, 4, 4, 4)
        attn = (attn.view(b * 4, 2, 4, 4, 4, 4) + rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).view(b * 4, 2, 16, 16)
        y = (attn.softmax(-1) @ v).reshape(b, 4, 2, 2, 8, 8).amax(dim=3)  # Hiera's mask-unit pool
        u = t.reshape(b, 4, 2, 4, 2, c).permute(0, 2, 4, 1, 3, 5).flatten(0, 2)  # Hiera's unroll, twice
        u = u.reshape(-1, 2, 2, 2, 2, c).permute(0, 2, 4, 1, 3, 5).reshape(b, 4, 16, c)
        q1, k1, v1 = self.qkv1(u).reshape(b, 16, 4, 3, 1, c).permute(3, 0, 4, 2, 1, 5).unbind(0)
        u = F.scaled_dot_product_attention(q1, k1, v1)  # [B, 1, 4, 16, C]
        return self.head(y.permute(0, 1, 3, 2, 4).reshape(b, 32, 16).mean(1) + u.mean((1, 2, 3)))


def high_rank() -> ModelSpec:
    return ModelSpec(module=HighRank().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="high-rank")

class Hybrid(nn.Module):
    """Every spelling of the ops a hybrid conv/attention net writes, in one small net: nn.LayerNorm
    (channels-last), nn.RMSNorm, GroupNorm(1) and GroupNorm(4) (BiT's and ViT-hybrid's GroupNorm(32) stems), a
    hand-written channels-first LayerNorm (mean, pow 2, / sqrt),
    fused attention (F.scaled_dot_product_attention on an unbound qkv), softmax with a / √d
    scale and F.normalize'd q/k, GELU (erf and tanh), hard-swish, SiLU, StarReLU, layer-scale
    multiplies, and a positional encoding computed from arange/sin (no input)."""

    def __init__(self, c: int = 16, heads: int = 2) -> None:
        super().__init__()
        from examples.zoo._common import LayerNorm2d

        self.stem = nn.Conv2d(3, c, 3, 2, 1)
        self.norm_cf = LayerNorm2d(c)
        self.gn, self.gn4 = nn.GroupNorm(1, c), nn.GroupNorm(4, c)
        self.ln, self.rms = nn.LayerNorm(c), nn.RMSNorm(c)
        self.qkv, self.qkv2, self.proj, self.heads = nn.Linear(c, 3 * c), nn.Linear(c, 3 * c), nn.Linear(c, c), heads
        self.fc1, self.fc2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))
        self.temperature = nn.Parameter(torch.tensor(4.0))
        self.star_s, self.star_b = nn.Parameter(torch.tensor(0.9)), nn.Parameter(torch.tensor(-0.1))
        self.pw = nn.Conv2d(c, c, 1)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.norm_cf(self.stem(x))
        x = x + F.hardswish(self.pw(self.gn(x))) + F.silu(self.gn4(x))
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)                               # tokens [B, N, C]
        pos = torch.arange(h * w, dtype=t.dtype)[:, None] / (h * w)    # input-independent encoding
        t = t + 0.1 * torch.sin(pos * (torch.arange(c, dtype=t.dtype)[None, :] + 1))
        split = (b, h * w, 3, self.heads, c // self.heads)
        q, k, v = self.qkv(self.ln(t)).reshape(split).permute(2, 0, 3, 1, 4).unbind(0)
        t = t + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c))
        q, k, v = self.qkv2(t).reshape(split).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)         # cross-covariance style
        a = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads) * self.temperature
        t = t + (a.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
        y = self.fc1(self.rms(t))
        y = self.star_s * F.relu(F.gelu(y, approximate="tanh")) ** 2 + self.star_b
        t = t + self.gamma * self.fc2(F.gelu(y))
        return self.head(t.mean(1))


def hybrid() -> ModelSpec:
    from examples.zoo._common import build

    return build(Hybrid, "hybrid", 32)


class AxisSoftmax(nn.Module):
    """Softmax over axes other than the last: over paths of a 5-D tensor (timm SKNet's and ResNeSt's
    split attention), over tokens (CoaT's factorised attention, `k.softmax(dim=2)`) and over a single
    token (LeViT's last stage at a small input), and over the last axis of 4-D attention logits that a
    conv across heads reads (EfficientFormerV2's talking heads, made NHWC by litert-torch)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Conv2d(16, 32, 1)
        self.kv = nn.Linear(16, 32)
        self.talk = nn.Conv2d(2, 2, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.c(x))
        a = self.fc(y.mean((2, 3), keepdim=True)).view(y.shape[0], 2, 16, 1, 1).softmax(dim=1)
        y = (torch.cat([y, torch.relu(self.c2(y))], 1).view(a.shape[0], 2, 16, *y.shape[2:]) * a).sum(1)
        t = y.flatten(2).transpose(1, 2)  # [B, N, 16]
        k, v = self.kv(t).chunk(2, -1)
        ctx = k.softmax(dim=1).transpose(1, 2) @ v  # [B, 16, 16]: tokens summed by their weights
        g = t.mean(1, keepdim=True)  # one token attending to itself (a last stage at a small input)
        g = (g @ g.transpose(1, 2)).softmax(dim=-1) @ g
        h = t.unflatten(-1, (2, 8)).transpose(1, 2)  # [B, 2 heads, N, 8]
        a = self.talk(h @ h.transpose(-2, -1))  # EfficientFormerV2's talking heads: a conv across heads
        h = (a.softmax(dim=-1) @ h).transpose(1, 2).flatten(2)
        return self.head((t @ ctx).mean(1) + g[:, 0] + h.mean(1))


def axis_softmax() -> ModelSpec:
    return ModelSpec(module=AxisSoftmax().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="axis-softmax")


class Outlook(nn.Module):
    """VOLO's outlook attention in miniature: the 3×3 neighbourhood of every second pixel unfolded,
    weighted by a softmax computed on the pooled map, and folded back with overlaps at stride 2
    (`F.unfold` / `F.fold`, as timm VOLO)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.Conv2d(8, 9, 1)
        self.proj = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.c(x))
        b, c, h, w = y.shape
        n = (h // 2) * (w // 2)  # VOLO's outlook stride 2: a neighbourhood per second pixel
        u = F.unfold(y, 3, padding=1, stride=2).view(b, c, 9, n)
        a = self.attn(F.avg_pool2d(y, 2)).view(b, 1, 9, n).softmax(2)
        z = F.fold((u * a).view(b, c * 9, n), (h, w), 3, padding=1, stride=2)
        return self.head(self.proj(z).mean((2, 3)))


def outlook() -> ModelSpec:
    return ModelSpec(module=Outlook().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="outlook")


class Upsample(nn.Module):
    """HRNet's fuse: a half-resolution branch upsampled ×2 (nearest or bilinear) and added to the
    full-resolution one."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.hi, self.lo, self.out = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        hi = F.relu(self.hi(x))
        up = F.interpolate(F.relu(self.lo(hi)), scale_factor=2.0, mode=self.mode,
                           **({} if self.mode == "nearest" else {"align_corners": False}))
        return self.head(self.out(hi + up).mean((2, 3)))


def upsample_nearest() -> ModelSpec:
    return ModelSpec(module=Upsample("nearest").eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="upsample-nearest")


def upsample_bilinear() -> ModelSpec:
    return ModelSpec(module=Upsample("bilinear").eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="upsample-bilinear")


class ShiftedWindows(nn.Module):
    """Swin's shifted windows: channels-last tokens rolled by half a window along H and W, mixed,
    and rolled back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.mlp = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).permute(0, 2, 3, 1)  # [B, 8, 8, 16]
        s = torch.roll(t, shifts=(-2, -2), dims=(1, 2))
        s = torch.roll(F.gelu(self.mlp(s)), shifts=(2, 2), dims=(1, 2))
        return self.head((t + s)[:, :4].mean((1, 2)))  # the rows the roll moved count


def shifted_windows() -> ModelSpec:
    return ModelSpec(module=ShiftedWindows().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="shifted-windows")


class SelectiveKernel(nn.Module):
    """SKNet's selective kernel: two branches stacked on a new dim 1, weighted by a softmax over the
    branches (dim 1, not the last) of a gate from their pooled sum, and summed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(3, 8, 5, 2, 2)
        self.gate = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        s = torch.stack([F.relu(self.a(x)), F.relu(self.b(x))], 1)  # [B, 2, 8, H, W]
        g = self.gate(s.sum(1).mean((2, 3), keepdim=True)).reshape(-1, 2, 8, 1, 1).softmax(1)
        return self.head((s * g).sum(1).mean((2, 3)))


def selective_kernel() -> ModelSpec:
    return ModelSpec(module=SelectiveKernel().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="selective-kernel")


class GlobalQuery(nn.Module):
    """GCViT's global query: one query per image, repeated (repeat_interleave) for each of its windows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.q = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x)  # [B, 16, 8, 8]: 2 windows of 4 × 8 tokens
        b = t.shape[0]
        w = t.reshape(b, 16, 2, 4, 8).permute(0, 2, 3, 4, 1).reshape(b * 2, 32, 16)
        g = self.q(t.mean((2, 3)))[:, None, :].repeat_interleave(2, dim=0)  # [B * 2, 1, 16]
        return self.head((w * g).mean(1).reshape(b, 2, 16).mean(1))


def global_query() -> ModelSpec:
    return ModelSpec(module=GlobalQuery().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),), name="global-query")


class PaddedShiftedWindow(nn.Module):
    """Swin's shifted window on a map that is no window multiple (timm at a small input): tokens
    rolled, padded to the window, mixed per window, merged back, cropped to the map
    (`[:, :H, :W].contiguous()`) and rolled back. The crop is a copy of the merged tokens the files
    elide; the rolled-back halves after it hold the same integers in another order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.proj = nn.Linear(16, 16)
        with torch.no_grad():  # as in a random-init Swin: one channel's bias sets the range, the
            self.proj.weight.mul_(0.1)  # tokens vary by a few steps, so the rolled halves are close
            self.proj.bias[0] = 3.0
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).permute(0, 2, 3, 1)  # [B, 6, 6, 16]: window 4, padded to 8
        b, h, w, c = t.shape
        s = F.pad(torch.roll(t, shifts=(-2, -2), dims=(1, 2)), (0, 0, 0, 2, 0, 2))
        s = s.reshape(b, 2, 4, 2, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, c)
        s = self.proj(s).reshape(b, 2, 2, 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 8, 8, c)
        s = torch.roll(s[:, :h, :w, :].contiguous(), shifts=(2, 2), dims=(1, 2))
        return self.head((t + s).mean((1, 2)))


def padded_shifted_window() -> ModelSpec:
    return ModelSpec(module=PaddedShiftedWindow().eval(), example_inputs=(torch.zeros(1, 3, 24, 24),),
                     name="padded-shifted-window")


class WindowPartition(nn.Module):
    """Swin's window partition and its reverse (views and permutes of channels-last tokens) around
    a Linear per window, as timm SwinV2-CR writes them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).permute(0, 2, 3, 1)  # [B, 8, 8, 16]
        b, h, w, c = t.shape
        win = t.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, c)
        y = self.fc(win).view(b, h // 2, w // 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.head((t + y).mean((1, 2)))


def window_partition() -> ModelSpec:
    return ModelSpec(module=WindowPartition().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="window-partition")


class RopePrefix(nn.Module):
    """timm EVA's rotary embedding: sin/cos built in forward from a meshgrid of positions (a constant
    the converters would otherwise compute as float SIN/COS every inference), applied to the tokens
    after a prefix token with rotate-half, concatenated back and cast with `.type_as` (a no-op cast
    the annotator gave a quantize of its own, and litert-torch then refused the concatenation)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16) * 0.5)
        self.q = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def rope(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        grid = torch.stack(torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij"), -1)
        freq = grid.float().flatten(0, 1).repeat(1, 4) * torch.arange(1, 9).float()  # [h*w, 8]
        ang = torch.cat([freq, freq], -1)
        return ang.sin(), ang.cos()

    def forward(self, x):
        t = self.patch(x)
        b, c, h, w = t.shape
        t = torch.cat([self.cls.expand(b, -1, -1), t.flatten(2).transpose(1, 2)], 1)
        q = self.q(t)
        sin, cos = self.rope(h, w)
        a, r = q[:, 1:].chunk(2, -1)
        rot = q[:, 1:] * cos + torch.cat([-r, a], -1) * sin
        q = torch.cat([q[:, :1], rot], 1).type_as(t)
        return self.head((t + q).mean(1))


def rope_prefix() -> ModelSpec:
    return ModelSpec(module=RopePrefix().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="rope-prefix")


class CosineAttentionBlock(nn.Module):
    """One SwinV2 block on one window (timm swin_transformer_v2 WindowAttention, post-norm): cosine
    attention (L2-normalised q and k), a learned logit scale clamped and exponentiated, the
    continuous position bias MLP squashed by 16·sigmoid, and timm's dropouts (identities at eval)
    after the softmax and the projection."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, heads, bias=False))
        r = torch.arange(-(window - 1), window, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1) / (window - 1) * 8
        self.register_buffer("coords", torch.sign(table) * torch.log2(table.abs() + 1) / math.log2(8))
        ij = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (ij[:, :, None] - ij[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.attn_drop, self.proj_drop = nn.Dropout(0.0), nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, t):
        b, n, c = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        bias = self.cpb_mlp(self.coords).view(-1, self.heads)[self.index.view(-1)].view(n, n, -1)
        attn = attn + 16 * torch.sigmoid(bias.permute(2, 0, 1).contiguous()).unsqueeze(0)
        y = (self.attn_drop(attn.softmax(-1)) @ v).transpose(1, 2).reshape(b, n, c)
        return t + self.norm(self.proj_drop(self.proj(y)))


class CosineWindowAttention(nn.Module):
    """Two SwinV2 blocks on a 4×4-token window (timm SwinV2 at 64²: stage 0's window is the whole
    map): each block's softmax has the same size and fixed int8 scale (1/256), and the dropout after
    it leaves an identity requantization the files elide."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(*[CosineAttentionBlock(dim, heads, window) for _ in range(2)])
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # [B, 16, C]: one window
        return self.head(self.blocks(t).mean(1))


def cosine_window_attention() -> ModelSpec:
    return ModelSpec(module=CosineWindowAttention().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),),
                     name="cosine-window-attention")


class ChannelsLastHead(nn.Module):
    """timm NesT's and SwinV2-CR's head: the blocks work channels-last, the norm's output is permuted back to
    channels-first and pooled by `adaptive_avg_pool2d(x, 1)` (timm's SelectAdaptivePool2d), then flattened.
    torch.onnx wrote that pool on a permuted map as ReduceMean, Reshape and Gather (an as_strided)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.mix = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y = self.mix(self.stem(x).permute(0, 2, 3, 1))  # a token op: its output is laid out channels-last
        y = self.norm(y).permute(0, 3, 1, 2)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


def channels_last_head() -> ModelSpec:
    return ModelSpec(module=ChannelsLastHead().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),),
                     name="channels-last-head")


class PadExcludedPool(nn.Module):
    """timm ViTamin's downsampling shortcut: a 3×3 stride-2 average pool padded by 1 whose border windows
    divide by their valid pixels only (count_include_pad=False), at an even and an odd map size.
    litert-torch wrote it as float REDUCE_WINDOW sums and a DIV."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.conv = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = self.conv(self.pool(torch.relu(self.stem(x))))  # 16² → 8² → 4²
        y = F.avg_pool2d(y[..., :3, :3], 3, 2, 1, count_include_pad=False)  # an odd side: 3² → 2²
        return self.head(y.mean((2, 3)))


def pad_excluded_pool() -> ModelSpec:
    return ModelSpec(module=PadExcludedPool().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),),
                     name="pad-excluded-pool")


class LayerScaleOfOnes(nn.Module):
    """Two MLP blocks `t + gamma * drop(fc2(gelu(fc1(norm(t)))))` with the layer scale at ones (timm
    XCiT's eta=1 init, any layer scale before training): the removed dropout leaves an identity
    requantization of fc2's output, and the multiply by ones holds the same integers at the same
    parameters — which the files keep as a MUL and elide the copy of."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.fc1s = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(2))
        self.fc2s = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(2))
        self.drop = nn.Dropout(0.0)
        self.gammas = nn.ParameterList(nn.Parameter(torch.ones(dim)) for _ in range(2))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        for norm, fc1, fc2, gamma in zip(self.norms, self.fc1s, self.fc2s, self.gammas):
            t = t + gamma * self.drop(fc2(F.gelu(fc1(norm(t)))))
        return self.head(t.mean(1))


def layer_scale_of_ones() -> ModelSpec:
    return ModelSpec(module=LayerScaleOfOnes().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),),
                     name="layer-scale-of-ones")


class BicubicResize(nn.Module):
    """timm CrossViT's second branch: the input image resized by `F.interpolate(mode='bicubic')` to a
    smaller fixed size (240 → 224 there, 20 → 16 by 20 → 12 here) before its own patch embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, 4)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = F.interpolate(x, size=(16, 12), mode="bicubic", align_corners=False)
        return self.head(self.embed(y).mean((2, 3)))


def bicubic_resize() -> ModelSpec:
    return ModelSpec(module=BicubicResize().eval(), example_inputs=(torch.zeros(1, 3, 20, 20),), name="bicubic-resize")


class SameMaxPool(nn.Module):
    """timm's `MaxPool2dSame` (ResNetV2 / BiT stems, ViT-hybrid): TF-style SAME padding written as
    `F.pad(x, value=-inf)` before a 3×3 stride-2 max pool, on a map whose values go below zero."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.conv = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = F.pad(self.stem(x), (0, 1, 0, 1), value=-float("inf"))  # 16² → 17²: SAME for k3 s2
        return self.head(self.conv(F.max_pool2d(y, 3, 2)).mean((2, 3)))


def same_max_pool() -> ModelSpec:
    return ModelSpec(module=SameMaxPool().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="same-max-pool")


class DepthwiseKernels(nn.Module):
    """Depthwise convs of several kernel areas, ConvNeXt's 7×7 among them, beside a grouped conv
    that is not depthwise (2 input channels per group) and a depthwise conv with a channel multiplier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 1)
        self.dw3 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.dw7 = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.grouped = nn.Conv2d(16, 16, 7, padding=3, groups=8)
        self.dw5x7 = nn.Conv2d(16, 32, (5, 7), padding=(2, 3), groups=16)  # 35 taps, multiplier 2
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = self.grouped(torch.relu(self.dw7(self.dw3(y))))
        return self.head(self.dw5x7(y).mean((2, 3)))


def depthwise_kernels() -> ModelSpec:
    from examples.zoo._common import build

    return build(DepthwiseKernels, "depthwise-kernels", 16)


class TransposedConvs(nn.Module):
    """Transposed convs, as timm's LowFormer upsamples its attention output: depthwise stride 2
    (kernel 4, padding 1), depthwise stride 1 (kernel 3, padding 1), ungrouped stride 2 with a kernel
    the stride does not divide and an output padding, and two groups with an output padding and a
    dilation."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.down = nn.Conv2d(3, 8, 3, 2, 1)
        self.up2 = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=8)
        self.up1 = nn.ConvTranspose2d(8, 8, 3, stride=1, padding=1, groups=8)
        self.plain = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.odd = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        y = self.up1(torch.relu(self.up2(torch.relu(self.down(x)))))
        return self.head(self.odd(torch.relu(self.plain(y))).mean((2, 3)))


def transposed_convs() -> ModelSpec:
    from examples.zoo._common import build

    return build(TransposedConvs, "transposed-convs", 16)


class RelPosEinsum(nn.Module):
    """timm MViTv2's decomposed relative position (`cal_rel_pos_type`), 4×4 queries by 2×2 pooled
    keys: each axis' table gathered from a parameter by a distance index made with arange and
    an in-place `+=`, applied with `torch.einsum("byhwc,hkc->byhwk", q, table)`; the attention
    logits themselves as an einsum of two activations (`bhqc,bhkc->bhqk`)."""

    def __init__(self, c: int = 8, heads: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, heads * c, 4, 4)
        self.qkv = nn.Linear(heads * c, 3 * heads * c)
        self.rel_pos_h = nn.Parameter(torch.randn(7, c) * 0.5)
        self.rel_pos_w = nn.Parameter(torch.randn(7, c) * 0.5)
        self.heads, self.c = heads, c
        self.head = nn.Linear(heads * c, 10)

    @staticmethod
    def _dist(q: int, k: int) -> torch.Tensor:
        q_ratio, k_ratio = max(k / q, 1.0), max(q / k, 1.0)
        dist = torch.arange(q).unsqueeze(-1) * q_ratio - torch.arange(k).unsqueeze(0) * k_ratio
        dist += (k - 1) * k_ratio
        return dist.long()

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # [B, 16, heads·c]: a 4×4 map
        b = t.shape[0]
        q, k, v = self.qkv(t).reshape(b, 16, 3, self.heads, self.c).permute(2, 0, 3, 1, 4).unbind(0)
        k, v = (F.max_pool2d(z.reshape(b * self.heads, 4, 4, self.c).permute(0, 3, 1, 2), 2)
                .flatten(2).transpose(1, 2).reshape(b, self.heads, 4, self.c) for z in (k, v))
        attn = torch.einsum("bhqc,bhkc->bhqk", q * self.c ** -0.5, k)  # [B, heads, 16, 4]
        rel_h, rel_w = self.rel_pos_h[self._dist(4, 2)], self.rel_pos_w[self._dist(4, 2)]  # [4, 2, c]
        r_q = q.reshape(b, self.heads, 4, 4, self.c)
        rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, rel_h)
        rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, rel_w)
        attn = attn.view(b, self.heads, 4, 4, 2, 2) + rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)
        attn = attn.view(b, self.heads, 16, 4)
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, 16, self.heads * self.c)
        return self.head((t + y).mean(1))


def rel_pos_einsum() -> ModelSpec:
    return ModelSpec(module=RelPosEinsum().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="rel-pos-einsum")


class AdaptivePools(nn.Module):
    """Adaptive average pools, as CSATv2 (AdaptiveAvgPool2d((7, 7)) of maps from 8×8 down to 2×2) and
    PSPNet's pyramid write them: 8×8 → 7×7 and → 3×5 (windows that do not divide the map), 4×4 → 7×7
    (larger than its input: overlapping windows), 1×1 → 3×2 (a broadcast), and 8×8 → 4×4 (divides:
    an ordinary pool)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.down = nn.Conv2d(8, 8, 3, 2, 1)
        self.head = nn.Linear(40, 10)

    def forward(self, x):
        y = torch.relu(self.stem(x))  # 8×8
        z = torch.relu(self.down(y))  # 4×4
        one = z.amax((2, 3), keepdim=True)  # 1×1 (CSATv2's last stage at 64²)
        pools = [F.adaptive_avg_pool2d(y, (7, 7)), F.adaptive_avg_pool2d(y, (3, 5)),
                 F.adaptive_avg_pool2d(z, (7, 7)), F.adaptive_avg_pool2d(y, (4, 4)), F.adaptive_avg_pool2d(one, (3, 2))]
        return self.head(torch.cat([p.mean((2, 3)) for p in pools], 1))


def adaptive_pools() -> ModelSpec:
    from examples.zoo._common import build

    return build(AdaptivePools, "adaptive-pools", 16)


class HaloAttention(nn.Module):
    """timm's HaloAttn (HaloNet) at toy size, written as timm writes it: the key/value map padded by
    the halo and cut into overlapping windows with two `Tensor.unfold`s, relative position logits per
    axis through pad → flatten → pad → slice → expand (`rel_logits_1d`), a softmax over each
    block's window, and the blocks folded back. Its int8 program has many tensors as large as
    the attention map (blocks × block² × window²): HaloNet-H1's at 256² total 481 M int8 values a sample."""

    def __init__(self, dim: int = 16, heads: int = 2, block: int = 4, halo: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.heads, self.block, self.halo, self.win = heads, block, halo, block + 2 * halo
        self.dh = dim // heads
        self.stem = nn.Conv2d(3, dim, 3, 2, 1)
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.kv = nn.Conv2d(dim, 2 * dim, 1, bias=False)
        self.height_rel = nn.Parameter(torch.randn(2 * self.win - 1, self.dh) * self.dh ** -0.5)
        self.width_rel = nn.Parameter(torch.randn(2 * self.win - 1, self.dh) * self.dh ** -0.5)
        self.head = nn.Linear(dim, 10)

    @staticmethod
    def _rel_logits_1d(q, rel_k, permute_mask):
        b, h, w, _ = q.shape
        rel_size = rel_k.shape[0]
        win = (rel_size + 1) // 2
        x = (q @ rel_k.transpose(-1, -2)).reshape(-1, w, rel_size)
        x_pad = F.pad(F.pad(x, [0, 1]).flatten(1), [0, rel_size - w]).reshape(-1, w + 1, rel_size)
        x = x_pad[:, :w, win - 1:]
        return x.reshape(b, h, 1, w, win).expand(-1, -1, win, -1, -1).permute(permute_mask)

    def _pos(self, q):
        b, bb, hw, _ = q.shape
        q = q.reshape(-1, self.block, self.block, self.dh)
        w = self._rel_logits_1d(q, self.width_rel, (0, 1, 3, 2, 4))
        h = self._rel_logits_1d(q.transpose(1, 2), self.height_rel, (0, 3, 1, 4, 2))
        return (h + w).reshape(b, bb, hw, -1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        b, c, hh, ww = x.shape
        nh, nw = hh // self.block, ww // self.block
        n = nh * nw
        q = self.q(x).reshape(-1, self.dh, nh, self.block, nw, self.block).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(b * self.heads, self.dh, -1, n).transpose(1, 3)
        kv = F.pad(self.kv(x), [self.halo] * 4)
        kv = kv.unfold(2, self.win, self.block).unfold(3, self.win, self.block).reshape(
            b * self.heads, 2 * self.dh, n, -1).permute(0, 2, 3, 1)
        k, v = torch.split(kv, [self.dh, self.dh], dim=-1)
        attn = ((q @ k.transpose(-1, -2)) * self.dh ** -0.5 + self._pos(q)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 3).reshape(-1, self.block, self.block, nh, nw)
        out = out.permute(0, 3, 1, 4, 2).contiguous().view(b, c, hh, ww)
        return self.head((out + x).mean((2, 3)))


def halo_attention() -> ModelSpec:
    return ModelSpec(module=HaloAttention().eval(), example_inputs=(torch.zeros(1, 3, 32, 32),),
                     name="halo-attention")


class LinearAttention(nn.Module):
    """EfficientViT's LiteMLA (timm efficientvit_mit) as timm writes it: ReLU kernels on q and k, v
    padded with a column of ones, `out = q @ (kᵀ @ v)` in float32 under `autocast(enabled=False)`,
    divided by its own last column plus eps (a divisor ≥ eps by construction, though v has either
    sign); the quotient's last column would be 1. 8×8 tokens, two heads of 8."""

    def __init__(self, c: int = 16, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dim = dim
        self.stem = nn.Conv2d(3, c, 3, 2, 1)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.head = nn.Linear(c, 10)

    def _attn(self, q, k, v):
        q, k, v = q.float(), k.float(), v.float()
        out = q @ (k.transpose(-1, -2) @ v)
        return out[..., :-1] / (out[..., -1:] + 1e-5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        b, _, h, w = x.shape
        qkv = self.qkv(x).reshape(b, -1, 3 * self.dim, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        q, k = torch.relu(q), torch.relu(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        with torch.autocast(device_type=v.device.type, enabled=False):
            out = self._attn(q, k, v)
        out = x + self.proj(out.transpose(-1, -2).reshape(b, -1, h, w))
        return self.head(out.mean((2, 3)))


def linear_attention() -> ModelSpec:
    from examples.zoo._common import build

    return build(LinearAttention, "linear-attention", 16)


class ResponseNormBlock(nn.Module):
    """ConvNeXt-V2's block with global response normalization, as timm's GlobalResponseNorm
    (channels-last; CSATv2 has one per block) writes it: `g = x.norm(p=2, dim=(1, 2), keepdim=True)`,
    `x + bias + weight · (x · g / (g.mean(-1, keepdim=True) + eps))`."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, c, 4, 4)
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.grn_weight = nn.Parameter(torch.randn(4 * c) * 0.5)
        self.grn_bias = nn.Parameter(torch.randn(4 * c) * 0.1)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))
        y = F.gelu(y)
        g = y.norm(p=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        y = y + torch.addcmul(self.grn_bias.view(1, 1, 1, -1), self.grn_weight.view(1, 1, 1, -1), y * n)
        x = x + self.pwconv2(y).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def response_norm_block() -> ModelSpec:
    from examples.zoo._common import build

    return build(ResponseNormBlock, "response-norm-block", 16)


class UnprovenDivisors(nn.Module):
    """Divisions whose divisor has no sign the graph proves: a conv output; relu(x) - 1; the last
    two columns of a linear attention's `q @ (kᵀ @ pad(v, value=1))` (one of them v's, of either
    sign); the last column when v is padded with -1. Beside them one that is proven: the same
    attention's last column plus eps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.den = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(3, 8, 3, 1, 1)

    def forward(self, x):
        a = self.conv(x)
        b, c, h, w = a.shape
        t = a.reshape(b, c, h * w).transpose(-1, -2)  # [b, n, c]
        q, k = torch.relu(t), torch.relu(-t)
        ones = q @ (k.transpose(-1, -2) @ F.pad(t, (0, 1), value=1.0))
        minus = q @ (k.transpose(-1, -2) @ F.pad(t, (0, 1), value=-1.0))
        return (a / self.den(x), a / (torch.relu(x.mean(1, keepdim=True)) - 1),
                ones[..., :-2] / ones[..., -2:].sum(-1, keepdim=True), minus[..., :-1] / (minus[..., -1:] + 1e-5),
                ones[..., :-1] / (ones[..., -1:] + 1e-5))


def unproven_divisors() -> ModelSpec:
    return ModelSpec(module=UnprovenDivisors().eval(), example_inputs=(torch.zeros(1, 3, 4, 4),),
                     name="unproven-divisors")


class ZigzagReorder(nn.Module):
    """timm CSATv2's DCT stem reorders coefficients by a constant list: `x[:, :, self.permutation]`
    (advanced indexing with one 1-D index). torch.onnx writes it as Transpose, GatherND, Transpose on
    the dequantized values (two float ops in onnx-int8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.permutation = [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = self.stem(x)  # [B, 8, 4, 4]
        b, c = y.shape[:2]
        y = y.reshape(b, c, 16)[:, :, self.permutation].reshape(b, c, 4, 4)
        return self.head(self.mix(y).mean((2, 3)))


def zigzag_reorder() -> ModelSpec:
    return ModelSpec(module=ZigzagReorder().eval(), example_inputs=(torch.zeros(1, 3, 8, 8),), name="zigzag-reorder")


class DeadNorms(nn.Module):
    """Every int8 RSQRT edgeconv emits, each fed an exact 0 at times: a zero token padded onto the
    tokens (ViT's pad to a window, a masked token) through LayerNorm (`rsqrt(var + eps)`, eps below
    half a step of var) and F.normalize (`rsqrt(clamp(Σx², eps²))`), and a dead channel (a row of
    zeros in the expansion, as a trained net's pruned unit) through timm's GlobalResponseNorm (its
    L2 norm `s · rsqrt(clamp(s))` and its division by the proven-positive `mean(g) + eps`)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, c, 4, 4)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc = nn.Linear(c, 2 * c)
        with torch.no_grad():
            self.fc.weight[0].zero_()
            self.fc.bias[0] = 0.0
        self.grn_weight = nn.Parameter(torch.randn(2 * c) * 0.5)
        self.grn_bias = nn.Parameter(torch.randn(2 * c) * 0.1)
        self.head = nn.Linear(3 * c, 10)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)  # [B, N, C]
        t = F.pad(t, (0, 0, 0, 1))  # one all-zero token
        a = F.normalize(t, dim=-1)
        y = F.gelu(self.fc(self.norm(t)))  # channel 0 is 0 everywhere
        g = y.norm(p=2, dim=1, keepdim=True)
        y = y + torch.addcmul(self.grn_bias, self.grn_weight, y * (g / (g.mean(dim=-1, keepdim=True) + 1e-6)))
        return self.head(torch.cat([a, y], -1).mean(1))


def dead_norms() -> ModelSpec:
    from examples.zoo._common import build

    return build(DeadNorms, "dead-norms", 32)


class LSTM2dBlock(nn.Module):
    """Sequencer's block (timm sequencer.py LSTM2d) on an 8×8 map: a bidirectional, batch_first
    LSTM along each row and one along each column of the channels-last map, their outputs
    concatenated and mixed by a linear, added back; a pooled head. A 4×4 map: 4 steps each way."""

    def __init__(self, c: int = 16, hidden: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, c, 8, 8)
        self.norm = nn.LayerNorm(c)
        self.rnn_v = nn.LSTM(c, hidden, batch_first=True, bidirectional=True)
        self.rnn_h = nn.LSTM(c, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * hidden, c)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        y = self.norm(x)
        v, _ = self.rnn_v(y.permute(0, 2, 1, 3).reshape(-1, h, c))
        v = v.reshape(b, w, h, -1).permute(0, 2, 1, 3)
        r, _ = self.rnn_h(y.reshape(-1, w, c))
        x = x + self.fc(torch.cat([v, r.reshape(b, h, w, -1)], dim=-1))
        return self.head(x.mean((1, 2)))


def lstm2d() -> ModelSpec:
    from examples.zoo._common import build

    return build(LSTM2dBlock, "lstm2d", 32)


class WholeMapNorm(nn.Module):
    """PoolFormer's norm: GroupNorm(1) normalizes each sample over its whole map, one MEAN over
    C·H·W values (here 64·16·16 = 16384, past the 8192 at which XNNPACK's x86 int8 MEAN overflows on
    CPUs without AVX-512, ai-edge-litert 2.3.0); a 1×1 mixer and a pooled head after it."""

    def __init__(self, c: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, c, 2, 2)
        self.norm = nn.GroupNorm(1, c)
        self.mix = nn.Conv2d(c, c, 1)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mix(F.gelu(self.norm(x)))
        return self.head(x.mean((2, 3)))


def whole_map_norm() -> ModelSpec:
    from examples.zoo._common import build

    return build(WholeMapNorm, "whole-map-norm", 32)


class LogisticChaos(nn.Module):
    """A net that amplifies rounding as a chaotic map does: each step a 1×1 conv averages the
    channels (positive weights, rows summing to 1: values stay in (0, 1)) and the logistic map
    y → 3.9·y·(1 − y) stretches any difference, so `steps` of them turn a conv's rounding (another
    summation order in any other runtime) into orders of magnitude more; the pooled head averages
    the pixels' chaos back down. A linear head."""

    def __init__(self, steps: int, stride: int, c: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.steps = steps
        self.stem = nn.Conv2d(3, c, stride, stride)
        self.mix = nn.Conv2d(c, c, 1, bias=False)
        with torch.no_grad():
            self.stem.weight.mul_(0.1)  # y near 0.5: the map's chaotic band, not its fixed point at 0
            w = torch.rand(c, c) + 0.1
            self.mix.weight.copy_((w / w.sum(1, keepdim=True))[:, :, None, None])
        self.head = nn.Linear(c, 10, bias=False)  # no common offset to keep two outputs alike

    def forward(self, x):
        y = torch.sigmoid(self.stem(x))
        for _ in range(self.steps):
            y = self.mix(y)
            y = 3.9 * y * (1 - y)
        return self.head(y.mean((2, 3)) - 0.5)  # centred: logits around 0, no shared offset


def _chaos(steps: int, stride: int) -> ModelSpec:
    from examples.zoo._common import build

    return build(lambda: LogisticChaos(steps, stride), f"logistic-chaos-{steps}-{stride}", 32)


def calm_map() -> ModelSpec:
    """No chaotic step: rounding stays at fp32's level."""
    return _chaos(0, 2)


def chaotic_map() -> ModelSpec:
    """24 steps over a 16×16 map: fp32 is ~1e-3 of the output range from fp64, far past the float
    floor (1e-4), but the output still carries the function."""
    return _chaos(24, 2)


def wild_map() -> ModelSpec:
    """60 steps on a 1×1 map: fp32's rounding is all the output carries."""
    return _chaos(60, 32)


class InPlaceConstants(nn.Module):
    """Arithmetic written in place with constant operands, as timm CSATv2's stem undoes the ImageNet
    normalization (`x.mul(std).add_(mean) * 255`): a buffer added in place, a number multiplied and
    subtracted in place, and an in-place add onto a tensor another op read before."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.linspace(-1.0, 1.0, 8).view(8, 1, 1), persistent=False)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = x.mul(self.std).add_(self.mean)
        y = torch.relu(self.c1(y.mul_(255.0).sub_(128.0)))
        z = self.c2(y)
        g = z * y  # reads z before the in-place add below: that add stays in place
        return self.fc((z.add_(self.shift) * g).mean((2, 3)))


def in_place_constants() -> ModelSpec:
    return ModelSpec(module=InPlaceConstants().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),),
                     name="in-place-constants")
