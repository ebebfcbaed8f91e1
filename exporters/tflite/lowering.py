"""Graph rewrites litert-torch's lowering needs to write a program faithfully: `drop_expand`,
`expand_after_permute`, `nearest_as_gather`, `outer_products_as_mul`, `matmuls_transposed_between_reshapes`,
`int8_div_in_float`, `uniform_biases_unsplat`. Each keeps the program's values; each
says why the converter needs it."""
from __future__ import annotations

from typing import Any

from edgeconv.exporters.lowering import free_attr, qdq_targets, recompiled


def drop_expand(gm: Any) -> list[str]:
    """Remove an `expand`/`expand_as` whose only users are elementwise binary ops that broadcast
    anyway (ECA's `x * sigmoid(y).expand_as(x)`): litert-torch lowers it to a BROADCAST_TO that
    the fp32 converter refuses ("operands don't have broadcast-compatible shapes") and ai-edge-litert
    cannot prepare in int8. Same values: broadcasting is what the expand did.

    Before: m = mul(x, expand_as(s, x))        x: [1,C,H,W], s: [1,C,1,1]
    After:  m = mul(x, s)
    In a quantized program the expand sits between a dequantize and a quantize with the same
    parameters (it shares its input's scale); that pair is removed too, so the tensor keeps one scale.
    """
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    aten = torch.ops.aten
    expands = {aten.expand.default, aten.expand_as.default, aten.expand_copy.default}
    binary = {aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor, aten.div.Tensor, aten.maximum.default,
              aten.minimum.default}
    qd = torch.ops.quantized_decomposed
    quant, dequant = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in expands:
            continue
        src = n.args[0]
        users = _through_qdq(n, quant, dequant)
        if not users or any(u.op != "call_function" or u.target not in binary for u in users):
            continue
        out_shape = tuple(n.meta["val"].shape) if "val" in n.meta else None
        ok = out_shape is not None
        for u in users:
            other = [a for a in u.args[:2] if isinstance(a, torch.fx.Node) and not _reaches(a, n, quant, dequant)]
            if not other or "val" not in other[0].meta or tuple(torch.broadcast_shapes(
                    tuple(other[0].meta["val"].shape), tuple(src.meta["val"].shape))) != tuple(u.meta["val"].shape):
                ok = False
        if not ok:
            continue
        n.replace_all_uses_with(src)
        gm.graph.erase_node(n)
        done.append(n.name)
    # dequantize → quantize with identical parameters (left where an expand was): one tensor
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target == quant and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].target == dequant and tuple(n.args[0].args[1:]) == tuple(n.args[1:]):
            n.replace_all_uses_with(n.args[0].args[0])
            gm.graph.erase_node(n)
    return recompiled(gm, done)


def expand_after_permute(gm: Any) -> list[str]:
    """Permute a tensor before expanding it, not after (float programs): litert-torch lowers
    `permute(expand(x))` to BROADCAST_TO → TRANSPOSE, and the converter's passes fold that
    TRANSPOSE into the broadcast at the wrong shape, so an elementwise op on it fails verification
    ("'tfl.add' op operands don't have broadcast-compatible shapes"). timm's HaloAttn
    (`rel_logits_1d`: reshape → expand → permute, twice, then `h + w`) meets it. Same values: moving
    elements then repeating them is repeating them then moving them. An expand that now feeds only
    a broadcasting op is then dropped by `drop_expand`.

    Before: y = permute(expand(x, S), P)              x: [B, H, 1, W, k], S = [-1, -1, k, -1, -1]
    After:  y = expand(permute(x, P), [S'[p] for p in P])   S' = S with -1 read from the expanded shape
    Only an expand of the same rank whose one reader is the permute."""
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    aten = torch.ops.aten
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target != aten.permute.default or "val" not in n.meta:
            continue
        e = n.args[0]
        if getattr(e, "target", None) not in (aten.expand.default, aten.expand_copy.default) or len(e.users) != 1:
            continue
        src, perm = e.args[0], [int(p) for p in n.args[1]]
        if "val" not in getattr(src, "meta", {}) or src.meta["val"].dim() != e.meta["val"].dim():
            continue
        with gm.graph.inserting_before(n):
            moved = gm.graph.call_function(aten.permute.default, (src, perm))
            y = gm.graph.call_function(aten.expand.default, (moved, list(n.meta["val"].shape)))
        moved.meta["val"] = src.meta["val"].permute(perm)
        y.meta["val"] = n.meta["val"]
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        gm.graph.erase_node(e)
        done.append(n.name)
    return recompiled(gm, done)


