"""The export's speed-ups change no number (issue 13). Correctness only, no timing:

- calibration bypasses the weight observers after the first sample (`calibrate`): the scales are
  identical to observing every sample, for min-max and for a histogram method;
- the parity simulation computes the weights' quantize → dequantize once (`simulation`): its outputs
  are bit-identical to the converted program's;
- the MIL evaluator's tap-by-tap conv equals torch's conv, and pixel_shuffle runs in it end to end.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeconv.calib.data import DataSet
from edgeconv.config import CalibMethod, ExportOptions, QuantOptions
from edgeconv.context import Context
from edgeconv.graph import capture
from edgeconv.models import ModelSpec


class Net(nn.Module):
    """conv-BN-ReLU6, a depthwise conv, a residual add, pooling and a linear: the ops whose
    batched and per-sample kernels differ (the linear) as well as those that do not."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y + self.pw(torch.relu(self.dw(y)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _setup(method: CalibMethod, n: int = 12):
    torch.manual_seed(0)
    model = Net().eval()
    example = (torch.zeros(1, 3, 16, 16),)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    opts = ExportOptions(quant=QuantOptions(method=method, samples=n))
    ctx = Context(options=opts, model=ModelSpec(module=model, example_inputs=example, name="net"),
                  calib=DataSet(x, None, "test"))
    return capture(model, example), ctx, x


def _scales(converted) -> dict:
    from edgeconv.quant.qparams import read_qparams

    return {k: (q.scale, q.zero_point) for k, q in read_qparams(converted).items()}


@pytest.mark.parametrize("method", [CalibMethod.MINMAX, CalibMethod.PERCENTILE, CalibMethod.MOVING_AVERAGE])
def test_calibrate_gives_the_scales_of_observing_every_sample(method):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeconv.passes.quantize import _constant_minmax_observers, calibrate, make_quantizer

    graph, ctx, x = _setup(method)
    fast = prepare_pt2e(graph.module(), make_quantizer(ctx.options.quant))
    bypassed = _constant_minmax_observers(fast)
    assert bypassed, "the weight observers should be bypassed after sample 1"
    assert calibrate(fast, ctx) == len(x)
    plain = prepare_pt2e(graph.module(), make_quantizer(ctx.options.quant))
    with torch.no_grad():
        for i in range(len(x)):
            plain(torch.from_numpy(x[i:i + 1]))
    want = _scales(convert_pt2e(plain, fold_quantize=False))
    got = _scales(convert_pt2e(fast, fold_quantize=False))
    assert got == want
    # the bypass is undone: the observers observe again
    assert all("forward" not in vars(m) for m in bypassed)


def test_histogram_observers_are_never_bypassed():
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgeconv.calib.observers import HistogramRangeObserver
    from edgeconv.passes.quantize import _constant_minmax_observers, make_quantizer

    graph, ctx, _ = _setup(CalibMethod.ENTROPY)
    prepared = prepare_pt2e(graph.module(), make_quantizer(ctx.options.quant))
    bypassed = _constant_minmax_observers(prepared)
    assert bypassed and not any(isinstance(o, HistogramRangeObserver) for o in bypassed)


def test_simulation_outputs_are_bit_identical_to_the_converted_program():
    from edgeconv.passes.manager import run_passes
    from edgeconv.quant.program import folded_simulation as simulation
    from edgeconv import registrations

    registrations.load()
    graph, ctx, x = _setup(CalibMethod.MINMAX)
    quantized = run_passes(graph, ctx, ("fold-conv-bn", "quantize", "cleanup"))
    sim, ref = simulation(quantized), quantized.module()
    names = {str(n.target) for n in sim.graph.nodes}
    assert not any("quantize_per_channel" in n for n in names), "weight q/dq should be folded"
    with torch.no_grad():
        for i in range(len(x)):
            xi = torch.from_numpy(x[i:i + 1])
            assert torch.equal(sim(xi), ref(xi))


pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")


@pytest.mark.parametrize("groups, stride, dilation", [(1, 1, 1), (8, 1, 1), (2, 2, 1), (1, 1, 2), (8, 2, 2)])
def test_mil_conv_matches_torch(groups, stride, dilation):
    from edgeconv.exporters.coreml.mil import kernels as mil_kernels
    from edgeconv.exporters.coreml.mil import program as mil_program

    rng = np.random.default_rng(groups + stride)
    x = rng.standard_normal((2, 8, 13, 11)).astype(np.float32)
    w = rng.standard_normal((16, 8 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    step = mil_program.Step("conv", "c", {}, ("y",), ("fp32",), (None,))
    got = mil_kernels.OPS["conv"]({"x": x, "weight": w, "bias": b, "strides": np.array([stride, stride]),
                                "dilations": np.array([dilation, dilation]), "groups": np.int32(groups),
                                "pad_type": "custom", "pad": np.array([1, 2, 0, 1])}, step)
    want = nn.functional.conv2d(nn.functional.pad(torch.from_numpy(x).double(), (0, 1, 1, 2)),
                                torch.from_numpy(w).double(), torch.from_numpy(b).double(),
                                stride=stride, dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


class Espcn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 9, 3, padding=1)
        self.shuffle = nn.PixelShuffle(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(torch.tanh(self.conv(x)))


def test_pixel_shuffle_net_runs_in_the_mil_evaluator():
    """An ESPCN-style head converted by coremltools reaches the evaluator as pixel_shuffle (it was
    'unverified: op pixel_shuffle') and matches torch."""
    from edgeconv.exporters.coreml.mil import kernels as mil_kernels
    from edgeconv.exporters.coreml.mil import program as mil_program
    from edgeconv.exporters.coreml.coremltools_import import import_coremltools

    ct = import_coremltools()
    torch.manual_seed(0)
    model = Espcn().eval()
    x = torch.randn(1, 1, 10, 12)
    mlmodel = ct.convert(torch.jit.trace(model, x), inputs=[ct.TensorType(name="x", shape=x.shape)],
                         convert_to="mlprogram", compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    prog = mil_program.from_pymil(mlmodel._mil_program.functions["main"])
    assert "pixel_shuffle" in prog.op_types and not mil_kernels.unknown_ops(prog)
    got = mil_kernels.run(prog, {prog.inputs[0]: x.numpy()})[prog.outputs[0]]
    want = model(x).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
