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
    """Run the calibration samples through the observed program, one at a time on one thread.

    One at a time: the captured program has a static batch of 1, a batch is no faster (the
    observers' min/max and the convs are memory-bound at 224x224) and, on two threads, mkldnn's
    batched convs round some activations differently, so batched min-max scales would not be
    identical. One thread: see `edgeconv.context.one_thread` (5-30x per sample on a busy host).
    Observers of constants (the weights) see the same tensor every sample; a min-max one has its
    answer after the first, so it is bypassed after it (same scales, a fifth less time)."""
    import torch

    data = ctx.calib
    if data is None or len(data) == 0:
        raise UserError("quantization needs calibration data; pass --calib (a folder, .npy/.npz, demo or random)")
    n = min(len(data), ctx.options.quant.samples)
    from edgeconv.context import one_thread
    from edgeconv.inputs import torch_rows

    constant = _constant_minmax_observers(prepared)
    try:
        with torch.no_grad(), one_thread(), ctx.progress.task(f"calibrating on {n} samples", total=n) as task:
            for i in range(n):
                prepared(*torch_rows(data.inputs, i, i + 1))  # every input: each has its own observer
                if i == 0:
                    for obs in constant:
                        obs.forward = _identity
                task.advance()
    finally:
        for obs in constant:
            obs.__dict__.pop("forward", None)
    return n


def _identity(x: Any) -> Any:
    return x


def _constant_minmax_observers(prepared: Any) -> list[Any]:
    """Observers called only on tensors that depend on no input (weights), whose state is a
    running min/max: seeing the same tensor again changes nothing. Histogram observers are never
    bypassed (their counts grow with every sample), nor an observer shared with an activation."""
    from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver

    from edgeconv.calib.observers import MinMaxObserver as EdgeconvMinMax

    constant: set[Any] = set()
    calls: dict[str, bool] = {}  # observer target -> every call on a constant
    for node in prepared.graph.nodes:
        is_const = node.op == "get_attr" or (node.op in ("call_function", "call_module") and bool(node.all_input_nodes)
                                             and all(a in constant for a in node.all_input_nodes))
        if is_const:
            constant.add(node)
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, True) and is_const
    idempotent = (MinMaxObserver, PerChannelMinMaxObserver, EdgeconvMinMax)
    return [obs for t, ok in calls.items() if ok and type(obs := prepared.get_submodule(t)) in idempotent]


@PASSES.register("quantize")
@reads("quant.weights", "quant.method", "quant.samples", "quant.percentile")
def quantize(graph: "Graph", ctx: "Context") -> PassResult:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if graph.quantized:
        return PassResult(graph, False, ("already quantized",))
    from edgeconv.calib.observers import cap_rsqrt_ranges
    from edgeconv.calib.rewrites import transform
    from edgeconv.quant.fallback import keep_float

    opts = ctx.options.quant
    quantizer = keep_float(make_quantizer(opts), graph.float_nodes, graph.float_op_types)
    # prepare_pt2e fuses every conv -> BN pair before it annotates, even where the conv's output has
    # other users (fold-conv-bn refused those: bn(z) + z would become bn(z) + bn(z)). Rewriting the
    # BNs fold-conv-bn left as depthwise 1x1 convs first leaves it nothing to fuse.
    prepared = prepare_pt2e(transform(graph.module(), frozen=True), quantizer)
    n = calibrate(prepared, ctx)
    capped = cap_rsqrt_ranges(prepared)  # every format then saturates an rsqrt of level 0 alike
    converted = convert_pt2e(prepared, fold_quantize=False)
    dropped = drop_zero_adds(converted)
    qparams = read_qparams(converted)
    data = ctx.calib
    notes = (
        f"weights int8 {opts.weights.value} symmetric, activations int8 per-tensor asymmetric",
        f"calibration: {opts.method.value} on {n} samples from {data.source}"
        + ("" if data.real else " — NOT a real calibration (random inputs)"),
        f"{sum(1 for q in qparams.values() if q.axis is not None)} per-channel and "
        f"{sum(1 for q in qparams.values() if q.axis is None)} per-tensor quantized tensors",
    ) + ((f"{len(dropped)} int8 ADD(s) of a constant that rounds to zero on the operand's own scale dropped "
          f"(an epsilon the int8 tensor cannot resolve): {', '.join(dropped[:4])}",) if dropped else ()) \
        + ((f"{len(capped)} int8 RSQRT output range(s) capped at rsqrt(one step of the input): calibration saw "
            f"rsqrt of values the int8 input cannot hold (an exact 0 of a dead channel or token)",) if capped else ())
    new = graph.with_module(converted, quantizer=quantizer, qparams=qparams)
    return PassResult(new, True, notes)


def drop_zero_adds(gm: Any) -> list[str]:
    """An int8 ADD whose constant operand quantizes to zero and whose output keeps its activation
    operand's scale and zero point is the identity (LayerNorm's v + eps on v's scale: eps is below
    half a step). Converters drop it (CoreML folds it into rsqrt's epsilon), leaving the program
    an int8 tensor the file does not have; so edgeconv drops it too, and program and file agree.

        before: y = q(dq(xq) + dq(q(eps)))      q(eps) == zero point, same (scale, zero point)
        after:  y = xq"""
    import torch

    from edgeconv.calib.rewrites import constant_of

    qd = torch.ops.quantized_decomposed
    quant, dequant = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in (torch.ops.aten.add.Tensor,) or len(n.users) != 1:
            continue
        (q_out,) = n.users
        dqs = [a for a in n.args[:2] if getattr(a, "target", None) == dequant]
        if q_out.target != quant or len(dqs) != 2:
            continue
        const = [d for d in dqs if getattr(d.args[0], "target", None) == quant and d.args[0].args[0].op == "get_attr"]
        acts = [d for d in dqs if d not in const]
        if len(const) != 1 or len(acts) != 1 or tuple(acts[0].args[1:3]) != tuple(q_out.args[1:3]):
            continue
        c_q = const[0].args[0]
        value = constant_of(gm, c_q.args[0])
        scale, zp = float(c_q.args[1]), int(c_q.args[2])
        if value is None or not bool((torch.round(value / scale) == 0).all()) or zp != int(q_out.args[2]):
            continue
        q_out.replace_all_uses_with(acts[0].args[0])  # the activation's own int8 tensor
        done.append(n.name)
    if done:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return done