def _through_qdq(n: Any, quant: Any, dequant: Any) -> list[Any]:
    """The consumers of `n`, looking through a quantize → dequantize pair."""
    out = []
    for u in n.users:
        if u.op == "call_function" and u.target == quant:
            for d in u.users:
                if d.op == "call_function" and d.target == dequant:
                    out.extend(d.users)
                else:
                    return []
        else:
            out.append(u)
    return out


def _reaches(a: Any, n: Any, quant: Any, dequant: Any) -> bool:
    """`a` is `n` itself or `n` seen through quantize/dequantize."""
    while a is not n and getattr(a, "op", None) == "call_function" and a.target in (quant, dequant):
        a = a.args[0]
    return a is n


def nearest_as_gather(gm: Any) -> list[str]:
    """Rewrite a nearest-neighbour resize (`F.interpolate(mode="nearest")`, aten.upsample_nearest2d)
    whose pixel mapping TFLite's RESIZE_NEAREST_NEIGHBOR would change into two gathers along H and W
    with the indices torch itself uses.

    PyTorch's "nearest" reads input pixel floor(d · in/out) for output pixel d (floor(d / scale)
    with `scale_factor`); litert-torch lowers the op to RESIZE_NEAREST_NEIGHBOR with
    half_pixel_centers=True, which reads floor((d + 0.5) · in/out) — PyTorch's "nearest-exact".
    They agree when out is an integer multiple of in (2× upsampling), not otherwise: GhostNetV2's
    DFC gate upsampled 3 → 7 at 224² reads shifted rows and columns. Same values: a gather copies
    the pixels the op would have copied.

    Before: y = upsample_nearest2d(x, [7, 7])                       x: [1,C,3,3]
    After:  y = index_select(index_select(x, 2, [0,0,0,1,1,2,2]), 3, [0,0,0,1,1,2,2])
    In a quantized program the resize sits between a dequantize and a quantize with the same
    parameters (it shares its input's scale); a quantize → dequantize pair with those parameters
    goes between the two gathers, so each stays int8 → int8 (litert-torch writes GATHER_ND).
    """
    import numpy as np
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    aten = torch.ops.aten
    nearest = {aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default}
    quant, dequant = qdq_targets()
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in nearest or "val" not in n.meta:
            continue
        src = n.args[0]
        shape_in, shape_out = tuple(src.meta["val"].shape), tuple(n.meta["val"].shape)
        if not all(isinstance(s, int) for s in shape_in[-2:] + shape_out[-2:]):
            continue  # dynamic spatial size: the indices are not constants
        (hi, wi), (ho, wo) = shape_in[-2:], shape_out[-2:]
        # torch's own indices: the op applied to a probe holding each pixel's row (column)
        rows = torch.arange(hi, dtype=torch.float32).view(1, 1, hi, 1).expand(1, 1, hi, wi).contiguous()
        cols = torch.arange(wi, dtype=torch.float32).view(1, 1, 1, wi).expand(1, 1, hi, wi).contiguous()
        idx_h = n.target(rows, *n.args[1:], **n.kwargs)[0, 0, :, 0].to(torch.int64)
        idx_w = n.target(cols, *n.args[1:], **n.kwargs)[0, 0, 0, :].to(torch.int64)

        def half_pixel(i: int, o: int) -> np.ndarray:  # what RESIZE_NEAREST_NEIGHBOR reads
            scale = np.float32(i) / np.float32(o)
            d = np.arange(o, dtype=np.float32)
            return np.minimum(np.floor((d + np.float32(0.5)) * scale).astype(np.int64), i - 1)

        if np.array_equal(idx_h.numpy(), half_pixel(hi, ho)) and np.array_equal(idx_w.numpy(), half_pixel(wi, wo)):
            continue  # TFLite reads the same pixels (e.g. 2× upsampling): keep the one op
        q = next((u for u in n.users if u.op == "call_function" and u.target == quant), None) \
            if getattr(src, "target", None) == dequant else None
        with gm.graph.inserting_before(n):
            y = src
            for dim, idx in ((2, idx_h), (3, idx_w)):
                if torch.equal(idx, torch.arange(shape_in[dim])):
                    continue  # this axis keeps its size and pixels
                name = free_attr(gm, f"{n.name}_idx_{'hw'[dim - 2]}")
                gm.register_buffer(name, idx)
                y = gm.graph.call_function(aten.index_select.default, (y, dim, gm.graph.get_attr(name)))
                if q is not None and dim == 2 and not torch.equal(idx_w, torch.arange(wi)):
                    # int8 between the gathers: the resize's own scale (its quantize's parameters)
                    y = gm.graph.call_function(quant, (y, *q.args[1:]), dict(q.kwargs))
                    y = gm.graph.call_function(dequant, (y, *q.args[1:]), dict(q.kwargs))
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        done.append(n.name)
    return recompiled(gm, done)


