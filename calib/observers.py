"""torchao PT2E observers for the calibration methods of `edgeconv.calib.methods`.

This module subclasses torch classes, so it imports torch at top level: import it only inside the
functions that quantize (`passes/quantize.py`, QAT), never on the CLI's start-up path.

Histogram observers keep one histogram per sign of x over [0, edge], with exact zeros counted apart.
When a batch exceeds the edge, the edge doubles and adjacent bins merge pairwise, so the histogram
stays exact (no re-binning guesswork) whatever order the batches come in.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchao.quantization.pt2e.observer import (
    MinMaxObserver as _MinMax,
    MovingAverageMinMaxObserver as _MovingAverage,
    UniformQuantizationObserverBase,
)

from edgeconv.calib import methods
from edgeconv.config import CalibMethod

if TYPE_CHECKING:
    from litert_torch.quantize.pt2e_quantizer_utils import QuantizationConfig


class _FiniteOnly:
    """Observes only the finite values. An infinity is a sentinel, not data: timm's same-padded max pool
    (`MaxPool2dSame`: F.pad(x, value=-inf) → max_pool2d) pads with -inf, the pad shares its input's
    observer, and a min of -inf made the scale infinite — the int8 program computed NaN from there on
    (timm ViT-hybrid: simulation rel-L2 1.41 vs fp32; litert-torch refused the file). In int8 the
    pad's -inf rounds to the lowest level, the range's minimum: a max pool's answer is the same."""

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(x_orig)
        if bool(finite.all()):
            return super().forward(x_orig)
        if bool(finite.any()):
            super().forward(x_orig.detach()[finite])
        return x_orig


class MinMaxObserver(_FiniteOnly, _MinMax):
    """torchao's running min/max (of finite values), with `clip_range` like the other observers."""

    def clip_range(self) -> tuple[float, float]:
        return float(self.min_val), float(self.max_val)


class MovingAverageObserver(_FiniteOnly, _MovingAverage):
    """torchao's exponential moving average of per-batch min/max (of finite values)."""

    def clip_range(self) -> tuple[float, float]:
        return float(self.min_val), float(self.max_val)


