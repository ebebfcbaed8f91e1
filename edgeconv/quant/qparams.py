"""Quantization parameters read off a PT2E-converted program: what the quantize pass records on the
graph, QAT's convert records too, and parity measures output error in (OUTPUT_KEY's step).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from edgeconv.results import QuantParams

OUTPUT_KEY = "__output__"
# Two scales this close are one int8 grid: converters recompute a tensor's scale from its range in
# their own precision (litert-torch: a LayerNorm MEAN of timm CaiT stored 2.8e-6 away from torch's),
# and at ±127 levels 1e-4 moves a value by 0.013 of a step; an edit that matters moves it by steps.
SCALE_RTOL = 1e-4


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
    for i, result in enumerate(_output_nodes(gm)):
        if result is not None and result.target == qd.dequantize_per_tensor.default:
            out[output_key(i)] = _output_step(result, out[_source(result)])
    return out


def output_key(i: int) -> str:
    """The qparams key of output i's step: OUTPUT_KEY for the first (what parity's verdict uses),
    OUTPUT_KEY + index for the others."""
    return OUTPUT_KEY if i == 0 else f"{OUTPUT_KEY}{i}"


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


def _output_nodes(gm: Any) -> list[Any]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    results = list(out.args[0]) if isinstance(out.args[0], (tuple, list)) else [out.args[0]]
    return [r if getattr(r, "op", None) == "call_function" else None for r in results]


def _dtype(d: Any) -> str:
    return str(d).replace("torch.", "")
