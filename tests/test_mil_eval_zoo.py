"""A zoo of small torch nets, converted by coremltools from torch.export and evaluated by the numpy MIL
evaluator: fp32 output within 1e-4 (relative to the output range) of torch, op families listed per
net so the zoo provably covers conv, linear, activations, elementwise, pooling, reductions,
reshape/transpose/concat, normalisation and cast."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")

from edgeconv.exporters.coreml import export as coreml_export  # noqa: E402

from edgeconv.exporters.coreml.mil import kernels as mil_kernels  # noqa: E402

from edgeconv.exporters.coreml.mil import program as mil_program  # noqa: E402
from edgeconv.graph import capture  # noqa: E402


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 12, 1)
        self.c1d = nn.Conv1d(12, 4, 5, stride=2, padding=2)
        self.fc = nn.Linear(4 * 2, 6)

    def forward(self, x):
        y = self.pw(self.dw(self.stem(x)))
        y = self.c1d(y.mean(3))                       # (1, 4, 2)
        return self.fc(torch.flatten(y, 1))


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.prelu = nn.PReLU(3)

    def forward(self, x):
        parts = [F.relu(x), F.relu6(x * 4), F.hardswish(x * 3), F.hardsigmoid(x * 3), torch.sigmoid(x),
                 torch.tanh(x), F.silu(x), F.gelu(x), F.leaky_relu(x, 0.2), self.prelu(x), F.elu(x),
                 F.softmax(x, dim=1), x.clamp(-0.3, 0.4)]
        return torch.cat(parts, 1)


class Elementwise(nn.Module):
    def forward(self, x):
        a, b = x[:, :2], x[:, 1:]
        y = (a + b) * (a - b) / (b.abs() + 1.0)
        y = torch.maximum(y, a) + torch.minimum(y, b) + torch.sqrt(x[:, :2].abs() + 0.1) + torch.exp(-a.abs())
        return y + torch.rsqrt(b * b + 1.0) + torch.log(a.abs() + 1.0) + y.pow(2)


class Pools(nn.Module):
    def forward(self, x):
        m = F.max_pool2d(x, 3, 2, 1)
        mc = F.max_pool2d(x, 2, 2, ceil_mode=True)
        av = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        ad = F.adaptive_avg_pool2d(x, 1)
        return torch.cat([m.flatten(1), mc.flatten(1), av.flatten(1), ad.flatten(1)], 1)


class Reductions(nn.Module):
    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.sum(2).flatten(1), x.amax((2, 3)), x.amin(3).flatten(1),
                          x.norm(dim=1).flatten(1)], 1)


class Layout(nn.Module):
    def forward(self, x):
        y = x.permute(0, 2, 3, 1).reshape(1, -1, 3)        # transpose + reshape
        y = torch.cat([y, y[:, :, :1] * 2], 2)              # slice + concat
        y = y.unsqueeze(1).squeeze(1)
        a, b = torch.split(y, [2, 2], dim=2)
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        padded = F.pad(x, (1, 2, 0, 1))
        return torch.cat([(a * b).flatten(1), up.flatten(1)[:, :10], padded.flatten(1)[:, -10:]], 1)


class Norms(nn.Module):
    """torchcrepe's order: ReLU then BatchNorm (cannot be folded into the conv), plus LayerNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.ln = nn.LayerNorm(6)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        y = self.bn(F.relu(self.conv(x)))
        return self.ln(y.mean((2, 3)))


class Cast(nn.Module):
    def forward(self, x):
        return (x * 4).to(torch.int32).to(torch.float32) + x


ZOO = {
    "convs": (Convs, {"conv", "linear", "reduce_mean", "reshape"}),
    "activations": (Activations, {"relu", "clip", "sigmoid", "tanh", "silu", "gelu", "leaky_relu",
                                  "elu", "softmax", "concat", "sigmoid_hard", "mul"}),
    "elementwise": (Elementwise, {"add", "sub", "mul", "real_div", "maximum", "minimum", "sqrt", "exp",
                                  "rsqrt", "log", "abs"}),
    "pools": (Pools, {"max_pool", "avg_pool", "reduce_mean", "concat"}),
    "reductions": (Reductions, {"reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_l2_norm"}),
    "layout": (Layout, {"transpose", "reshape", "slice_by_index", "concat", "split",
                        "upsample_nearest_neighbor", "pad"}),
    "norms": (Norms, {"conv", "relu", "batch_norm", "layer_norm"}),
    "cast": (Cast, {"cast"}),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_fp32_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    cls, families = ZOO[name]
    model = cls().eval()
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / f"{name}.mlpackage"
    coreml_export.save(coreml_export.convert(coreml_export.coreml_program(capture(model, (x,)))), path)
    prog = mil_program.load_program(path)
    missing = families - prog.op_types
    assert not missing, f"{name}: expected MIL ops {sorted(missing)} not in {sorted(prog.op_types)}"
    for seed in range(3):
        xi = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        want = model(xi).detach().double().numpy()
        got = mil_kernels.run(prog, {prog.inputs[0]: xi.numpy()})[prog.outputs[0]]
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-4, f"{name}: relative error {rel:.3g}"


def test_zoo_fp16_within_fp16_rounding(tmp_path):
    torch.manual_seed(0)
    model, x = Convs().eval(), torch.randn(1, 3, 8, 8)
    path = tmp_path / "c16.mlpackage"
    coreml_export.save(coreml_export.convert(coreml_export.coreml_program(capture(model, (x,))), precision="fp16"), path)
    prog = mil_program.load_program(path)
    got = mil_kernels.run(prog, {prog.inputs[0]: x.numpy()})[prog.outputs[0]]
    want = model(x).detach().numpy()
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert 1e-6 < rel < 5e-3, rel  # fp16 storage between ops shows, and stays small
