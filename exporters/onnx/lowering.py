"""Graph rewrites on the quantized program before torch.onnx writes it, so every int8 op of the
file is a DequantizeLinear → op → QuantizeLinear unit an execution provider can run in integer
(edgeconv counts any op whose float input is not a DequantizeLinear as a float op). Each keeps
the program's values."""
from __future__ import annotations

from typing import Any

from edgeconv.exporters.lowering import recompiled


def linear_on_rows(gm: Any) -> list[str]:
    """torch.onnx writes a linear on an N-D activation (tokens × channels, ConvNeXt's and every
    MetaFormer's MLP) as MatMul(x, Transpose(w)) + Add(b): the weight then reaches MatMul through a
    Transpose and the bias as a float Add, so no QDQ unit forms. On a 2-D input it writes one
    Gemm(x, w, b) fed by DequantizeLinear. The reshapes go on the int8 side of the Q/DQ pairs
    (Reshape of an int8 tensor is exact), so the Gemm's inputs stay DequantizeLinear outputs.

    Before: y = q(linear(dq(xq), W, b))                       xq: [..., C]
    After:  y = reshape(q(linear(dq(reshape(xq, [-1, C])), W, b)), [..., Cout])
    A ReLU the linear's quantization fused (linear → relu → q) moves with the linear.
    """
    import torch

    aten = torch.ops.aten
    qd = torch.ops.quantized_decomposed
    quant, dequant = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target != aten.linear.default:
            continue
        dq, val = n.args[0], n.meta.get("val")
        q_out = _quantized_output(n, quant, {aten.relu.default, aten.hardtanh.default, aten.relu6.default})
        if not (isinstance(val, torch.Tensor) and val.dim() > 2 and getattr(dq, "target", None) == dequant
                and q_out is not None):
            continue
        x_val = dq.args[0].meta.get("val", dq.meta.get("val"))  # a quantize PT2E added may carry none
        if not isinstance(x_val, torch.Tensor):
            continue
        lead, c_in = list(val.shape[:-1]), x_val.shape[-1]
        g = gm.graph
        with g.inserting_before(dq):
            rows_in = g.call_function(aten.reshape.default, (dq.args[0], [-1, c_in]))
        with g.inserting_before(n):
            dq_rows = g.call_function(dequant, (rows_in, *dq.args[1:]), dict(dq.kwargs))
        n.replace_input_with(dq, dq_rows)
        with g.inserting_after(q_out):
            back = g.call_function(aten.reshape.default, (q_out, lead + [val.shape[-1]]))
        q_out.replace_all_uses_with(back, delete_user_cb=lambda u, b=back: u is not b)
        done.append(n.name)
    return recompiled(gm, done)


def _quantized_output(n: Any, quant: Any, fused: set) -> Any:
    """The quantize node that takes `n`'s output, directly or after clamps fused into it; None
    where the output has other users."""
    while len(n.users) == 1:
        (n,) = n.users
        if n.target == quant:
            return n
        if n.target not in fused:
            return None
    return None


def rsqrt_as_pow(gm: Any) -> list[str]:
    """rsqrt(x) → pow(x, -0.5): ONNX has no Rsqrt, and torch.onnx writes Reciprocal(Sqrt(x)), two
    ops with a float tensor between them; Pow with a constant exponent is one QDQ unit."""
    import torch

    aten = torch.ops.aten
    done = []
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target == aten.rsqrt.default:
            n.target, n.args = aten.pow.Tensor_Scalar, (n.args[0], -0.5)
            done.append(n.name)
    if done:
        gm.recompile()
    return done



def global_pool_as_mean(gm: Any) -> list[str]:
    """adaptive_avg_pool2d(x, 1) → mean(x, [-1, -2], keepdim=True), the same value. On a channels-last
    map seen channels-first (a permute before the pool: timm NesT, SwinV2-CR heads) torch.onnx writes
    the pool as ReduceMean, then Reshape and Gather (an as_strided restriding the result): two float
    ops between the DequantizeLinear and the QuantizeLinear; a mean is one ReduceMean unit."""
    import torch

    aten = torch.ops.aten
    done = []
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target == aten.adaptive_avg_pool2d.default \
                and list(n.args[1]) in ([1, 1], [1]):
            n.target, n.args = aten.mean.dim, (n.args[0], [-1, -2], True)
            done.append(n.name)
    if done:
        gm.recompile()
    return done


def index_as_gather(gm: Any) -> list[str]:
    """x[..., idx, ...] with one 1-D index (timm CSATv2's zigzag order of DCT coefficients,
    `x[:, :, permutation]`) → index_select(x, d, idx), the same value. torch.onnx writes advanced
    indexing as Transpose, GatherND, Transpose: float ops between the DequantizeLinear and the
    QuantizeLinear; index_select is one Gather, a QDQ unit."""
    import torch

    aten = torch.ops.aten
    done = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target != aten.index.Tensor:
            continue
        given = [(d, i) for d, i in enumerate(n.args[1]) if i is not None]
        idx = given[0][1] if len(given) == 1 else None
        val = idx.meta.get("val") if isinstance(idx, torch.fx.Node) else None
        if isinstance(val, torch.Tensor) and val.dim() == 1 and not val.dtype.is_floating_point \
                and val.dtype != torch.bool:
            n.target, n.args = aten.index_select.default, (n.args[0], given[0][0], idx)
            done.append(n.name)
    if done:
        gm.recompile()
    return done

