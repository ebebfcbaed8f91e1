"""Sensitivity analysis: which conv/linear layer breaks int8.

Works on the PT2E-converted program the quantize pass produced (`fold_quantize=False`: every
quantized tensor is an explicit quantize -> dequantize pair). Switching a tensor back to float is
bypassing its dequantize node: `dq(q(x))` is replaced by `x`. So one calibration gives every
variant exactly — no re-calibration per layer:

- the quantization *of a layer* is its weight and its output activation (up to the next conv/linear
  or multi-input op: conv -> relu -> pool share it), because a layer's output range, not its input,
  is what its own weights decide (a channel scaled x1000 ruins the activation after it);
- "only this layer quantized": every other dequantize bypassed;
- "only this layer float": this layer's dequantize nodes bypassed, the rest int8.

Errors are relative L2 output error against the float program, averaged over samples.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.quant.program import all_dq, find_layers, forward, simulate
from edgeconv.results import Record

if TYPE_CHECKING:
    from edgeconv.graph import Graph



@dataclasses.dataclass(frozen=True)
class LayerSensitivity(Record):
    node: str  # FX node name: what Graph.float_nodes lists
    module: str  # module path in the model, for people
    op: str
    err_only_quantized: float  # relative L2 output error with only this layer in int8
    err_only_float: float  # ... with everything int8 except this layer
    gain_if_float: float  # err_all_quantized - err_only_float
    weight_channels: int
    weight_range_spread: float  # max / median over output channels of max|w|
    weight_max_abs: float
    act_min: float  # the layer's output activation int8 range
    act_max: float
    act_scale: float


@dataclasses.dataclass(frozen=True)
class SensitivityReport(Record):
    model: str
    samples: int
    metric: str
    err_all_quantized: float
    top1_agreement_all: float | None
    layers: tuple[LayerSensitivity, ...]  # most sensitive first

    def table(self) -> str:
        head = (f"{'#':>2}  {'layer':<28} {'op':<7} {'only-int8':>10} {'only-float':>10} {'gain':>9} "
                f"{'w-spread':>9} {'act range':>21}")
        rows = [head]
        for i, r in enumerate(self.layers, 1):
            rows.append(f"{i:>2}  {(r.module or r.node)[:28]:<28} {r.op[:7]:<7} {r.err_only_quantized:>10.4g} "
                        f"{r.err_only_float:>10.4g} {r.gain_if_float:>9.3g} {r.weight_range_spread:>9.3g} "
                        f"[{r.act_min:>9.3g}, {r.act_max:>9.3g}]")
        rows.append(f"all int8: {self.metric} {self.err_all_quantized:.4g}"
                    + (f", top-1 agreement {self.top1_agreement_all:.3f}" if self.top1_agreement_all is not None else "")
                    + f" on {self.samples} samples")
        return "\n".join(rows)


def rel_error(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean over samples of ||out - ref|| / ||ref||."""
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    return float(np.mean(np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)))


def top1_agreement(out: np.ndarray, ref: np.ndarray) -> float | None:
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    return float((out.argmax(1) == ref.argmax(1)).mean())


def weight_spread(w: np.ndarray | None) -> tuple[int, float, float]:
    if w is None:
        return 0, float("nan"), float("nan")
    per = np.abs(w.reshape(w.shape[0], -1)).max(1)
    med = float(np.median(per))
    return int(w.shape[0]), float(per.max() / med) if med > 0 else float("inf"), float(per.max())


def analyze(quantized: "Graph", x: np.ndarray, model: str = "model") -> SensitivityReport:
    """Rank the conv/linear layers of a quantized Graph by how much their int8 form costs."""
    if not quantized.quantized:
        raise ValueError("analyze needs the Graph after the quantize pass")
    gm = quantized.module()
    layers = find_layers(gm)
    every = all_dq(gm)
    ref = forward(simulate(gm, every), x)  # all bypassed: the float program
    full = forward(simulate(gm, ()), x)
    err_all = rel_error(full, ref)
    rows = []
    for lay in layers:
        only_q = rel_error(forward(simulate(gm, every - lay.dq_nodes), x), ref)
        only_f = rel_error(forward(simulate(gm, lay.dq_nodes), x), ref)
        ch, spread, wmax = weight_spread(lay.weight)
        amin, amax, ascale = lay.act if lay.act else (float("nan"),) * 3
        rows.append(LayerSensitivity(lay.node, lay.module, lay.op, only_q, only_f, err_all - only_f,
                                     ch, spread, wmax, amin, amax, ascale))
    rows.sort(key=lambda r: (-r.err_only_quantized, -r.gain_if_float))
    return SensitivityReport(model=model, samples=len(x), metric="relative L2 output error",
                             err_all_quantized=err_all, top1_agreement_all=top1_agreement(full, ref),
                             layers=tuple(rows))


# --- the whole flow, for `edgeconv analyze` and `export --analyze` ---------------------------------

@dataclasses.dataclass(frozen=True)
class AnalysisResult(Record):
    sensitivity: SensitivityReport
    fallback: Any = None  # edgeconv.quant.fallback.FallbackResult when --max-drop was given
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"sensitivity": self.sensitivity.to_dict(),
                "fallback": self.fallback.to_dict() if self.fallback is not None else None,
                "calibration": dict(self.calibration)}
