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

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from edgeconv.results import Record

if TYPE_CHECKING:
    import torch

    from edgeconv.graph import Graph

COMPUTE = ("conv1d", "conv2d", "conv3d", "convolution", "linear", "addmm", "matmul", "mm")
MULTI_INPUT = ("add", "mul", "cat", "sub", "div", "stack")


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


# --- the quantized program as a switchable simulation -----------------------------------------------

def _is(node: Any, *names: str) -> bool:
    return getattr(node, "op", None) == "call_function" and any(n in str(node.target) for n in names)


def _compute_name(node: Any) -> str | None:
    if getattr(node, "op", None) != "call_function":
        return None
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return name if name in COMPUTE else None


def _is_q(node: Any) -> bool:
    return _is(node, "quantized_decomposed.quantize_per")


def _is_dq(node: Any) -> bool:
    return _is(node, "quantized_decomposed.dequantize_per")


def _through_qdq(node: Any) -> Any:
    """The float tensor behind dq(q(x)) (x itself if not quantized)."""
    while _is_dq(node) and _is_q(node.args[0]):
        node = node.args[0].args[0]
    return node


def module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self___", "")


@dataclasses.dataclass
class Layer:
    node: str
    op: str
    module: str
    dq_nodes: set[str]  # dequantize nodes that make up this layer's quantization
    weight: np.ndarray | None
    act: tuple[float, float, float] | None  # (min, max, scale) of its output activation


def _owner(node: Any) -> Any:
    """The conv/linear whose output this tensor is (through single-input ops), or None."""
    seen = 0
    while node is not None and seen < 10_000:
        seen += 1
        node = _through_qdq(node)
        if _compute_name(node):
            return node
        if getattr(node, "op", None) != "call_function" or any(m in str(node.target) for m in MULTI_INPUT):
            return None
        tensors = [a for a in node.args if hasattr(a, "op")]
        if len(tensors) != 1:
            return None
        node = tensors[0]
    return None


def find_layers(gm: "torch.fx.GraphModule") -> list[Layer]:
    """Every conv/linear of a converted program with the dequantize nodes that belong to it."""
    import torch

    layers: dict[str, Layer] = {}
    for n in gm.graph.nodes:
        name = _compute_name(n)
        if name:
            layers[n.name] = Layer(n.name, name, module_path(n), set(), None, None)
    for n in gm.graph.nodes:
        if not _is_dq(n) or not _is_q(n.args[0]):
            continue
        src = n.args[0].args[0]
        if getattr(src, "op", None) == "get_attr":  # a weight: belongs to the layer that uses it
            for user in n.users:
                if user.name in layers:
                    layers[user.name].dq_nodes.add(n.name)
                    layers[user.name].weight = _get_attr(gm, src.target).detach().float().numpy()
            continue
        owner = _owner(src)
        if owner is not None and owner.name in layers:
            lay = layers[owner.name]
            lay.dq_nodes.add(n.name)
            scale, zp, qmin, qmax = (float(n.args[1]), int(n.args[2]), int(n.args[3]), int(n.args[4])) \
                if not isinstance(n.args[1], torch.fx.Node) else (float("nan"), 0, 0, 0)
            if _compute_name(_through_qdq(src)) or lay.act is None:
                lay.act = ((qmin - zp) * scale, (qmax - zp) * scale, scale)
    for lay in layers.values():
        if lay.weight is None:  # weight-less or not quantized: read the float weight if constant
            node = next(n for n in gm.graph.nodes if n.name == lay.node)
            w = node.args[1] if len(node.args) > 1 else None
            if getattr(w, "op", None) == "get_attr":
                lay.weight = _get_attr(gm, w.target).detach().float().numpy()
    return list(layers.values())


def _get_attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def simulate(gm: "torch.fx.GraphModule", bypass: Iterable[str]) -> "torch.fx.GraphModule":
    """A copy of the converted program with the named dequantize nodes replaced by their float input.

    Before: x -> quantize -> dequantize(d) -> conv.   After (d bypassed): x -> conv.
    """
    bypass = set(bypass)
    gm = copy.deepcopy(gm)
    for n in list(gm.graph.nodes):
        if n.name in bypass and _is_dq(n) and _is_q(n.args[0]):
            n.replace_all_uses_with(n.args[0].args[0])
    _drop_batch_guard(gm)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _drop_batch_guard(gm: Any) -> None:
    """torch.export's unlifted module asserts the example's batch size; the analysis runs batches."""
    for n in list(gm.graph.nodes):
        if n.op == "call_module" and n.target == "_guards_fn" and not n.users:
            gm.graph.erase_node(n)


def all_dq(gm: Any) -> set[str]:
    return {n.name for n in gm.graph.nodes if _is_dq(n) and _is_q(n.args[0])}


def forward(module: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Outputs of a (simulated) program on float NCHW samples; falls back to one at a time when the
    program's shapes are tied to its batch-1 example."""
    import torch

    outs = []
    with torch.no_grad():
        try:
            for i in range(0, len(x), batch):
                y = module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])))
                outs.append(_first(y).detach().float().numpy())
                if outs[-1].shape[0] != min(batch, len(x) - i):
                    raise RuntimeError("batch dimension not preserved")
        except Exception:
            outs = [_first(module(torch.from_numpy(x[i:i + 1]))).detach().float().numpy() for i in range(len(x))]
    return np.concatenate(outs)


def _first(y: Any) -> Any:
    return y[0] if isinstance(y, (tuple, list)) else y


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
    fallback: Any = None  # edgeconv.fallback.FallbackResult when --max-drop was given
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"sensitivity": self.sensitivity.to_dict(),
                "fallback": self.fallback.to_dict() if self.fallback is not None else None,
                "calibration": dict(self.calibration)}