class HistogramRangeObserver(UniformQuantizationObserverBase):
    """Collects the signed histogram; subclasses say which range to take from it (`method`)."""

    method: CalibMethod = CalibMethod.MINMAX

    def __init__(self, bins: int = methods.HIST_BINS, dtype=torch.int8, qscheme=torch.per_tensor_affine,
                 quant_min: int = methods.QMIN, quant_max: int = methods.QMAX, eps: float = methods.EPS,
                 **kwargs) -> None:
        if qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise NotImplementedError(f"{type(self).__name__} is per-tensor only, got {qscheme}")
        super().__init__(dtype=dtype, qscheme=qscheme, quant_min=quant_min, quant_max=quant_max,
                         eps=eps, **kwargs)
        if bins % 2:
            raise ValueError("bins must be even: growing the range merges bins pairwise")
        self.bins = bins
        self.register_buffer("histogram", torch.zeros(2, bins, dtype=torch.float64))  # rows: x<0, x>0
        self.register_buffer("zeros", torch.zeros((), dtype=torch.float64))
        self.register_buffer("edge", torch.zeros((), dtype=torch.float64))
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.hi_cap = float("inf")  # the most the int8 program can compute here (`cap_range`)

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        x = x_orig.detach().float().flatten()
        x = x[torch.isfinite(x)]  # an inf would make the range infinite; the model clamps it anyway
        if x.numel() == 0:
            return x_orig
        lo, hi = torch.aminmax(x)
        self.min_val.copy_(torch.minimum(self.min_val, lo))
        self.max_val.copy_(torch.maximum(self.max_val, hi))
        self._grow(float(torch.maximum(-lo, hi)))
        edge = float(self.edge)
        neg, pos = -x[x < 0], x[x > 0]
        self.zeros += float((x == 0).sum())
        if edge > 0:
            if neg.numel():
                self.histogram[0] += torch.histc(neg, self.bins, 0.0, edge).double()
            if pos.numel():
                self.histogram[1] += torch.histc(pos, self.bins, 0.0, edge).double()
        return x_orig

    def _grow(self, amax: float) -> None:
        edge = float(self.edge)
        if amax <= edge:
            return
        if edge == 0.0:
            self.edge.fill_(amax)  # only zeros so far, and they are counted apart
            return
        while edge < amax:
            merged = self.histogram.view(2, self.bins // 2, 2).sum(-1)
            self.histogram.zero_()
            self.histogram[:, : self.bins // 2] = merged
            edge *= 2.0
        self.edge.fill_(edge)

    def hist(self) -> methods.Hist:
        h = self.histogram.cpu().numpy()
        return methods.Hist(np.array(h[0]), np.array(h[1]), float(self.zeros), float(self.edge),
                            float(self.min_val), float(self.max_val))

    def clip_range(self) -> tuple[float, float]:
        if float(self.min_val) > float(self.max_val):
            return float("inf"), float("-inf")  # nothing observed yet
        lo, hi = methods.choose_range(self.method, self.hist(), **self._method_args())
        return lo, min(hi, self.hi_cap)

    def _method_args(self) -> dict[str, float]:
        return {}

    @torch.jit.export
    def calculate_qparams(self):
        lo, hi = self.clip_range()
        return self._calculate_qparams(torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32))

    def extra_repr(self) -> str:
        return f"method={self.method.value}, min_val={float(self.min_val)}, max_val={float(self.max_val)}"


class PercentileObserver(HistogramRangeObserver):
    method = CalibMethod.PERCENTILE

    def __init__(self, percentile: float = 99.99, **kwargs) -> None:
        super().__init__(**kwargs)
        self.percentile = percentile

    def _method_args(self) -> dict[str, float]:
        return {"percentile": self.percentile}

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, " + super().extra_repr()


class EntropyObserver(HistogramRangeObserver):
    method = CalibMethod.ENTROPY


class MSEObserver(HistogramRangeObserver):
    method = CalibMethod.MSE


# --- the PT2E quantizer with these observers -----------------------------------------------------

def observer_ctr(method: CalibMethod | str, *, percentile: float = 99.99) -> Any:
    """The torchao observer constructor for per-tensor asymmetric int8 activations with `method`."""
    method = CalibMethod(method)
    if not 50.0 < percentile <= 100.0:
        from edgeconv.errors import UserError

        raise UserError(f"--percentile {percentile} must be above 50 and at most 100, e.g. 99.99")
    common: dict[str, Any] = dict(dtype=torch.int8, quant_min=methods.QMIN, quant_max=methods.QMAX,
                                  qscheme=torch.per_tensor_affine, eps=methods.EPS)
    if method is CalibMethod.MINMAX:
        return MinMaxObserver.with_args(**common)
    if method is CalibMethod.MOVING_AVERAGE:
        return MovingAverageObserver.with_args(averaging_constant=methods.MOVING_AVERAGE_CONSTANT, **common)
    if method is CalibMethod.PERCENTILE:
        return PercentileObserver.with_args(percentile=percentile, **common)
    if method is CalibMethod.ENTROPY:
        return EntropyObserver.with_args(**common)
    return MSEObserver.with_args(**common)


def quantization_config(per_channel: bool = True, method: CalibMethod | str = CalibMethod.MINMAX,
                        percentile: float = 99.99) -> "QuantizationConfig":
    """litert-torch's TFLite PT2E config (int8 symmetric weights, per-channel unless `per_channel` is
    False; fixed-qparams outputs for logistic/softmax) with `method` calibrating the activations."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    base = get_symmetric_quantization_config(is_per_channel=per_channel)
    act = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=observer_ctr(
        method, percentile=percentile))
    return dataclasses.replace(base, input_activation=act, output_activation=act)


def norm_spec(act_spec: Any) -> Any:
    """The spec of a normalization's internal tensors (centred input, its square, variance, rsqrt,
    normalised output): by `methods.NORM_METHOD` where the activations calibrate by min-max (the
    default), else the activations' own (a user's --calib-method, QAT's fake-quantizers)."""
    ctor = act_spec.observer_or_fake_quant_ctr
    if getattr(getattr(ctor, "p", None), "func", None) is not MinMaxObserver:
        return act_spec
    return dataclasses.replace(act_spec, observer_or_fake_quant_ctr=observer_ctr(methods.NORM_METHOD))