MATMULS = ("matmul", "bmm", "mm")
_RESHAPES = ("view", "reshape", "_unsafe_view", "clone", "contiguous", "alias", "flatten", "unsqueeze", "squeeze")


def _aten_name(n: Any) -> str:
    """aten.bmm.default → bmm (the op's own name: a substring match would take addmm for mm)."""
    parts = str(getattr(n, "target", "")).split(".")
    return parts[1] if getattr(n, "op", None) == "call_function" and parts[0] == "aten" and len(parts) > 2 else ""


def outer_products_as_mul(gm: Any) -> list[str]:
    """Rewrite a matmul whose contracting dim has one element (an outer product) as a broadcast MUL
    (float programs).

    litert-torch lowers `a @ b` to a stablehlo.dot_general; the converter's mhlo-optimize pass folds
    an operand's reshape into the dot_general and, when the contracting dim has size 1 and the
    reshape dropped a unit dim, maps the contracting dim to the wrong axis: the pass itself then
    fails ("contracting dimension sizes must match for lhs/rhs"). CSATv2's spatial attention has
    one-element q/k/v per token: `attn = softmax(q @ k.T)` is [B, 1] × [1, B] → [B, B] and
    `attn @ v` is [B, B] × [B, N], each a sum of one product at B = 1. Same values: a product of one
    term is the product itself.

    Before: y = matmul(a, b)             a: [..., M, 1], b: [..., 1, N]
    After:  y = mul(a, b)                broadcast to [..., M, N]
    """
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    done = []
    for n in list(gm.graph.nodes):
        if _aten_name(n) not in MATMULS or len(n.args) != 2 or "val" not in n.meta:
            continue
        a, b = n.args
        sa, sb = (tuple(getattr(x, "meta", {}).get("val", torch.empty(0)).shape) for x in (a, b))
        if len(sa) < 2 or len(sb) < 2 or sa[-1] != 1 or sb[-2] != 1 \
                or tuple(torch.broadcast_shapes(sa, sb)) != tuple(n.meta["val"].shape):
            continue
        with gm.graph.inserting_before(n):
            y = gm.graph.call_function(torch.ops.aten.mul.Tensor, (a, b))
        y.meta["val"] = n.meta["val"]
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        done.append(n.name)
    return recompiled(gm, done)


def matmuls_transposed_between_reshapes(gm: Any) -> list[str]:
    """Compute a batch-1 matmul whose operand and result the converter would fuse wrongly as its
    transpose, y = (bᵀ · aᵀ)ᵀ (float programs).

    litert-torch lowers a matmul with batch dims of 1 as RESHAPE to 2-D → BATCH_MATMUL → RESHAPE
    back. When the left operand was itself reshaped from a rank-R tensor and the result is
    reshaped on to rank R with the same leading R - 2 dims and the same last dim (a unit dim put
    before it), the converter's tfl-optimize pass
    fuses the reshapes around BATCH_MATMUL into one BATCH_MATMUL typed at rank R on rank-3
    operands, which fails verification ("'tfl.batch_matmul' op found invalid output rank, expected
    3 but got 4"). EfficientViM's HSM-SSD has both: `h = x.flatten(2) @ ab.T` (x [B, C, H, W]) fed
    to a 1×1 Conv1d (which litert-torch lowers over [B, C, 1, L]), and `y = (h @ c).reshape(B, C,
    H, W)` with h from a Conv1d, at a 1×1 map. Transposed, the left operand and the result are
    transposes, not reshapes, and the pass leaves them alone. Same values: each output element is
    the same dot product, over the same terms. Only that pattern: transposing every batch-1 matmul
    met another converter fault (a FULLY_CONNECTED ai-edge-litert cannot prepare).

    A linear over the last dim of a rank-4 tensor with one row (CSATv2's ConvNeXt-style Block at a
    1×1 map: permute → LayerNorm → Linear → GELU → GRN → Linear) is lowered the same way, reshaped
    to [1, K] and back, and fails the same; transposed, it failed in the converter again, so it is
    written as the 1×1 conv2d it is (the same dot products, bias added after).

    Before: y = matmul(a, b)                                  a: [1, M, K], b: [1, K, N]
    After:  y = transpose(matmul(transpose(b, -2, -1), transpose(a, -2, -1)), -2, -1)
    Before: y = linear(x, w, bias)                            x: [1, 1, 1, K]
    After:  y = permute(conv2d(permute(x, [0, 3, 1, 2]), reshape(w, [N, K, 1, 1]), bias), [0, 2, 3, 1])
    """
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    done = []
    for n in list(gm.graph.nodes):
        linear = _aten_name(n) == "linear"
        if not (linear or (_aten_name(n) in MATMULS and len(n.args) == 2)) or "val" not in n.meta:
            continue
        a, b = n.args[:2]
        out = tuple(n.meta["val"].shape)
        rows = out[:-1] if linear else out[:-2]  # a real batch (rows, for a linear) is not reshaped away
        if (len(out) != 4 if linear else len(out) < 3) or any(d != 1 for d in rows) \
                or not all(isinstance(x, torch.fx.Node) for x in (a, b)) or "val" not in a.meta:
            continue
        src = _tfl_shape_before(a)
        after = [out] if linear else _tfl_shapes_after(n)  # litert-torch reshapes a linear's result back itself
        if src is None or not any(len(dst) == len(src) and dst[:-2] == src[:-2] and dst[-1] == out[-1] for dst in after):
            continue
        with gm.graph.inserting_before(n):
            y = _pointwise_conv(gm, n) if linear else _transposed_matmul(gm, n)
        y.meta["val"] = n.meta["val"]
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        done.append(n.name)
    return recompiled(gm, done)


