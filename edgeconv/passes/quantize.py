"""quantize: PT2E post-training int8, calibrated once, in torch.

Per-channel symmetric int8 weights and per-tensor asymmetric int8 activations by default
(`--per-layer` makes weights per-tensor). The result stays a torch program (Q/DQ around float
ops, `convert_pt2e(fold_quantize=False)`): it *is* the quantized simulation parity compares to,
and every exporter lowers it, so all int8 artifacts carry the same scales.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.passes import PassResult
from edgeconv.registry import PASSES
from edgeconv.results import QuantParams

if TYPE_CHECKING:
    from edgeconv.config import QuantOptions
    from edgeconv.context import Context
    from edgeconv.graph import Graph

OUTPUT_KEY = "__output__"


def make_quantizer(opts: "QuantOptions") -> Any:
    """litert-torch's PT2E quantizer: it both annotates the graph and, handed back to
    litert-torch at conversion, selects static Q/DQ lowering (it is not re-run there)."""
    from edgeconv.calib.observers import quantizer
    from edgeconv.config import Granularity

    return quantizer(per_channel=opts.weights is Granularity.PER_CHANNEL, method=opts.method,
                     percentile=opts.percentile)


def calibrate(prepared: Any, ctx: "Context") -> int:
    import torch

    data = ctx.calib
    if data is None or len(data) == 0:
        raise UserError("quantization needs calibration data; pass --calib (a folder, .npy/.npz, demo or random)")
    n = min(len(data), ctx.options.quant.samples)
    with torch.no_grad(), ctx.progress.task(f"calibrating on {n} samples", total=n) as task:
        for i in range(n):
            # The captured program has a static batch of 1.
            prepared(torch.from_numpy(data.x[i:i + 1]))
            task.advance()
    return n


def read_qparams(gm: Any) -> dict[str, QuantParams]:
    """Scales and zero points of every dequantize node, keyed by the FX name of the float
    tensor that was quantized (for weights, the get_attr name)."""
    import torch

    qd = torch.ops.quantized_decomposed
    out: dict[str, QuantParams] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target == qd.dequantize_per_tensor.default:
            key = _source(node)
            out[key] = QuantParams(_dtype(node.args[-1]), (float(node.args[1]),), (int(node.args[2]),))
        elif node.target == qd.dequantize_per_channel.default:
            from edgeconv.passes.fx import attr

            scale = attr(gm, node.args[1].target).flatten().tolist()
            zp = attr(gm, node.args[2].target).flatten().tolist()
            out[_source(node)] = QuantParams(_dtype(node.args[-1]), tuple(float(s) for s in scale),
                                             tuple(int(z) for z in zp), int(node.args[3]))
    result = _output_node(gm)
    if result is not None and result.target == qd.dequantize_per_tensor.default:
        out[OUTPUT_KEY] = _output_step(result, out[_source(result)])
    return out


# Largest slope of an output activation with fixed output qparams: one step of rounding in its
# input moves its output by up to slope × input step, which can be several output steps
# (torchcrepe: fc at scale 0.099 into a sigmoid at 1/256 → 6.4 output steps per input step).
_SLOPE = {"sigmoid": 0.25, "softmax": 0.5, "tanh": 1.0}


def _output_step(dq: Any, q: QuantParams) -> QuantParams:
    """The step parity measures output error in: the output scale, widened through a final
    sigmoid/softmax/tanh to what one step of rounding before it can cause."""
    import torch

    src = dq.args[0].args[0] if getattr(dq.args[0], "op", None) == "call_function" else None
    name = str(getattr(getattr(src, "target", None), "__name__", ""))
    slope = next((v for k, v in _SLOPE.items() if k in name), None)
    pre = src.args[0] if slope is not None else None
    if pre is None or getattr(pre, "target", None) != torch.ops.quantized_decomposed.dequantize_per_tensor.default:
        return q
    step = max(q.scale[0], slope * float(pre.args[1]))
    return dataclasses.replace(q, scale=(step,))


def _source(dq: Any) -> str:
    q = dq.args[0]
    src = q.args[0] if getattr(q, "op", None) == "call_function" else q
    return str(getattr(src, "target", None) if getattr(src, "op", None) == "get_attr" else src.name)


def _output_node(gm: Any) -> Any:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    first = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
    return first if getattr(first, "op", None) == "call_function" else None


def _dtype(d: Any) -> str:
    return str(d).replace("torch.", "")


@PASSES.register("quantize")
def quantize(graph: "Graph", ctx: "Context") -> PassResult:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if graph.quantized:
        return PassResult(graph, False, ("already quantized",))
    if ctx.options.qat.epochs:
        if ctx.options.max_drop is not None:
            raise UserError("--max-drop chooses float layers for post-training calibration; it cannot be "
                            "combined with --qat-epochs (QAT learns the scales instead) — drop one of them")
        return _qat(graph, ctx)
    from edgeconv.fallback import keep_float

    opts = ctx.options.quant
    graph, fallback_notes = _choose_float_layers(graph, ctx)
    quantizer = keep_float(make_quantizer(opts), graph.float_nodes)
    prepared = prepare_pt2e(graph.module(), quantizer)
    n = calibrate(prepared, ctx)
    converted = convert_pt2e(prepared, fold_quantize=False)
    qparams = read_qparams(converted)
    data = ctx.calib
    notes = (
        f"weights int8 {opts.weights.value} symmetric, activations int8 per-tensor asymmetric",
        f"calibration: {opts.method.value} on {n} samples from {data.source}"
        + ("" if data.real else " — NOT a real calibration (random inputs)"),
        f"{sum(1 for q in qparams.values() if q.axis is not None)} per-channel and "
        f"{sum(1 for q in qparams.values() if q.axis is None)} per-tensor quantized tensors",
    ) + fallback_notes
    new = graph.with_module(converted, quantizer=quantizer, qparams=qparams)
    return PassResult(new, True, notes)


def _choose_float_layers(graph: "Graph", ctx: "Context") -> tuple["Graph", tuple[str, ...]]:
    """--max-drop: rank layers by int8 sensitivity and keep the fewest most sensitive in float.
    Chosen on the calibration samples, so the held-out parity stays an independent check."""
    if ctx.options.max_drop is None or graph.float_nodes:
        return graph, ()
    from edgeconv.fallback import apply_max_drop

    inner = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, max_drop=None))
    with ctx.progress.task("choosing layers to keep in float (--max-drop)"):
        graph, fb, _ = apply_max_drop(graph, inner, ctx.calib, ctx.options.max_drop, ctx.options.evaluator or None)
    kept = ", ".join(m or n for n, m in zip(fb.float_nodes, fb.float_modules)) or "none needed"
    return graph, (f"--max-drop {fb.max_drop:g} ({fb.metric}, on the calibration samples): float "
                   f"{fb.float_score:.4g}, all int8 {fb.int8_score:.4g}, final {fb.final_score:.4g}; kept in float: {kept}",)


def _qat(graph: "Graph", ctx: "Context") -> PassResult:
    """Quantization-aware training instead of calibration. QAT trains the eager model (BN in
    Tune-mode form under the fake-quant, which a captured, already-folded program cannot give),
    then captures and converts it; the result replaces the graph the earlier passes produced."""
    from edgeconv import qat
    from edgeconv.config import Granularity

    opts = ctx.options
    spec = ctx.model
    if opts.qat.train_data:
        data = qat.load_train_data(opts.qat.train_data, spec)
    elif spec.train_data is not None:
        data = spec.train_data()
    else:
        raise UserError(f"--qat-epochs needs training data: {spec.name} bundles none; pass --train-data "
                        "package.module:function returning a labelled DataSet or (x, y) arrays")
    per_channel = opts.quant.weights is Granularity.PER_CHANNEL
    with ctx.progress.task(f"QAT, {opts.qat.epochs} epoch(s) on {len(data)} samples"):
        trained = qat.train_qat(spec, data, opts.qat.epochs, per_channel=per_channel, seed=opts.seed)
    notes = (f"QAT instead of calibration: weights int8 {opts.quant.weights.value}, scales learned",) + tuple(
        n for s in trained.history for n in s.notes)
    return PassResult(dataclasses.replace(trained, history=graph.history), True, notes)
