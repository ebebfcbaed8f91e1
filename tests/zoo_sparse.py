"""An in-repo MobileNetV2-shaped model for the sparse path (no torchvision, no downloaded weights).

It has exactly the structure XNNPACK's sparse region is built for: a 3x3 stride-2 conv on 3 input
channels with padding 1 (the stem), inverted-residual blocks (1x1 expand, 3x3 depthwise stride 1 and
2, 1x1 project, residual add), a final 1x1 conv, global average pooling, then a linear classifier.
`with_unsupported_op=True` puts one op XNNPACK cannot run in CHW layout (a dense 3x3 conv) inside
the region; `tf_same_padding=True` pads every stride-2 conv the TF "SAME" way (0 before, 1 after on
even sizes), as a model from TF/Keras has it: the stem is then not the padding-1 conv XNNPACK's
sparse region must start with.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from examples.mobilenet_v2 import conv_bn  # the same Conv-BN(-ReLU6) unit as the full-size example

# (expansion, output channels, repeats, first stride): MobileNetV2's table, narrowed for test speed.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))
INPUT_SHAPE = (1, 3, 64, 64)


class TfSamePad(nn.Module):
    """TF SAME padding of a 3x3 stride-2 conv on an even size: nothing before, one after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 1, 0, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, tf_same: bool = False) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1)] if expand != 1 else []
        dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        if tf_same and stride == 2:
            dw[0].padding = (0, 0)
            dw = nn.Sequential(TfSamePad(), *dw)
        layers += [dw, conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2ish(nn.Module):
    def __init__(self, num_classes: int = 10, last: int = 256, in_channels: int = 3,
                 with_unsupported_op: bool = False, tf_same_padding: bool = False) -> None:
        super().__init__()
        c = 16
        self.stem = conv_bn(in_channels, c, 3, stride=2)
        if tf_same_padding:
            self.stem[0].padding = (0, 0)
            self.stem = nn.Sequential(TfSamePad(), *self.stem)
        blocks: list[nn.Module] = []
        for t, cout, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(c, cout, s if i == 0 else 1, t, tf_same_padding))
                c = cout
        self.features = nn.Sequential(*blocks)
        self.head = conv_bn(c, last, 1)
        # a dense 3x3 conv: XNNPACK's CHW layout has only 1x1, depthwise and the stem conv
        self.unsupported = conv_bn(c, c, 3) if with_unsupported_op else None
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))
        if self.unsupported is not None:
            x = self.unsupported(x)
        x = self.head(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class NoPointwise(nn.Module):
    """A conv net without a single 1x1 conv or linear layer: nothing for `sparsify` to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 8, 3, groups=8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


def mobilenet_v2ish(seed: int = 0, **kw) -> MobileNetV2ish:
    """Seeded model with non-trivial BatchNorm statistics, so folding BN matters."""
    torch.manual_seed(seed)
    model = MobileNetV2ish(**kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def pruned_spec():
    """A ModelSpec of the zoo model already pruned to 90 % (as after the user's gradual pruning):
    `edgeconv export -t tflite-sparse --model zoo_sparse:pruned_spec` then changes no weight, so
    parity against the model itself is meaningful."""
    from edgeconv.models import ModelSpec
    from edgeconv.passes.sparsify import GradualPruner, PolynomialSchedule

    model = mobilenet_v2ish()
    GradualPruner(model, PolynomialSchedule(final=0.9, end_step=1, frequency=1)).step(1)
    return ModelSpec(module=model, example_inputs=(torch.zeros(INPUT_SHAPE),), name="mnv2ish-pruned90")


# --- shared, cached builders: every sparse test file reuses one conversion per model variant ---

_CACHE: dict = {}


def pruned_graph(sparsity: float = 0.9, **kw):
    """The zoo model captured, BN folded and pruned in 4x1 blocks: what tflite-sparse lowers."""
    key = ("graph", sparsity, tuple(sorted(kw.items())))
    if key not in _CACHE:
        from edgeconv.graph import capture
        from edgeconv.passes.fold_bn import fold_conv_bn
        from edgeconv.passes.sparsify import SparseOptions, prune

        torch.manual_seed(0)
        graph = capture(mobilenet_v2ish(**kw), (torch.randn(INPUT_SHAPE),))
        graph = fold_conv_bn(graph, None).graph
        _CACHE[key] = prune(graph, SparseOptions(sparsity)).graph
    return _CACHE[key]


def dense_tflite(sparsity: float = 0.9, **kw) -> bytes:
    """The litert-torch conversion of `pruned_graph` before any sparse rewrite."""
    key = ("dense", sparsity, tuple(sorted(kw.items())))
    if key not in _CACHE:
        from edgeconv.exporters.tflite.sparse import convert_dense

        g = pruned_graph(sparsity, **kw)
        _CACHE[key] = convert_dense(g.module(), g.example_inputs)
    return _CACHE[key]