def _transposed_matmul(gm: Any, n: Any) -> Any:
    """y = (bᵀ · aᵀ)ᵀ for the matmul `n` (inserted where the graph's insertion point is)."""
    import torch

    aten, (a, b) = torch.ops.aten, n.args
    bt = gm.graph.call_function(aten.transpose.int, (b, -2, -1))
    at = gm.graph.call_function(aten.transpose.int, (a, -2, -1))
    yt = gm.graph.call_function(n.target, (bt, at))
    for node, like in ((bt, b), (at, a), (yt, n)):
        if "val" in getattr(like, "meta", {}):
            node.meta["val"] = like.meta["val"].transpose(-2, -1)
    return gm.graph.call_function(aten.transpose.int, (yt, -2, -1))


def _pointwise_conv(gm: Any, n: Any) -> Any:
    """The linear `n` over the last dim of a rank-4 [B, H, W, K] as a 1×1 conv2d over [B, K, H, W]
    (TFLite's CONV_2D reads NHWC: the permutes cancel against litert-torch's own)."""
    import torch

    aten = torch.ops.aten
    x, w, bias = (*n.args, None)[:3]
    xc = gm.graph.call_function(aten.permute.default, (x, [0, 3, 1, 2]))
    out, k = n.meta["val"], x.meta["val"].shape[-1]
    wc = gm.graph.call_function(aten.reshape.default, (w, [out.shape[-1], k, 1, 1]))
    yc = gm.graph.call_function(aten.conv2d.default, (xc, wc, bias))
    xc.meta["val"] = x.meta["val"].permute(0, 3, 1, 2)
    wc.meta["val"] = out.new_empty((out.shape[-1], k, 1, 1))
    yc.meta["val"] = out.permute(0, 3, 1, 2)
    return gm.graph.call_function(aten.permute.default, (yc, [0, 2, 3, 1]))


def _tfl_shape_before(x: Any) -> tuple | None:
    """The shape of the tensor a matmul operand is reshaped from in the TFLite program: through
    reshapes to their source; a Conv1d's output is [N, C, 1, L] there (litert-torch's CONV_2D)."""
    while _aten_name(x) in _RESHAPES:
        x = x.args[0]
    if "val" not in getattr(x, "meta", {}):
        return None
    shape = tuple(x.meta["val"].shape)
    return (*shape[:2], 1, shape[2]) if _aten_name(x) == "conv1d" and len(shape) == 3 else shape


def _tfl_shapes_after(n: Any) -> list[tuple]:
    """The shapes a matmul's result is reshaped to in the TFLite program, through reshapes; a
    Conv1d reads it as [N, C, 1, L]."""
    out = []
    for u in n.users:
        name = _aten_name(u)
        if name in _RESHAPES and "val" in u.meta:
            out.append(tuple(u.meta["val"].shape))
            out.extend(_tfl_shapes_after(u))
        elif name == "conv1d" and "val" in n.meta and n.meta["val"].dim() == 3:
            shape = tuple(n.meta["val"].shape)
            out.append((*shape[:2], 1, shape[2]))
    return out