@functools.lru_cache(maxsize=None)
def quantizer_class() -> type:
    """A subclass of litert-torch's PT2EQuantizer (litert-torch checks the type it is handed to
    select static Q/DQ lowering) whose annotation is edgeconv's (`calib.annotate`)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    from edgeconv.calib.annotate import annotate_graph

    class EdgeconvQuantizer(PT2EQuantizer):
        def transform_for_annotation(self, model: Any) -> Any:
            from edgeconv.calib.rewrites import transform

            return transform(model)

        def annotate(self, model: Any) -> Any:
            config = self.global_config
            return annotate_graph(model, config, norm_spec=norm_spec(config.input_activation))

    return EdgeconvQuantizer


def quantizer(per_channel: bool = True, method: CalibMethod | str = CalibMethod.MINMAX,
              percentile: float = 99.99) -> Any:
    """edgeconv's PT2E quantizer (`edgeconv.calib.annotate`: every activation edge int8, shared
    scales where the integer kernels need them) with `quantization_config(...)` set globally. It
    is a litert-torch PT2EQuantizer subclass, so litert-torch accepts it for static lowering."""
    return quantizer_class()().set_global(quantization_config(per_channel, method, percentile))


def activation_ranges(prepared: Any) -> dict[str, tuple[float, float]]:
    """{observed node name: chosen range} for every per-tensor affine (activation) observer of a
    `prepare_pt2e` module after calibration. The names are those the converted graph's
    quantize_per_tensor nodes take as input, so they key the scales in reports."""
    out = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.target.startswith("activation_post_process"):
            obs = getattr(prepared, node.target)
            if getattr(obs, "qscheme", None) == torch.per_tensor_affine:
                out[node.args[0].name] = clip_range(obs)
    return out


def clip_range(observer: Any) -> tuple[float, float]:
    """The activation range an observer chose (for reports); (inf, -inf) before any data."""
    if hasattr(observer, "clip_range"):
        return observer.clip_range()
    return float(observer.min_val), float(observer.max_val)


def cap_range(observer: Any, hi: float) -> bool:
    """Lower the top of `observer`'s range to `hi` where it chose more; True if it did."""
    if isinstance(observer, HistogramRangeObserver):
        if observer.clip_range()[1] <= hi:
            return False
        observer.hi_cap = hi
        return True
    max_val = getattr(observer, "max_val", None)
    if not isinstance(max_val, torch.Tensor) or max_val.dim() != 0 or float(max_val) <= hi:
        return False
    max_val.fill_(hi)
    return True


def cap_rsqrt_ranges(prepared: Any) -> list[str]:
    """The output range of each int8 rsqrt, capped at rsqrt(s) for its input's step s: the largest
    value it computes from a nonzero int8 input. Calibration runs the float program, which below one
    step computes rsqrt(eps) (LayerNorm of a constant token: 1e3), rsqrt(eps²) (F.normalize of an
    all-zero token: 1e12) or rsqrt(SUM_FLOOR) (GRN's dead channel); a min-max output range set by
    that left every other value at level 0 and TFLite's MUL after it a rescale multiplier out of its
    range (212-255 steps off the simulation in isolation). Capped, the int8 input's level 0 (exactly
    0.0: an activation range includes 0) saturates to the top level in every format, as different
    as their rsqrt(0) is — torch and onnxruntime ∞, TFLite's int8 kernel its top level, Core ML
    1/√(0 + 1e-12) = 1e6 (coremltools' epsilon), all ≥ rsqrt(s) — where an output range wider than
    1e6 gave Core ML a level of its own (CSATv2's GRN: 191 steps). A range already below the cap
    is unchanged. (A clamp of the input at one step, tried too, adds an op per norm and gave the
    same results on the toy and CSATv2.)

        before: r = rsqrt(x) observed on [0, 1e12]          x observed on [0, 255·s]
        after:  r observed on [0, min(1e12, rsqrt(s))]"""
    out = []
    for n in prepared.graph.nodes:
        if n.op != "call_function" or n.target != torch.ops.aten.rsqrt.default:
            continue
        src = n.args[0]
        obs_out = [u for u in n.users if u.op == "call_module" and u.target.startswith("activation_post_process")]
        if getattr(src, "op", None) != "call_module" or not str(src.target).startswith("activation_post_process") \
                or len(obs_out) != 1:
            continue
        obs_in = prepared.get_submodule(src.target)
        if getattr(obs_in, "qscheme", None) != torch.per_tensor_affine:
            continue
        scale = obs_in.calculate_qparams()[0].reshape(())
        if cap_range(prepared.get_submodule(obs_out[0].target), float(torch.rsqrt(scale.float()))):
            out.append(n.name)
    return out
