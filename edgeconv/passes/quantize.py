"""quantize: PT2E post-training int8, calibrated once, in torch.

Per-channel symmetric int8 weights and per-tensor asymmetric int8 activations by default
(`--per-layer` makes weights per-tensor). The result stays a torch program (Q/DQ around float
ops, `convert_pt2e(fold_quantize=False)`): it *is* the quantized simulation parity compares to,
and every exporter lowers it, so all int8 artifacts carry the same scales.

Before:  y = relu(conv2d(x, W, b))
After:   xq = dq(q(x, s_x, z_x));  y = dq(q(relu(conv2d(xq, dq(W_int8, s_w[c]), b)), s_y, z_y))
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.passes import PassResult, reads
from edgeconv.registry import PASSES
from edgeconv.quant.qparams import read_qparams

if TYPE_CHECKING:
    from edgeconv.config import QuantOptions
    from edgeconv.context import Context
    from edgeconv.graph import Graph

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


@PASSES.register("quantize")
@reads("quant.weights", "quant.method", "quant.samples", "quant.percentile")
def quantize(graph: "Graph", ctx: "Context") -> PassResult:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if graph.quantized:
        return PassResult(graph, False, ("already quantized",))
    from edgeconv.quant.fallback import keep_float

    opts = ctx.options.quant
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
    )
    new = graph.with_module(converted, quantizer=quantizer, qparams=qparams)
    return PassResult(new, True, notes)