def int8_div_in_float(gm: Any) -> list[str]:
    """Keep a division of an int8 activation out of TFLite's int8 DIV kernel (quantized programs).

    TFLite's int8 DIV (reference_ops::DivElementwise, the only int8 DIV: XNNPACK has none) normalises
    the numerator by its leading sign bits before multiplying by the reciprocal. A numerator exactly
    one step below its zero point (x_q - z = -1, or +1 with a negative divisor) has 31 of them, the
    final shift runs past 31 bits and the result saturates to -128 instead of ≈ 0: EdgeNeXt's XCA
    (`F.normalize(q)` = q / max(‖q‖, ε)) gives -1.0 for tiny q, 124-143 steps off the simulation
    and the float model on ~0.1 % of values. Every other format (and the simulation) divides the
    dequantized values. So litert-torch is handed a form it cannot fuse into an int8 DIV, the same
    float arithmetic up to one rounding of 1/b (at most one output step, at an exact tie):

    Before: y = quantize(div(dequantize(a), dequantize(b)))          → int8 DIV
    After:  y = quantize(mul(dequantize(a), reciprocal(dequantize(b))))
            → DEQUANTIZE, DIV(1, b), MUL in float32, QUANTIZE (float ops the manifest names)
    Only divisions whose numerator is an int8 activation; a constant or float numerator is left.
    """
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    aten = torch.ops.aten
    try:
        dequant = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    except (AttributeError, RuntimeError):  # torchao not imported: no Q/DQ in the graph
        return []
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target != aten.div.Tensor or n.kwargs.get("rounding_mode") \
                or len(n.args) != 2:
            continue
        a, b = n.args
        if getattr(a, "target", None) != dequant or not isinstance(b, torch.fx.Node):
            continue
        with gm.graph.inserting_before(n):
            r = gm.graph.call_function(aten.reciprocal.default, (b,))
            y = gm.graph.call_function(aten.mul.Tensor, (a, r))
        if "val" in b.meta:
            r.meta["val"] = b.meta["val"]
        if "val" in n.meta:
            y.meta["val"] = n.meta["val"]
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        done.append(n.name)
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


def uniform_biases_unsplat(gm: Any) -> list[str]:
    """Keep a conv/linear bias whose elements are all equal from reaching the converter as a splat
    constant (quantized programs).

    litert-torch writes a uniform tensor as an MLIR splat, and the converter quantizes a splat bias
    to one int32 value for every channel: round(b / (s_in·s_w[0])), the first channel's scale, where
    each channel needs its own s_in·s_w[c]. With per-channel weights every channel but the first
    then adds a wrong bias: timm's ViT-style init sets every Linear bias to 0.02, and Hiera's
    attn.proj (bias 0.02 ≈ 36 output steps) came out up to 15 steps off the simulation on 81 % of
    values in isolation; 35 of its 52 layers were written so. A zero bias is right at any scale.
    So the last element is moved by one float32 ulp: no longer a splat, the same int32 bias up to a
    rounding tie (one unit of s_in·s_w[c], a thousandth of an output step).

    Before: y = linear(x, w, b)            b = [0.02, 0.02, …, 0.02]
    After:  y = linear(x, w, b')           b' = [0.02, …, 0.02, nextafter(0.02, +inf)]
    """
    import numpy as np
    import torch

    from edgeconv.calib.rewrites import TRANSPOSED, WEIGHTED, constant_of

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in WEIGHTED | TRANSPOSED or len(n.args) < 3:
            continue
        bias = n.args[2]
        b = constant_of(gm, bias) if isinstance(bias, torch.fx.Node) else None
        if b is None or b.dtype != torch.float32 or b.numel() < 2 or not bool((b == b.reshape(-1)[0]).all()) \
                or float(b.reshape(-1)[0]) == 0.0:
            continue
        moved = b.clone().reshape(-1)
        moved[-1] = torch.from_numpy(np.nextafter(moved[-1:].numpy(), np.float32(np.inf)))
        name = free_attr(gm, f"{n.name}_bias_unsplat")
        gm.register_buffer(name, moved.reshape(b.shape))
        with gm.graph.inserting_before(n):
            attr = gm.graph.get_attr(name)
        attr.meta.update({k: v for k, v in bias.meta.items() if k == "val"})
        n.args = (*n.args[:2], attr, *n.args[3:])
        done.append(n.name)
    return recompiled(gm, done)
