"""Graph rewrites before annotation (`transform`, run as the quantizer's transform_for_annotation
and by the quantize pass): ops no int8 kernel computes as such become ops every format has an
int8 kernel for, with the same values in float. Each rewrite shows its before/after.

  batch_norm_to_depthwise   standalone BatchNorm → depthwise 1×1 conv (per-channel int8)
  hardsigmoid_to_relu6      hardsigmoid → ADD with fused ReLU6, MUL
  one_element_norms_to_bias  LayerNorm over axes of one element → its bias (a constant; run first)
  layer_norm_to_primitives  LayerNorm / GroupNorm / RMSNorm → MEAN, SUB, MUL, RSQRT, ADD
  variance_to_primitives    var (timm SimpleNorm's) → MEAN, SUB, MUL
  long_means_in_two         a mean / sum over > 8192 values that ends on the innermost axis → one over the
                            other axes, then one over the innermost (XNNPACK's x86 int8 MEAN / SUM overflow there)
  avg_pool_without_pad_count  average pool not counting its padding → PAD, AVERAGE_POOL, MUL
  resizes_to_linear_maps    bicubic resize, adaptive average pool not dividing its input → a linear map per axis
  sdpa_to_primitives        fused attention → MUL, BATCH_MATMUL, SOFTMAX, BATCH_MATMUL
  einsum_to_matmul          a two-operand einsum → relayouts around one BATCH_MATMUL
  conv_transpose_to_conv    (post-training) a transposed conv → CONV_2D, DEPTH_TO_SPACE (sub-pixel form)
  lstm_to_primitives        (post-training) an LSTM → one input projection, then per step FULLY_CONNECTED, ADD,
                            LOGISTIC, TANH, slices, MUL (unrolled; the reverse direction read backwards)
  fold_constants            input-independent values (positional encodings) → stored constants
  unbind_to_select          unbind → one select per piece
  roll_to_slices            roll → two slices and a concat per rolled dim
  stack_to_cat              stack → an unsqueeze per input and a concat
  repeat_interleave_to_expand  repeat_interleave by a number → unsqueeze, expand, reshape
  l2_normalize_to_rsqrt     F.normalize → MUL, SUM, RSQRT
  algebra_to_int8_ops       x², a/√b, a/c, a/b with b > 0, addcmul → MUL, RSQRT, ADD
  vector_norm_to_rsqrt      an L2 norm → SUM, MUL, RSQRT (s · rsqrt(s))
  silu_to_sigmoid_mul       SiLU → LOGISTIC, MUL
  scalars_to_constants      a number operand of ADD/SUB/MUL → an int8 constant
  merge_duplicates          the same op on the same inputs → one node
  single_element_reductions  a mean/sum/max/min over axes of size 1 → its input (squeezed unless keepdim)
  self_binary_before_relayouts  x·x, x − x on a reshaped / transposed x → the op, then the relayout
  inline_disabled_autocast  (run first) a region under autocast(enabled=False) → its ops
  linear_on_one_row         a linear on a [1, …, 1, C] tensor → on its [1, C] view, reshaped back
  drop_noop_casts           (run first) a cast to the dtype a tensor already has (`.type_as`) → nothing
  in_place_to_functional    (run first) an in-place op on a tensor nothing else reads (`.add_(b)`) → its functional op
"""
from __future__ import annotations

import contextlib
import math
import operator
from typing import Any, Callable

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
# Meta flag on an epsilon added to an activation: the constant and the sum are quantized on the
# activation's own scale (one observer for the three), so in int8 the ADD is exact and adds nothing
# the activation's step resolves. Its own scale would put eps/s far below XNNPACK's 1/1024 floor
# on an ADD's input/output scale ratio, and a sum on a scale of its own is a requantization that
# converters fold into the next op (CoreML: rsqrt(x, epsilon)) — an int8 tensor the file lacks.
ON_INPUT_SCALE = "edgeconv_on_input_scale"


def _targets(*ops: Any) -> frozenset:
    out = set()
    for op in ops:
        if isinstance(op, torch._ops.OpOverloadPacket):
            out.update(getattr(op, o) for o in op.overloads())
        else:
            out.add(op)
    return frozenset(out)


def _is_float(n: Any) -> bool:
    val = n.meta.get("val") if isinstance(n, Node) else None
    return isinstance(val, torch.Tensor) and val.dtype.is_floating_point


def activations(gm: GraphModule) -> set[Node]:
    """Nodes whose value depends on a model input (placeholders of an unlifted module)."""
    act: set[Node] = set()
    for n in gm.graph.nodes:
        if n.op == "placeholder" or (n.op == "call_function" and any(i in act for i in n.all_input_nodes)):
            act.add(n)
    return act



BATCH_NORM = _targets(aten.batch_norm, aten._native_batch_norm_legit_no_training)


def constant_of(gm: GraphModule, n: Any) -> torch.Tensor | None:
    if isinstance(n, Node) and n.op == "get_attr":
        obj: Any = gm
        for part in n.target.split("."):
            obj = getattr(obj, part)
        return obj.detach() if isinstance(obj, torch.Tensor) else None
    return None


def _new_attr(gm: GraphModule, base: str, value: torch.Tensor) -> str:
    i = 0
    while hasattr(gm, f"{base}_{i}"):
        i += 1
    name = f"{base}_{i}"
    gm.register_buffer(name, value.contiguous())
    return name


def batch_norm_to_depthwise(gm: GraphModule) -> list[str]:
    """Standalone eval-mode BatchNorm on a 4-D activation → depthwise 1×1 conv (see module doc).
    A per-channel affine map is exactly what a depthwise conv with per-channel int8 weights
    computes (one weight per channel: exactly representable), so it stays int8 everywhere."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in BATCH_NORM or n not in acts:
            continue
        x = n.args[0]
        val = x.meta.get("val") if isinstance(x, Node) else None
        if not isinstance(val, torch.Tensor) or val.dim() != 4:
            continue
        if n.target == aten._native_batch_norm_legit_no_training.default:
            _, w, b, mean, var, _mom, eps = n.args[:7]
            if any(u.target is not operator.getitem or u.args[1] != 0 for u in n.users):
                continue
        else:
            _, w, b, mean, var, training, _mom, eps = n.args[:8]
            if training:
                continue
        mean_t, var_t = constant_of(gm, mean), constant_of(gm, var)
        if mean_t is None or var_t is None:
            continue
        c = mean_t.numel()
        w_t = constant_of(gm, w) if w is not None else torch.ones(c)
        b_t = constant_of(gm, b) if b is not None else torch.zeros(c)
        if w_t is None or b_t is None:
            continue
        scale = w_t.float() / torch.sqrt(var_t.float() + eps)
        shift = b_t.float() - mean_t.float() * scale
        base = (n.name if isinstance(n.name, str) else "bn").replace(".", "_")
        wn = _new_attr(gm, f"_edgeconv_{base}_dw_weight", scale.reshape(c, 1, 1, 1))
        bn_ = _new_attr(gm, f"_edgeconv_{base}_dw_bias", shift)
        with gm.graph.inserting_before(n):
            wnode = gm.graph.get_attr(wn)
            bnode = gm.graph.get_attr(bn_)
            conv = gm.graph.call_function(aten.conv2d.default, (x, wnode, bnode, [1, 1], [0, 0], [1, 1], c))
        conv.meta.update({k: v for k, v in n.meta.items() if k != "val"})
        conv.meta["val"] = val.new_empty(val.shape)
        if n.target == aten._native_batch_norm_legit_no_training.default:
            for u in list(n.users):
                u.replace_all_uses_with(conv)
                gm.graph.erase_node(u)
        else:
            n.replace_all_uses_with(conv)
        gm.graph.erase_node(n)
        done.append(n.name)
    return done


def hardsigmoid_to_relu6(gm: GraphModule) -> list[str]:
    """hardsigmoid(x) → hardtanh(x + 3, 0, 6) · (1/6): no int8 kernel has hard-sigmoid, but ADD
    with a fused ReLU6 and MUL by a constant are int8 everywhere."""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in _targets(aten.hardsigmoid, aten.hardsigmoid_):
            continue
        x = n.args[0]
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        three = _new_attr(gm, "_edgeconv_hsig_3", torch.tensor(3.0))
        sixth = _new_attr(gm, "_edgeconv_hsig_sixth", torch.tensor(1 / 6))
        with gm.graph.inserting_before(n):
            c3, c6 = gm.graph.get_attr(three), gm.graph.get_attr(sixth)
            add = gm.graph.call_function(aten.add.Tensor, (x, c3))
            clamp = gm.graph.call_function(aten.hardtanh.default, (add, 0.0, 6.0))
            mul = gm.graph.call_function(aten.mul.Tensor, (clamp, c6))
        for k in (add, clamp, mul):
            k.meta.update({m: v for m, v in n.meta.items() if m != "val"})
            k.meta["val"] = val.new_empty(val.shape)
        c3.meta["val"] = torch.tensor(3.0)
        c6.meta["val"] = torch.tensor(1 / 6)
        n.replace_all_uses_with(mul)
        gm.graph.erase_node(n)
        done.append(n.name)
    return done


LAYER_NORM = _targets(aten.layer_norm)
GROUP_NORM = _targets(aten.group_norm)
RMS_NORM = _targets(aten.rms_norm)
VAR = _targets(aten.var)
SDPA = _targets(aten.scaled_dot_product_attention)
EINSUM = _targets(aten.einsum)


def _norm_args(n: Node) -> tuple[Any, tuple[int, ...], Any, Any, float] | None:
    """(x, reduced dims, weight, bias, eps) of a layer norm, or of a one-group GroupNorm (a layer
    norm over C, H, W with a per-channel affine); None for any other form."""
    val = n.args[0].meta.get("val") if isinstance(n.args[0], Node) else None
    if not isinstance(val, torch.Tensor):
        return None
    args = list(n.args) + [None] * 6
    if n.target in LAYER_NORM:
        shape = list(args[1])
        eps = args[4] if args[4] is not None else n.kwargs.get("eps", 1e-5)
        dims = tuple(range(val.dim() - len(shape), val.dim()))
        return args[0], dims, args[2] or n.kwargs.get("weight"), args[3] or n.kwargs.get("bias"), float(eps)
    if n.target in RMS_NORM:  # no centring, no bias; eps None means the dtype's epsilon
        eps = args[3] if args[3] is not None else n.kwargs.get("eps") or torch.finfo(val.dtype).eps
        dims = tuple(range(val.dim() - len(list(args[1])), val.dim()))
        return args[0], dims, args[2] or n.kwargs.get("weight"), None, float(eps)
    if n.target in GROUP_NORM and val.dim() >= 3 and int(args[1]) >= 1 and val.shape[1] % int(args[1]) == 0:
        eps = args[4] if args[4] is not None else n.kwargs.get("eps", 1e-5)
        return args[0], tuple(range(1, val.dim())), args[2], args[3], float(eps)
    return None


def _grouped(n: Node, shape: list[int]) -> list[int] | None:
    """The [B, G, C/G, ...] view a GroupNorm of G > 1 groups normalizes over (dims 2 on), else None."""
    groups = int(n.args[1]) if n.target in GROUP_NORM else 1
    return [shape[0], groups, shape[1] // groups, *shape[2:]] if groups > 1 else None


def one_element_norms_to_bias(gm: GraphModule) -> list[str]:
    """A LayerNorm over axes of one element centres x on its own mean, which is x: its output is its
    bias β (0 without one), whatever x is. CSATv2's spatial transformer normalizes its one-channel
    7×7 map with `nn.LayerNorm(1)`, so in float all it adds to its input is a constant. Written out,
    the pieces were int8 ops on tensors that are all zero (x − x at the smallest scale); as a
    constant it is folded with what it flows into (post-training quantization: `transform` runs this
    before folding).

        before: y = layer_norm(x, [1], γ, β)          x: [B, N, 1]
        after:  y = expand(β, [B, N, 1])"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in LAYER_NORM:
            continue
        parsed, val = _norm_args(n), n.meta.get("val")
        if parsed is None or not isinstance(val, torch.Tensor) or any(val.shape[d] != 1 for d in parsed[1]):
            continue
        b, ins = parsed[3], _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            y = ins.call(aten.expand.default, b, list(val.shape)) if isinstance(b, Node) \
                else ins.constant("_edgeconv_zeros", torch.zeros(val.shape, dtype=val.dtype))
        ins.finish(y, op_type="layer_norm")
        done.append(n.name)
    return done


def layer_norm_to_primitives(gm: GraphModule) -> list[str]:
    """layer_norm, rms_norm and GroupNorm → the integer builtins every format has, so an int8 file keeps
    no float island there (a DSP/NPU delegate would cut the graph at each):

        before: y = layer_norm(x, dims, γ, β, eps)
        after:  μ = mean(x, dims); d = x − μ; v = mean(d·d, dims); n = d · rsqrt(v + eps); y = n·γ + β
                (rms_norm: d = x, no β; GroupNorm of G groups: x viewed [B, G, C/G, ...], the statistics
                over dims 2 on, n viewed back before the per-channel γ, β — BiT's and ViT-hybrid's
                GroupNorm(32) stems were float InstanceNormalization / batch_norm islands)

    Each piece is then annotated like any MEAN/SUB/MUL/ADD/RSQRT (int8 in, int8 out). The pieces keep
    the norm's source meta, and `edgeconv_op_type` = "layer_norm" so a quant config can keep the op
    type float (`"layer_norm": null`)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in LAYER_NORM | GROUP_NORM | RMS_NORM:
            continue
        parsed = _norm_args(n)
        val = n.meta.get("val")
        if parsed is None or not isinstance(val, torch.Tensor):
            continue
        x, dims, w, b, eps = parsed
        affine_shape = [1] * val.dim()
        if n.target in GROUP_NORM:
            affine_shape[1] = val.shape[1]
        g, ins = gm.graph, _Inserter(gm, n)
        grouped = _grouped(n, list(val.shape))
        with g.inserting_before(n):
            call = ins.call
            if grouped:
                x, dims = call(aten.view.default, x, grouped), tuple(range(2, len(grouped)))
            d = x if n.target in RMS_NORM else call(aten.sub.Tensor, x, call(aten.mean.dim, x, list(dims), True))
            var = call(aten.mean.dim, call(aten.mul.Tensor, d, d), list(dims), True)
            # eps as an int8 constant (a float scalar would leave ONNX's Add with a float input),
            # on v's own scale (see ON_INPUT_SCALE)
            eps_node = ins.constant("_edgeconv_ln_eps", eps, **{ON_INPUT_SCALE: True})
            r = call(aten.rsqrt.default, call(aten.add.Tensor, var, eps_node))
            y = call(aten.mul.Tensor, d, r)
            if grouped:
                y = call(aten.view.default, y, list(val.shape))
            for param, op in ((w, aten.mul.Tensor), (b, aten.add.Tensor)):
                if isinstance(param, Node):
                    if n.target in GROUP_NORM:
                        param = call(aten.view.default, param, affine_shape)
                    y = call(op, y, param)
        ins.finish(y, op_type="layer_norm")
        done.append(n.name)
    return done


def variance_to_primitives(gm: GraphModule) -> list[str]:
    """var (timm's SimpleNorm2d: x · rsqrt(var(x) + eps) · γ) → the integer builtins, as LayerNorm's:

        before: v = var(x, dims, correction=c, keepdim)
        after:  d = x − mean(x, dims); v = mean(d·d, dims, keepdim) · N / (N − c)

    The pieces are tagged `edgeconv_op_type` = "var" (a quant config may keep them float)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in VAR:
            continue
        x = n.args[0]
        x_val = x.meta.get("val") if isinstance(x, Node) else None
        if not isinstance(x_val, torch.Tensor) or not isinstance(n.meta.get("val"), torch.Tensor):
            continue
        dims, correction, keepdim = _var_args(n, x_val.dim())
        count = math.prod(x_val.shape[d] for d in dims)
        if count <= correction:
            continue
        g, ins = gm.graph, _Inserter(gm, n)
        with g.inserting_before(n):
            d = ins.call(aten.sub.Tensor, x, ins.call(aten.mean.dim, x, dims, True))
            v = ins.call(aten.mean.dim, ins.call(aten.mul.Tensor, d, d), dims, keepdim)
            if correction:
                v = ins.call(aten.mul.Tensor, v, ins.constant("_edgeconv_var_correction", count / (count - correction)))
        ins.finish(v, op_type="var")
        done.append(n.name)
    return done


MEAN_SUM = _targets(aten.mean.dim, aten.sum.dim_IntList)
# The most values XNNPACK's int8 MEAN (and SUM) takes in one contiguous run on x86 CPUs without
# AVX-512 (ai-edge-litert 2.3.0; measured on an AMD EPYC and on emulated Haswell / Nehalem): exact
# at 8192, saturated at +127 from 8704 on, whatever the input. A reduction that keeps the innermost
# axis (a spatial mean in NHWC: XNNPACK's strided path) was exact at 512² = 262144 values.
CONTIGUOUS_MEAN_LIMIT: int | None = 8192


def long_means_in_two(gm: GraphModule) -> list[str]:
    """An int8 mean (or sum) over more than CONTIGUOUS_MEAN_LIMIT values that runs to the innermost
    axis of TFLite's layout (a 4-D activation is NHWC there: C innermost; any other rank keeps
    torch's order) → a mean over its other axes (the innermost kept: no contiguous run), then one
    over the innermost. A GroupNorm(1) (PoolFormer's norms) reduces C·H·W values in one run: 16384
    at 64² in PoolFormerV2's first stage, 200704 at 224², and XNNPACK on any x86 CPU without
    AVX-512 returns its saturated top level (215 steps off). The mean of equal
    groups' means is the mean (a sum of partial sums, the sum), so only the int8 rounding of the
    partial results is new, and every format and the simulation compute it alike. An innermost axis
    longer than the limit by itself (`x.flatten(1).mean(1)`) is viewed as [L / b, b], b the largest
    divisor of L within the limit, first; a 4-D tensor's C is left whole (its view would be 5-D).

        before: m = mean(x, [1, 2, 3], keepdim)          x: [B, 64, 16, 16]
        after:  m = mean(mean(x, [2, 3], True), [1], True)   (keepdim False: squeezed on [1, 2, 3])
        before: m = mean(x, [1], True)                   x: [B, 16384]
        after:  m = squeeze(mean(mean(view(x, [B, 2, 8192]), [1], True), [2], True), [2])"""
    if CONTIGUOUS_MEAN_LIMIT is None:
        return []
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in MEAN_SUM or n.kwargs.get("dtype") is not None:
            continue
        x, dims = n.args[0], _reduced_dims(n)
        got, val = getattr(x, "meta", {}).get("val"), n.meta.get("val")
        if dims is None or not isinstance(got, torch.Tensor) or not isinstance(val, torch.Tensor):
            continue
        dims = sorted({d % got.dim() for d in dims})
        inner = 1 if got.dim() == 4 else got.dim() - 1
        rest = [d for d in dims if d != inner]
        b = _divisor_within(got.shape[inner], CONTIGUOUS_MEAN_LIMIT) if got.dim() != 4 else None
        count = math.prod(got.shape[d] for d in dims)
        if inner not in dims or (not rest and b is None) or count <= CONTIGUOUS_MEAN_LIMIT:
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            if b is not None:  # the innermost axis alone is past the limit: its [L / b, b] view
                x = ins.call(aten.view.default, x, [*got.shape[:-1], got.shape[-1] // b, b])
                rest, inner = [*rest, inner], inner + 1
            m = ins.call(n.target, ins.call(n.target, x, rest, True), [inner], True)
            if b is not None:
                m = ins.call(aten.squeeze.dims, m, [inner])
            if val.dim() != got.dim():
                m = ins.call(aten.squeeze.dims, m, dims)
        ins.finish(m)
        done.append(n.name)
    return done


def _divisor_within(length: Any, limit: int) -> int | None:
    """The largest b ≤ limit dividing a static `length` past the limit into two or more runs, else None."""
    if not isinstance(length, int) or length <= limit:
        return None
    return next((b for b in range(limit, 1, -1) if length % b == 0), None)


AVG_POOL2D = _targets(aten.avg_pool2d)


def avg_pool_without_pad_count(gm: GraphModule) -> list[str]:
    """An average pool whose border windows divide by their valid pixels only (count_include_pad=False,
    timm ViTamin's and many stems' 3×3 stride-2 pool) → an explicit zero pad, a pool that divides by the
    whole window, and a MUL by the constant per-position ratio. litert-torch lowers the first as float
    REDUCE_WINDOW sums and a DIV; each piece here has an int8 kernel in every format. Exact in float:

        before: y = avg_pool2d(x, k, s, p, count_include_pad=False)
        after:  y = avg_pool2d(pad(x, p), k, s, 0) · r,   r = 1 / avg_pool2d(1, k, s, p, count_include_pad=True)

    (the pool of ones counts each window's valid share: k² / r is its count of valid pixels). A stride-1
    pool whose padding is what SAME padding places (PoolFormer's 3×3 token mixer) stays: litert-torch
    writes it as TFLite's AVERAGE_POOL_2D (which divides by the valid pixels), int8 as it is in every
    format. A strided one it left float even where its padding is SAME's (3×3 stride 2 on a 3² map)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in AVG_POOL2D:
            continue
        x, k, stride, pad, ceil, include, divisor = _pool_args(n)
        x_val = x.meta.get("val") if isinstance(x, Node) else None
        if include or divisor is not None or not any(pad) or not isinstance(x_val, torch.Tensor) or x_val.dim() != 4:
            continue
        if not ceil and stride == [1, 1] and all(_same_padding(int(x_val.shape[2 + d]), k[d], 1, pad[d]) for d in (0, 1)):
            continue
        ones = torch.ones(1, 1, *x_val.shape[-2:])
        ratio = 1 / torch.nn.functional.avg_pool2d(ones, k, stride, pad, ceil, True)
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            padded = ins.call(aten.constant_pad_nd.default, x, [pad[1], pad[1], pad[0], pad[0]], 0.0)
            pooled = ins.call(aten.avg_pool2d.default, padded, k, stride, [0, 0], ceil, True)
            out = ins.call(aten.mul.Tensor, pooled, ins.constant("_edgeconv_pool_count", ratio))
        ins.finish(out)
        done.append(n.name)
    return done


def _same_padding(size: int, k: int, s: int, p: int) -> bool:
    """Whether padding p on both sides places a pool's windows where SAME padding does: the same output
    size, and SAME's padding before (the smaller half of what it needs) is p."""
    out = (size + 2 * p - k) // s + 1
    return out == -(-size // s) and max((out - 1) * s + k - size, 0) // 2 == p


def _pool_args(n: Node) -> tuple[Any, list[int], list[int], list[int], bool, bool, Any]:
    """(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override) of aten.avg_pool2d,
    each pair as two ints."""
    names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    given = dict(zip(names, n.args[1:]), **n.kwargs)

    def pair(v: Any, default: list[int]) -> list[int]:
        v = default if v is None or v == [] else v
        return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v] * (2 // len(v))

    k = pair(given["kernel_size"], [1, 1])
    return (n.args[0], k, pair(given.get("stride"), k), pair(given.get("padding", 0), [0, 0]),
            bool(given.get("ceil_mode", False)), bool(given.get("count_include_pad", True)),
            given.get("divisor_override"))


def resizes_to_linear_maps(gm: GraphModule) -> list[str]:
    """A bicubic resize to a fixed size, or an adaptive average pool whose output does not divide its
    input → a linear map along W and one along H. Both are separable and linear in their input, so each
    axis is a constant [out, in] matrix: the op itself run on one-hot rows (bicubic's clamped borders,
    the pool's overlapping windows included). A linear with a constant weight is int8 everywhere;
    neither op has an int8 kernel as written:
    - bicubic (timm CrossViT resizes its input 240 → 224 for its second branch): no format has one
      (litert-torch wrote 70 float GATHER_ND/MUL/ADD ops);
    - an adaptive pool that does not divide (CSATv2's AdaptiveAvgPool2d((7, 7)) of 8×8 … 1×1 maps at
      64², PSPNet's pyramid bins): litert-torch wrote a float GATHER/ADD/MUL island (80 ops in CSATv2),
      torch.onnx float Gather/Where/Div. One that divides is an ordinary AVERAGE_POOL_2D, left as it is.

        before: y = upsample_bicubic2d(x, [Ho, Wo], align_corners)  or  adaptive_avg_pool2d(x, [Ho, Wo])
        after:  y = linear(linear(x, A_w)ᵀ, A_h)ᵀ        A_w: [Wo, W], A_h: [Ho, H]  (ᵀ: the last two dims)"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts:
            continue
        found = _bicubic(n) if n.target in BICUBIC else _adaptive_pool(n) if n.target in ADAPTIVE_AVG_POOL else None
        if found is not None:
            _linear_maps(gm, n, *found)
            done.append(n.name)
    return done


BICUBIC = _targets(aten.upsample_bicubic2d)
ADAPTIVE_AVG_POOL = _targets(aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d)


def _bicubic(n: Node) -> tuple | None:
    x, size, corners, scales = (list(n.args) + [None] * 4)[:4]
    x_val = x.meta.get("val") if isinstance(x, Node) else None
    if not (isinstance(x_val, torch.Tensor) and x_val.dim() == 4 and size and scales is None
            and not n.kwargs.get("scales_h") and not n.kwargs.get("scales_w")):
        return None
    resize = lambda rows, after: torch.nn.functional.interpolate(  # noqa: E731
        rows, size=(after, 1), mode="bicubic", align_corners=bool(corners))
    return x, x_val.shape[2:], size, resize, "_edgeconv_bicubic"


def _adaptive_pool(n: Node) -> tuple | None:
    x, size = n.args[:2]
    x_val = x.meta.get("val") if isinstance(x, Node) else None
    if not (isinstance(x_val, torch.Tensor) and x_val.dim() == 4 and len(size) == 2) \
            or all(int(b) % int(a) == 0 for b, a in zip(x_val.shape[2:], size)):
        return None
    pool = lambda rows, after: torch.nn.functional.adaptive_avg_pool2d(rows, (after, 1))  # noqa: E731
    return x, x_val.shape[2:], size, pool, "_edgeconv_adaptive_pool"


def _linear_maps(gm: GraphModule, n: Node, x: Node, hw: Any, size: Any, along: Callable, base: str) -> None:
    """Replace `n` (a separable linear map of `x`'s last two axes, `hw` → `size`) by one linear per axis
    that changes size; `along(rows, after)` applies the op to one-hot rows [before, 1, before, 1]."""
    ins = _Inserter(gm, n)
    y = x
    with gm.graph.inserting_before(n):
        for axis, (before, after) in enumerate(zip(hw, size)):  # H, then W
            if before == after:
                continue  # that axis keeps its size: the identity
            if before == 1:  # one row in: every output row is it (litert-torch refuses a linear of one input)
                y = ins.call(aten.cat.default, [y] * int(after), 2 + axis)
                continue
            if axis == 0:
                y = ins.call(aten.transpose.int, y, -1, -2)  # H last
            rows = torch.eye(int(before)).reshape(int(before), 1, int(before), 1)  # one-hot inputs along the axis
            m = ins.constant(base, along(rows, int(after))[:, 0, :, 0].T.contiguous())
            y = ins.call(aten.linear.default, y, m)
            if axis == 0:
                y = ins.call(aten.transpose.int, y, -1, -2)
    ins.finish(y)


def _var_args(n: Node, rank: int) -> tuple[list[int], float, bool]:
    """(dims, correction, keepdim) of aten.var.dim(x, dim, unbiased, keepdim) or
    aten.var.correction(x, dim, *, correction, keepdim)."""
    args = list(n.args) + [None] * 4
    dims = args[1] if args[1] is not None else n.kwargs.get("dim")
    dims = sorted(d % rank for d in (dims if dims is not None else range(rank)))
    if n.target is aten.var.dim:
        unbiased = args[2] if args[2] is not None else n.kwargs.get("unbiased", True)
        return dims, float(bool(unbiased)), bool(args[3] if args[3] is not None else n.kwargs.get("keepdim", False))
    correction = n.kwargs.get("correction")
    return dims, float(1 if correction is None else correction), bool(n.kwargs.get("keepdim", False))


def sdpa_to_primitives(gm: GraphModule) -> list[str]:
    """scaled_dot_product_attention (timm's fused attention, which torch.export keeps as one op
    that no format has an int8 kernel for) → the ops every format has in int8:

        before: o = scaled_dot_product_attention(q, k, v, mask, scale=s)
        after:  a = softmax(matmul(q · s, transpose(k, -2, -1)) + mask, -1); o = matmul(a, v)

    A causal, grouped-query or boolean-mask form is left as it is (float, and the manifest names it)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in SDPA:
            continue
        q, k, v, mask, _p, causal = (list(n.args) + [None, 0.0, False])[:6]
        q_val = q.meta.get("val") if isinstance(q, Node) else None
        if causal or n.kwargs.get("is_causal") or n.kwargs.get("enable_gqa") or not isinstance(q_val, torch.Tensor):
            continue
        mask = mask if mask is not None else n.kwargs.get("attn_mask")
        if isinstance(mask, Node) and getattr(mask.meta.get("val"), "dtype", None) == torch.bool:
            continue  # True = attend: not an additive mask
        scale = n.kwargs.get("scale") or 1 / math.sqrt(q_val.shape[-1])
        g, ins = gm.graph, _Inserter(gm, n)
        with g.inserting_before(n):
            qs = ins.call(aten.mul.Tensor, q, ins.constant("_edgeconv_sdpa_scale", scale))
            logits = ins.call(aten.matmul.default, qs, ins.call(aten.transpose.int, k, -2, -1))
            if isinstance(mask, Node):
                logits = ins.call(aten.add.Tensor, logits, mask)
            out = ins.call(aten.matmul.default, ins.call(aten.softmax.int, logits, -1), v)
        ins.finish(out)
        done.append(n.name)
    return done


def einsum_to_matmul(gm: GraphModule) -> list[str]:
    """A two-operand einsum (timm MViTv2's relative-position terms, `byhwc,hkc->byhwk` of the query and
    a table gathered from a parameter), which torch.export keeps as one op: torch.onnx wrote it as a
    float Einsum, coremltools as float reshape/transpose/matmul. As one batched matmul, laid out by
    permutes and reshapes (int8 relayouts sharing their input's scale), it is an int8 MATMUL anywhere:

        before: y = einsum("byhwc,hkc->byhwk", q, r)
        after:  a = reshape(permute(q, [h, b, y, w, c]), [H, B·Y·W, C])      batch, rows, contracted
                b = permute(r, [h, c, k])                                    batch, contracted, columns
                y = permute(reshape(matmul(a, b), [H, B, Y, W, K]), [b, y, h, w, k])

    A constant operand (the gathered table, folded by fold_constants) is laid out once, here. An
    equation with an ellipsis, a repeated index, or an index summed within one operand is left as it
    is (float, and the manifest names it)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in EINSUM:
            continue
        plan = _einsum_plan(n)
        if plan is None:
            continue
        (a, sa), (b, sb), out, sizes = plan
        batch = [d for d in out if d in sa and d in sb]
        rows = [d for d in out if d in sa and d not in sb]
        cols = [d for d in out if d in sb and d not in sa]
        inner = [d for d in sa if d in sb and d not in out]
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            left = _laid_out(gm, ins, a, sa, batch + rows + inner, [batch, rows, inner], sizes)
            right = _laid_out(gm, ins, b, sb, batch + inner + cols, [batch, inner, cols], sizes)
            y = ins.call(aten.matmul.default, left, right)
            y = ins.call(aten.reshape.default, y, [sizes[d] for d in batch + rows + cols])
            order = [(batch + rows + cols).index(d) for d in out]
            if order != sorted(order):
                y = ins.call(aten.permute.default, y, order)
        ins.finish(y)
        done.append(n.name)
    return done


def _einsum_plan(n: Node) -> tuple | None:
    """((operand, its indices), (operand, its indices), output indices, size of each index) of a
    two-operand einsum this rewrite handles, else None."""
    eq, operands = n.args[0], n.args[1]
    if not isinstance(eq, str) or len(operands) != 2 or "->" not in eq or "." in eq:
        return None
    ins_, out = eq.replace(" ", "").split("->")
    subs = ins_.split(",")
    vals = [o.meta.get("val") if isinstance(o, Node) else None for o in operands]
    if len(subs) != 2 or not all(isinstance(v, torch.Tensor) and v.dim() == len(s) for v, s in zip(vals, subs)):
        return None
    if any(len(set(s)) != len(s) for s in (*subs, out)) or any(d not in subs[0] + subs[1] for d in out) \
            or any(d not in out and d not in other for s, other in zip(subs, subs[::-1]) for d in s):
        return None
    sizes: dict[str, int] = {}
    for s, v in zip(subs, vals):
        for d, k in zip(s, v.shape):
            if sizes.setdefault(d, int(k)) != int(k):
                return None  # a broadcast index (size 1 against k)
    return (operands[0], subs[0]), (operands[1], subs[1]), out, sizes


def _laid_out(gm: GraphModule, ins: _Inserter, x: Node, subs: str, order: list[str], groups: list[list[str]],
              sizes: dict[str, int]) -> Node:
    """`x` (indexed by `subs`) permuted to `order` and reshaped to one dim per group; a constant
    operand computed here, once."""
    perm = [subs.index(d) for d in order]
    shape = [math.prod(sizes[d] for d in g) for g in groups]
    value = constant_of(gm, x)
    if value is not None:
        return ins.constant("_edgeconv_einsum_operand", value.permute(perm).reshape(shape).contiguous())
    if perm != sorted(perm):
        x = ins.call(aten.permute.default, x, perm)
    return ins.call(aten.reshape.default, x, shape)


def unbind_to_select(gm: GraphModule) -> list[str]:
    """unbind(x, d) → select(x, d, i) per piece (attention's `q, k, v = qkv.unbind(0)`): every format
    lowers unbind as a split plus a squeeze per piece with no quantization between them (ONNX's
    Squeeze then reads a float Slice), but a select as one op that shares its input's scale.

        before: q, k, v = unbind(x, 0)          (getitem 0, 1, 2)
        after:  q = select(x, 0, 0); k = select(x, 0, 1); v = select(x, 0, 2)"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.unbind):
            continue
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        items = list(n.users)
        if not all(u.target is operator.getitem for u in items):
            continue
        for u in items:
            ins = _Inserter(gm, u)
            with gm.graph.inserting_before(u):
                piece = ins.call(aten.select.int, n.args[0], dim, u.args[1])
            ins.finish(piece)
        gm.graph.erase_node(n)
        done.append(n.name)
    return done


def softmax_to_last_axis(gm: GraphModule) -> list[str]:
    """Every softmax as TFLite's SOFTMAX takes it: over the last axis of a tensor that stays in the
    model's own layout. TFLite's SOFTMAX normalises over the last axis only, and litert-torch writes
    any other softmax as float SUB/EXP/SUM/DIV inside a DEQUANTIZE/QUANTIZE pair. Two ways a softmax
    ends up on another axis:
    - the model asks for one (SKNet's and ResNeSt's split attention over paths, CoaT's factorised
      attention over tokens): moved onto the last axis between two transposes;
    - litert-torch's layout pass makes a 4-D tensor next to a conv NHWC and moves the softmax's axis
      with it (EfficientFormerV2's talking-head attention: `dim=-1` becomes axis 2): such a 4-D
      softmax (a conv reads or writes it) is computed on a 3-D view, which the pass leaves alone.
    A softmax over one element (attention over a single token: LeViT's, SHViT's, MobileViT's last
    stage at a small input) is 1; the converter folds its max and sum away and leaves SUB/EXP/DIV in
    float: it becomes that constant. The same values in every format (transposes and reshapes only
    move them); in the shared program, so the simulation holds every tensor the artifact does.

        before: y = softmax(x, 1)                                 x: [B,2,C,1,1]
        after:  y = permute(softmax(permute(x, [0,2,3,4,1]), -1), [0,4,1,2,3])
        before: y = softmax(x, -1)                                x: [B,h,N,M], conv(x) or conv(y)
        after:  y = reshape(softmax(reshape(x, [B·h,N,M]), -1), [B,h,N,M])"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.softmax, aten._softmax) \
                or not isinstance(val := n.meta.get("val"), torch.Tensor):
            continue
        shape = tuple(val.shape)
        dim = (n.args[1] if len(n.args) > 1 else n.kwargs["dim"]) % len(shape)
        if shape[dim] == 1:  # softmax over one element: 1 everywhere
            with gm.graph.inserting_before(n):
                ones = gm.graph.get_attr(_new_attr(gm, "_edgeconv_softmax_ones", torch.ones(shape)))
            ones.meta["val"] = torch.ones(shape)
            n.replace_all_uses_with(ones)
            gm.graph.erase_node(n)
        elif dim != len(shape) - 1 or (len(shape) == 4 and _beside_a_conv(n, shape)):
            _softmax_on_last_axis(gm, n, shape, dim)
        else:
            continue
        done.append(n.name)
    return done


def _beside_a_conv(n: Node, shape: tuple[int, ...], depth: int = 3) -> bool:
    """Whether a conv reads or writes `n`'s 4-D tensor through ops that keep its shape (talking heads:
    conv → softmax → conv): litert-torch's layout pass then makes it NHWC."""
    def near(k: Node, step: Callable[[Node], list[Node]], left: int) -> bool:
        for m in step(k):
            if m.op != "call_function" or tuple(getattr(m.meta.get("val"), "shape", ())) != shape:
                continue
            if m.target in WEIGHTED or (left > 1 and near(m, step, left - 1)):
                return True
        return False

    return near(n, lambda k: k.all_input_nodes[:1], depth) or near(n, lambda k: list(k.users), depth)


def _softmax_on_last_axis(gm: GraphModule, n: Node, shape: tuple[int, ...], dim: int) -> None:
    perm = [i for i in range(len(shape)) if i != dim] + [dim]
    moved = [shape[i] for i in perm]
    ins = _Inserter(gm, n)
    with gm.graph.inserting_before(n):
        y = n.args[0]
        if dim != len(shape) - 1:
            y = ins.call(aten.permute.default, y, perm)
        if len(moved) == 4:
            y = ins.call(aten.reshape.default, y, [moved[0] * moved[1], *moved[2:]])
        y = ins.call(aten.softmax.int, y, -1)
        if len(moved) == 4:
            y = ins.call(aten.reshape.default, y, moved)
        if dim != len(shape) - 1:
            y = ins.call(aten.permute.default, y, sorted(range(len(shape)), key=perm.__getitem__))
    ins.finish(y)


def unfold_fold_to_convs(gm: GraphModule) -> list[str]:
    """im2col / col2im (`F.unfold` / `F.fold`: VOLO's outlook attention) → depthwise convs with
    one-hot weights: TFLite lowers col2im to a scatter its runtime refuses ("Only update, Add, ...
    are supported for stablehlo.scatter"), coremltools refuses an overlapping one ("stride >=
    kernel_size"), and ONNX writes im2col as float Gathers. A depthwise conv copies each pixel of a
    k×k neighbourhood to its own channel (im2col's channel c·K + i, K = kh·kw); col2im (stride 1)
    shifts each column map back to its offset with one depthwise conv and adds the K maps of a
    channel. The weights are 0 and 1: exact in int8 per channel. (No grouped conv-transpose: TFLite's
    TRANSPOSE_CONV has no groups, and litert-torch leaves one float.)

        before: u = im2col(x, k, d, p, s)              x: [B,C,H,W] → u: [B,C·K,L]
        after:  u = reshape(conv2d(x, E, None, s, p, d, groups=C), [B,C·K,L])            E: [C·K,1,kh,kw]
        before: y = col2im(u, (H,W), k, d, p, 1)       u: [B,C·K,L] → y: [B,C,H,W]
        after:  y = sum(reshape(conv2d(reshape(u, [B,C·K,Lh,Lw]), F, None, 1, (k-1)·d-p, 1, groups=C·K),
                                [B,C,K,H,W]), 2)      F: E flipped, its taps d apart
    A strided col2im (VOLO folds at stride 2) first spreads each column map `stride` apart with zeros
    between (`_spread`). A col2im with a padding past (k-1)·d is left as it is."""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in _targets(aten.im2col, aten.col2im):
            continue
        fold = n.target in _targets(aten.col2im)
        x, *rest = n.args
        _size, (kh, kw), dil, pad, stride = (rest if fold else [None, *rest])
        b, c, h, w = (n.meta["val"] if fold else x.meta["val"]).shape  # the image side
        lh, lw = ((h + 2 * pad[i] - dil[i] * (k - 1) - 1) // stride[i] + 1 for i, k in enumerate((kh, kw)))
        back = [(k - 1) * d - p for k, d, p in zip((kh, kw), dil, pad)]  # col2im's padding as a conv
        if fold and min(back) < 0:
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            if fold:
                cols = ins.call(aten.reshape.default, x, [b, c * kh * kw, lh, lw])
                if tuple(stride) != (1, 1):  # each column map spread `stride` apart, zeros between
                    cols = _spread(ins, cols, [b, c * kh * kw, lh, lw], stride, back, (h, w), pad)
                    conv_pad = [0, 0]
                else:
                    conv_pad = back
                shifted = ins.call(aten.conv2d.default, cols, _onehot(gm, c, kh, kw, dil, flip=True), None,
                                   [1, 1], conv_pad, [1, 1], c * kh * kw)
                out = ins.call(aten.sum.dim_IntList, ins.call(aten.reshape.default, shifted, [b, c, kh * kw, h, w]),
                               [2])
            else:
                conv = ins.call(aten.conv2d.default, x, _onehot(gm, c, kh, kw), None, list(stride), list(pad),
                                list(dil), c)
                out = ins.call(aten.reshape.default, conv, [b, c * kh * kw, lh * lw])
        ins.finish(out)
        done.append(n.name)
    return done


def _spread(ins: "_Inserter", cols: Node, shape: list[int], stride: Any, back: list[int], size: tuple[int, int],
            pad: Any) -> Node:
    """Column maps [B, C·K, Lh, Lw] (`shape`) of a strided col2im with `stride - 1` zeros between their
    pixels, padded so that the depthwise shift gives the image size: left by `back`, right by the rest
    (torch's col2im adds column j at j·s - p + k·d). Each axis is spread at rank ≤ 5: unsqueeze, pad
    the new axis to s, merge, drop the trailing zeros. The zeros are the zero point in int8: exact."""
    shape = list(shape)
    for axis in (3, 2):  # W, then H
        s_, i = stride[axis - 2], axis - 2
        after = [0, 0] * (3 - axis)  # constant_pad_nd lists the last axis first
        if s_ > 1:
            e = ins.call(aten.unsqueeze.default, cols, axis + 1)
            e = ins.call(aten.constant_pad_nd.default, e, after + [0, s_ - 1])
            cols = ins.call(aten.reshape.default, e, shape[:axis] + [shape[axis] * s_] + shape[axis + 1:])
            shape[axis] = (shape[axis] - 1) * s_ + 1
            cols = ins.call(aten.slice.Tensor, cols, axis, 0, shape[axis])
        right = size[i] + pad[i] - shape[axis]
        cols = ins.call(aten.constant_pad_nd.default, cols, after + [back[i], right])
        shape[axis] += back[i] + right
    return cols


CONV_TRANSPOSE2D = _targets(aten.conv_transpose2d)


def conv_transpose_to_conv(gm: GraphModule) -> list[str]:
    """A transposed conv → a conv and a pixel shuffle (sub-pixel form), or — dilated and grouped — a
    conv of its input spread `stride` apart. litert-torch writes an int8 program's transposed conv as a
    float TRANSPOSE_CONV (stride > 1) or CONV_2D (stride 1) inside DEQUANTIZE/QUANTIZE, grouped or not
    (LowFormer's learned upsampling: 21 float ops). Both forms compute the same products and sums,
    so int8 rounds them the same way at the output; exact in float.

    Sub-pixel (dilation 1, one stride s on both axes): output pixel o = i·s - p + k takes kernel taps
    k ≡ o + p (mod s) only, so each of the s² phases r is an ordinary conv of the input with the taps
    of that phase, flipped and padded to M = ceil(k / s): one conv gives every phase as its own
    channel (c·s² + r, pixel shuffle's order), the shuffle interleaves them, a slice drops p.

        before: y = conv_transpose2d(x, W, b, s, p, op, G)           W: [Cin, Cout/G, kh, kw]
        after:  y = slice(pixel_shuffle(conv2d(pad(x, M-1, ·), V, b repeated s², 1, 0, 1, G), s), p, p + out)
                V[(g·Cout/G + o)·s² + r, i, j] = W[g·Cin/G + i, o, r + (M-1-j)·s]   (0 past the kernel)
    Spread (dilation d > 1, groups > 1: TFLite's TRANSPOSE_CONV has no groups):
        after:  y = conv2d(pad(spread(x, s), d·(k-1)-p, d·(k-1)-p+op), flip(W) per group, b, 1, 0, d, G)
    Needs the weight as a constant (post-training: `transform(frozen=True)` runs it); a padding past
    d·(k-1) is left as it is."""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in CONV_TRANSPOSE2D:
            continue
        x, w, bias, stride, pad, out_pad, groups, dil = (list(n.args) + [None, 1, 0, 0, 1, 1][len(n.args) - 2:])[:8]
        stride, pad, out_pad, dil = ([int(v) for v in (_as_list(a) * 2)[:2]] for a in (stride, pad, out_pad, dil))
        wt, val = constant_of(gm, w), x.meta.get("val") if isinstance(x, Node) else None
        bt = constant_of(gm, bias)
        if wt is None or not isinstance(val, torch.Tensor) or val.dim() != 4 or (bias is not None and bt is None):
            continue
        back = [d * (k - 1) - p for d, k, p in zip(dil, wt.shape[2:], pad)]
        subpixel = dil == [1, 1] and stride[0] == stride[1] and min(pad) >= 0
        if not subpixel and (groups == 1 or min(back) < 0):
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            out_hw = list(n.meta["val"].shape[2:])
            if subpixel:
                out = _subpixel(ins, n.name, x, list(val.shape), wt, bt, stride[0], pad, out_hw, groups)
            else:
                cin, cout_g, kh, kw = wt.shape
                flipped = wt.reshape(groups, cin // groups, cout_g, kh, kw).transpose(1, 2).flip(3, 4)
                weight = ins.constant(f"_edgeconv_{n.name}_weight", flipped.reshape(groups * cout_g, cin // groups, kh, kw))
                spread = _spread(ins, x, list(val.shape), stride, back, tuple(out_hw), pad)
                out = ins.call(aten.conv2d.default, spread, weight, bias, [1, 1], [0, 0], dil, groups)
        ins.finish(out)
        done.append(n.name)
    return done


def _subpixel(ins: "_Inserter", name: str, x: Node, shape: list[int], wt: torch.Tensor, bt: torch.Tensor | None,
              s: int, pad: list[int], out_hw: list[int], groups: int) -> Node:
    """`conv_transpose_to_conv`'s sub-pixel form of a transposed conv of `x` (`shape`) with constant
    weight `wt` and bias `bt`, stride `s` on both axes, dilation 1."""
    cin, cout_g, kh, kw = wt.shape
    m = [-(-k // s) for k in (kh, kw)]  # taps per phase, ceil(k / s)
    wg = wt.reshape(groups, cin // groups, cout_g, kh, kw).transpose(1, 2)  # [G, Cout/G, Cin/G, kh, kw]
    v = torch.zeros(groups, cout_g, s, s, cin // groups, m[0], m[1], dtype=wt.dtype)
    for rh in range(s):
        for jh in range(m[0]):
            for rw in range(s):
                for jw in range(m[1]):
                    th, tw = rh + (m[0] - 1 - jh) * s, rw + (m[1] - 1 - jw) * s
                    if th < kh and tw < kw:
                        v[:, :, rh, rw, :, jh, jw] = wg[:, :, :, th, tw]
    weight = ins.constant(f"_edgeconv_{name}_weight", v.reshape(groups * cout_g * s * s, cin // groups, *m))
    b = None if bt is None else ins.constant(f"_edgeconv_{name}_bias", bt.repeat_interleave(s * s))
    phases = [-(-(o + p) // s) for o, p in zip(out_hw, pad)]  # input positions each phase needs, ceil((O + p) / s)
    right = [max(0, q - size) for q, size in zip(phases, shape[2:])]
    padding = [m[1] - 1, right[1], m[0] - 1, right[0]]
    y = ins.call(aten.constant_pad_nd.default, x, padding) if any(padding) else x
    y = ins.call(aten.conv2d.default, y, weight, b, [1, 1], [0, 0], [1, 1], groups)
    if s > 1:
        y = ins.call(aten.pixel_shuffle.default, y, s)
    for axis, (o, p, size, r) in enumerate(zip(out_hw, pad, shape[2:], right), start=2):
        if p or o != (size + r) * s:
            y = ins.call(aten.slice.Tensor, y, axis, p, p + o)
    return y


def _onehot(gm: GraphModule, c: int, kh: int, kw: int, dil: Any = (1, 1), flip: bool = False) -> Node:
    """A get_attr of depthwise weights [C·K, 1, ·, ·] whose channel c·K + i has one tap of 1: at
    (i // kw, i % kw) (im2col's order), or — `flip` — at the opposite corner's offset with taps
    `dil` apart, a kernel (k-1)·d + 1 wide (col2im's shift back)."""
    k = kh * kw
    size = ((kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1) if flip else (kh, kw)
    e = torch.zeros(c * k, 1, *size)
    for i in range(k):
        ki, kj = divmod(i, kw)
        at = ((kh - 1 - ki) * dil[0], (kw - 1 - kj) * dil[1]) if flip else (ki, kj)
        e[i::k, 0, at[0], at[1]] = 1.0
    node = gm.graph.get_attr(_new_attr(gm, "_edgeconv_onehot", e))
    node.meta["val"] = e
    return node


def roll_to_slices(gm: GraphModule) -> list[str]:
    """roll(x, s, d) → cat(slice(x, d, n-s, n), slice(x, d, 0, n-s)) per rolled dim (Swin's shifted
    windows): every converter writes roll that way (torch.onnx: Slice, Slice, Concat per dim), and
    annotated as one shared-scale op its inner tensors had no quantization — ONNX's Concats and the
    second dim's Slices read float. As slices and concats each piece shares the input's scale: exact.

        before: y = roll(x, (-3, -3), (1, 2))                      x: [1, 8, 8, C]
        after:  h = cat(x[:, 3:], x[:, :3], 1);  y = cat(h[:, :, 3:], h[:, :, :3], 2)"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.roll):
            continue
        x, shifts = n.args[0], n.args[1]
        dims = n.args[2] if len(n.args) > 2 else n.kwargs.get("dims", ())
        shifts, dims = _as_list(shifts), _as_list(dims)
        shape = getattr(x.meta.get("val"), "shape", None) if isinstance(x, Node) else None
        if shape is None or not dims or len(shifts) != len(dims) \
                or not all(isinstance(v, int) for v in [*shifts, *dims, *shape]):
            continue  # a flattened roll (no dims) or a symbolic size: left as it is
        ins, y = _Inserter(gm, n), x
        with gm.graph.inserting_before(n):
            for shift, dim in zip(shifts, dims):
                size = shape[dim]
                cut = size - shift % size
                if cut != size:
                    tail, head = ins.call(aten.slice.Tensor, y, dim, cut, size), ins.call(aten.slice.Tensor, y, dim, 0, cut)
                    y = ins.call(aten.cat.default, [tail, head], dim)
        if y is x:
            n.replace_all_uses_with(x)
            gm.graph.erase_node(n)
        else:
            ins.finish(y)
        done.append(n.name)
    return done


def stack_to_cat(gm: GraphModule) -> list[str]:
    """stack(xs, d) → cat([unsqueeze(x, d) for x in xs], d) (SKNet's branches, EfficientViM's
    stacked hidden states): torch.onnx writes stack as exactly that, and annotated as one op the
    Unsqueezes' outputs had no quantization, so the Concat read float. As unsqueezes each shares its
    input's scale and the concat is the int8 concat of one scale the stack had: the same values.

        before: y = stack([a, b], 1)
        after:  y = cat([unsqueeze(a, 1), unsqueeze(b, 1)], 1)"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.stack):
            continue
        xs = n.args[0]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        if not all(isinstance(x, Node) and _is_float(x) for x in xs):
            continue
        rank = xs[0].meta["val"].dim() + 1
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            y = ins.call(aten.cat.default, [ins.call(aten.unsqueeze.default, x, dim % rank) for x in xs], dim % rank)
        ins.finish(y)
        done.append(n.name)
    return done


def repeat_interleave_to_expand(gm: GraphModule) -> list[str]:
    """repeat_interleave(x, r, d) → reshape(expand(unsqueeze(x, d+1), …, r at d+1, …), x's shape with
    d ×r) (GCViT's global query repeated per window): torch.onnx writes exactly these ops, and the
    op, which the annotator has no kernel for, stayed float between them. As relayouts each shares
    its input's scale: exact in int8.

        before: y = repeat_interleave(x, 4, 0)                 x: [2, 3, 16]
        after:  y = reshape(expand(unsqueeze(x, 1), [2, 4, 3, 16]), [8, 3, 16])"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.repeat_interleave):
            continue
        x, repeats = n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("repeats")
        dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim")
        shape = getattr(x.meta.get("val"), "shape", None) if isinstance(x, Node) else None
        if not _is_float(x) or not isinstance(repeats, int) or not isinstance(dim, int) or shape is None \
                or not all(isinstance(v, int) for v in shape):
            continue  # repeats per element (a tensor), a flattened repeat, or a symbolic size: left as it is
        d = dim % len(shape)
        wide = [*shape[:d + 1], repeats, *shape[d + 1:]]
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            y = ins.call(aten.expand.default, ins.call(aten.unsqueeze.default, x, d + 1), wide)
            y = ins.call(aten.reshape.default, y, [*shape[:d], shape[d] * repeats, *shape[d + 1:]])
        ins.finish(y)
        done.append(n.name)
    return done


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


class _Inserter:
    """Builds the nodes that replace `node`: each carries `node`'s source meta (module path, stack)
    and a `val` computed in the graph's fake mode; `finish` reroutes `node`'s users and erases it."""

    def __init__(self, gm: GraphModule, node: Node) -> None:
        self.gm, self.node, self.made = gm, node, []

    def call(self, target: Any, *args: Any) -> Node:
        k = self.gm.graph.call_function(target, args)
        k.meta.update({m: v for m, v in self.node.meta.items() if m != "val"})
        self.made.append(k)
        return k

    def constant(self, base: str, value: float | torch.Tensor, **meta: Any) -> Node:
        t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        k = self.gm.graph.get_attr(_new_attr(self.gm, base, t))
        k.meta.update(val=t, **meta)
        return k

    def finish(self, result: Node, op_type: str | None = None) -> None:
        for k in self.made:
            if op_type is not None:
                k.meta["edgeconv_op_type"] = op_type
        _infer_vals(self.gm, self.made)
        self.node.replace_all_uses_with(result)
        self.gm.graph.erase_node(self.node)


def _infer_vals(gm: GraphModule, nodes: list[Node]) -> None:
    """Fill `meta["val"]` of freshly inserted nodes by running their targets on their inputs'
    values in the graph's fake mode: prepare_pt2e observes an output only where `val` is a
    FakeTensor, so a real tensor there would leave the piece float."""
    from torch._guards import detect_fake_mode

    vals = [n.meta.get("val") for n in gm.graph.nodes]
    mode = detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)])

    def value(a: Any) -> Any:
        if isinstance(a, (list, tuple)):
            return type(a)(value(b) for b in a)  # cat's list of tensors
        if not isinstance(a, Node):
            return a
        v = a.meta.get("val")
        v = v if isinstance(v, torch.Tensor) else constant_of(gm, a)
        # static: a constant's shape is its shape (the mode's shape env would give it symbols, and every
        # shape computed from it after would reach the graph as a raw SymInt)
        return mode.from_tensor(v, static_shapes=True) if mode is not None and not _is_fake(v) else v

    for k in nodes:
        with torch.no_grad(), (mode if mode is not None else contextlib.nullcontext()):
            k.meta["val"] = k.target(*[value(a) for a in k.args])


def _is_fake(v: Any) -> bool:
    from torch._subclasses import FakeTensor

    return isinstance(v, FakeTensor)


def algebra_to_int8_ops(gm: GraphModule) -> list[str]:
    """Spellings of the same value that the int8 builtins lack, rewritten to ones they have
    (hand-written norms: ConvNeXt's channels-first LayerNorm, `(x - u).pow(2)`, `/ torch.sqrt(s + eps)`;
    attention's `/ math.sqrt(d)`):

        pow(x, 2), square(x)   → x · x                 (no int8 POW or SQUARE kernel)
        a / sqrt(b)            → a · rsqrt(b)          (int8 RSQRT and MUL; int8 DIV saturates)
        a / c  (c a number)    → a · (1/c)             (a MUL by an int8 constant)
        a / b  (b > 0)         → (a · rsqrt(b)) · rsqrt(b)
        addcmul(a, b, c)       → a + b · c              (GRN's `addcmul(bias, weight, x · n)`)

    The last needs b proven positive from the graph itself (calib.signs: GRN's `‖x‖ / (mean ‖x‖ + eps)`,
    linear attention's `out / (q·(kᵀ·1) + eps)`); a divisor of unknown sign stays a division (float).
    No format has a usable int8 division: TFLite's int8 DIV saturates (exporters/tflite/lowering.py
    int8_div_in_float), onnxruntime has no QDQ Div kernel, Core ML none. The pieces of a rewritten
    division are tagged op type `div`, so a quant config's `div: null` keeps them float."""
    from edgeconv.calib.signs import Signs

    acts = activations(gm)
    signs = Signs(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts:
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            new = _algebra(n, ins, signs)
        if new is not None:
            old_args = [a for a in n.args if isinstance(a, Node)]
            ins.finish(new, op_type="div" if n.target in DIV else None)
            for a in old_args:  # the sqrt a / sqrt(b) no longer reads
                if not a.users and a.op == "call_function":
                    gm.graph.erase_node(a)
            done.append(n.name)
    return done


def _algebra(n: Node, ins: "_Inserter", signs: Any) -> Node | None:
    a, b = (list(n.args) + [None, None])[:2]
    if n.target in POW and b == 2 or n.target in SQUARE:
        return ins.call(aten.mul.Tensor, a, a)
    if n.target in ADDCMUL and isinstance(a, Node) and len(n.args) == 3:
        y = ins.call(aten.mul.Tensor, b, n.args[2])
        value = n.kwargs.get("value", 1)
        if value != 1:
            y = ins.call(aten.mul.Tensor, y, ins.constant("_edgeconv_scalar", float(value)))
        return ins.call(aten.add.Tensor, a, y)
    if n.target not in DIV or n.kwargs.get("rounding_mode"):
        return None
    if isinstance(b, (int, float)) and b != 0:
        return ins.call(aten.mul.Tensor, a, ins.constant("_edgeconv_reciprocal", 1.0 / b))
    if isinstance(b, Node) and b.target in SQRT and len(b.users) == 1:
        return ins.call(aten.mul.Tensor, a, ins.call(aten.rsqrt.default, b.args[0]))
    if isinstance(a, Node) and isinstance(b, Node) and _is_float(b) and signs.positive(b):
        r = ins.call(aten.rsqrt.default, b)
        if RECIPROCAL_FIRST:
            return ins.call(aten.mul.Tensor, a, ins.call(aten.mul.Tensor, r, r))
        return ins.call(aten.mul.Tensor, ins.call(aten.mul.Tensor, a, r), r)
    return None


# a / b as a · (rsqrt(b) · rsqrt(b)) instead of (a · rsqrt(b)) · rsqrt(b)
RECIPROCAL_FIRST = False


def silu_to_sigmoid_mul(gm: GraphModule) -> list[str]:
    """silu(x) → x · sigmoid(x): litert-torch and torch.onnx both lower SiLU as LOGISTIC then MUL
    with no quantization between (a float island around every EfficientNet/MobileViT activation);
    written out, the sigmoid gets its fixed int8 output (1/256) and the MUL its own scale.

        before: y = silu(x)        after: y = mul(x, sigmoid(x))"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n in acts and n.target in SILU:
            ins = _Inserter(gm, n)
            with gm.graph.inserting_before(n):
                y = ins.call(aten.mul.Tensor, n.args[0], ins.call(aten.sigmoid.default, n.args[0]))
            ins.finish(y, op_type="silu")
            done.append(n.name)
    return done


def scalars_to_constants(gm: GraphModule) -> list[str]:
    """A number operand of ADD/SUB/MUL becomes a constant tensor node, so it is quantized as an int8
    constant like any other (ONNX would otherwise store it as a float initializer of a float Add).
    A tiny one (|c| ≤ EPSILON: an epsilon, below what an int8 activation resolves) goes on the
    other operand's scale (ON_INPUT_SCALE).

        before: y = add(s, 1e-6)        after: y = add(s, c)   with c = tensor(1e-6)"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in SCALAR_BINARY or len(n.args) < 2:
            continue
        a, b = n.args[:2]
        if not (isinstance(a, Node) and isinstance(b, (int, float)) and not isinstance(b, bool)) or not _is_float(a):
            continue
        meta = {ON_INPUT_SCALE: True} if abs(b) <= EPSILON and n.target not in _targets(aten.mul) else {}
        with gm.graph.inserting_before(n):
            c = _Inserter(gm, n).constant("_edgeconv_scalar", float(b), **meta)
        n.target = {aten.add.Scalar: aten.add.Tensor, aten.sub.Scalar: aten.sub.Tensor,
                    aten.mul.Scalar: aten.mul.Tensor}.get(n.target, n.target)
        n.args = (a, c, *n.args[2:])
        done.append(n.name)
    return done


def merge_duplicates(gm: GraphModule) -> list[str]:
    """One node for the same op on the same inputs (`(x - u)` written twice in a hand-written norm):
    the converters merge them into one tensor, so the program's two would leave one without an
    artifact tensor to check it against. A tensor an in-place op changes is never merged: timm
    MViTv2 builds each block's `dist_h` the same way and then adds to it in place (`+=`), so one
    merged tensor took every block's offset (index 27 out of bounds for a table of 27)."""
    mutated = {a for n in gm.graph.nodes if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
               and n.target._schema.is_mutable for a in n.all_input_nodes}
    seen: dict[tuple, Node] = {}
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload) \
                or n.target._schema.is_mutable or "val" not in n.meta or n in mutated:
            continue
        key = (n.target, _hashable(n.args), _hashable(tuple(sorted(n.kwargs.items()))))
        if key in seen:
            n.replace_all_uses_with(seen[key])
            gm.graph.erase_node(n)
            done.append(n.name)
        else:
            seen[key] = n
    return done


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, (int, float, bool)):  # 2 == 2.0 == True in a key, not in an op: arange(8.) is float
        return type(v), v
    if isinstance(v, (Node, str, type(None), torch.dtype, torch.device, torch.memory_format)):
        return v
    return id(v)


SILU = _targets(aten.silu, aten.silu_)
EPSILON = 1e-3
SCALAR_BINARY = _targets(aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar, aten.mul.Tensor,
                         aten.mul.Scalar)
def l2_normalize_to_rsqrt(gm: GraphModule) -> list[str]:
    """F.normalize(x, dim) (cross-covariance attention's q and k, cosine heads) → the same value
    through int8 builtins: no format has an int8 vector norm, and int8 DIV saturates.

        before: y = x / expand(clamp_min(linalg_vector_norm(x, 2, d, keepdim=True), eps))
        after:  y = x · rsqrt(clamp(sum(x·x, d, keepdim=True), eps²))"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in DIV:
            continue
        x, den = n.args[:2]
        norm = _through(den, EXPAND | CLAMP_MIN)
        eps = _clamp_min_of(den)
        if not (isinstance(norm, Node) and norm.target in VECTOR_NORM and norm.args[0] is x
                and (norm.args[1] if len(norm.args) > 1 else 2) == 2):
            continue
        dims = norm.args[2] if len(norm.args) > 2 else norm.kwargs.get("dim")
        keep = norm.args[3] if len(norm.args) > 3 else norm.kwargs.get("keepdim", False)
        if dims is None or not keep:
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            sq = ins.call(aten.sum.dim_IntList, ins.call(aten.mul.Tensor, x, x), list(dims), True)
            if eps:
                sq = ins.call(aten.clamp.default, sq, eps * eps)
            y = ins.call(aten.mul.Tensor, x, ins.call(aten.rsqrt.default, sq))
        ins.finish(y, op_type="normalize")
        done.append(n.name)
    gm.graph.eliminate_dead_code()
    return done


def vector_norm_to_rsqrt(gm: GraphModule) -> list[str]:
    """An L2 norm (GRN's `x.norm(p=2, dim=(1, 2), keepdim=True)`) → the same value through int8
    builtins: no format has an int8 vector norm; TFLite writes it as ABS, MUL, SUM, SQRT, all float
    (its SQRT kernel takes float only). s / √s is √s for s > 0; the clamp (to SUM_FLOOR, far below
    what any int8 tensor resolves) keeps s = 0 at 0 instead of 0 · ∞.

        before: y = linalg_vector_norm(x, 2, d, keepdim)
        after:  s = sum(x·x, d, keepdim); y = s · rsqrt(clamp(s, SUM_FLOOR))"""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.linalg_vector_norm) \
                or not _is_float(n) or n.kwargs.get("dtype") is not None:
            continue
        x = n.args[0]
        order = n.args[1] if len(n.args) > 1 else n.kwargs.get("ord", 2)
        dims = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim")
        keep = n.args[3] if len(n.args) > 3 else n.kwargs.get("keepdim", False)
        if order != 2 or not isinstance(x, Node):
            continue
        dims = list(range(x.meta["val"].dim())) if dims is None else _as_list(dims)
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            sq = ins.call(aten.sum.dim_IntList, ins.call(aten.mul.Tensor, x, x), dims, bool(keep))
            y = ins.call(aten.mul.Tensor, sq, ins.call(aten.rsqrt.default, ins.call(aten.clamp.default, sq, SUM_FLOOR)))
        ins.finish(y, op_type="vector_norm")
        done.append(n.name)
    return done


SUM_FLOOR = 1e-24


def _through(n: Any, targets: frozenset) -> Any:
    while isinstance(n, Node) and n.target in targets:
        n = n.args[0]
    return n


def _clamp_min_of(n: Any) -> float:
    while isinstance(n, Node) and n.target in EXPAND | CLAMP_MIN:
        if n.target in CLAMP_MIN:
            return float(n.args[1]) if len(n.args) > 1 and isinstance(n.args[1], (int, float)) else 0.0
        n = n.args[0]
    return 0.0


def fold_constants(gm: GraphModule, frozen: bool = False) -> list[str]:
    """Values computed from nothing the model holds or reads (positional encodings built with
    arange, sin and cos; masks from shapes) computed once and stored: the converters would otherwise
    write each as float ops run on every inference (EdgeNeXt: SIN, COS, POW, DIV...), and as
    constants they are quantized like any constant operand. Anything reading a parameter or buffer is
    left alone: training (QAT) changes those through this same graph, and BN statistics may move.

    `frozen` (post-training quantization: the parameters are final) also folds what such a created
    tensor flows into together with parameters — EdgeNeXt's Fourier encoding through its 1×1
    projection conv, which no int8 kernel takes (a conv of a constant input is not a layer) — and
    arithmetic on parameters alone that an activation op reads as an operand: EfficientViM's
    `weights.softmax(-1)` head weights, a relative-position bias gathered from its table. Left as
    ops, TFLite's converter quantized that softmax with the multiply's scale (a file that does not
    load) and the others stayed float ops. Not folded: a value in a conv's or linear's weight or
    bias slot (the quantizer sees the weight as the model computes it), and a parameter only
    re-laid out (a layer scale's view keeps the parameter's name in the reports)."""
    acts = activations(gm)
    values: dict[Node, Any] = {}
    created: set[Node] = set()  # tensors made in forward from shapes, and values computed from them
    for n in gm.graph.nodes:
        if frozen and n.op == "get_attr" and isinstance(v := constant_of(gm, n), torch.Tensor):
            values[n] = v
        elif n.op == "call_function" and n.target is operator.getitem and n.args[0] in values:
            values[n] = values[n.args[0]][n.args[1]]  # a piece of a list-valued op (meshgrid, split)
            if n.args[0] in created:
                created.add(n)
        elif n.op == "call_function" and n not in acts and isinstance(n.target, torch._ops.OpOverload) \
                and (not _mutates(n) or _updates_its_own(n)) and all(a in values for a in n.all_input_nodes):
            args = _substitute(n.args, values)
            if _mutates(n):  # on a copy: the value computed before stays what it was
                args = (args[0].clone(), *args[1:])
            try:
                with torch.no_grad():
                    values[n] = n.target(*args, **_substitute(n.kwargs, values))
            except Exception:  # noqa: BLE001 — an op that cannot run eagerly here simply stays
                continue
            if not n.all_input_nodes or any(a in created for a in n.all_input_nodes):
                created.add(n)
    done = []
    for n, v in values.items():
        if n.op != "call_function" or not isinstance(v, torch.Tensor) or not v.dtype.is_floating_point \
                or not any(u in acts for u in n.users) \
                or (_reads_parameters(n) and n not in created
                    and (not frozen or _in_weight_slot(n) or _relaid_parameter(n))):
            continue
        with gm.graph.inserting_before(n):
            c = gm.graph.get_attr(_new_attr(gm, "_edgeconv_folded", v))
        c.meta["val"] = v
        n.replace_all_uses_with(c)
        done.append(n.name)
    if done:  # what computed a folded value goes, its in-place updates and metadata asserts too
        gm.graph.eliminate_dead_code(is_impure_node=lambda m: m.is_impure() and m not in values)
    return done


def _in_weight_slot(n: Node) -> bool:
    """Whether a conv, conv-transpose or linear reads `n` as its weight or bias."""
    return any(u.target in WEIGHTED | TRANSPOSED and n in u.args[1:3] for u in n.users)


def _relaid_parameter(n: Node) -> bool:
    """Whether `n` is a parameter or buffer only viewed, indexed or broadcast (no arithmetic)."""
    while n.op == "call_function" and n.target in RELAYOUT:
        n = n.args[0]
    return n.op == "get_attr"


def _reads_parameters(n: Node) -> bool:
    """Whether a constant value depends on a get_attr (a parameter or buffer)."""
    todo, seen = list(n.all_input_nodes), set()
    while todo:
        a = todo.pop()
        if a in seen:
            continue
        seen.add(a)
        if a.op == "get_attr":
            return True
        todo.extend(a.all_input_nodes)
    return False


def _mutates(n: Node) -> bool:
    return not isinstance(n.target, torch._ops.OpOverload) or n.target._schema.is_mutable


def _updates_its_own(n: Node) -> bool:
    """Whether `n` is an in-place op (`dist += k - 1`, timm MViTv2's relative-position index) that
    writes only its first argument, a tensor computed in the graph that nothing else reads: its value
    is the op on a copy, and no other node sees the write. A write to a parameter or an input is not."""
    args = n.target._schema.arguments if isinstance(n.target, torch._ops.OpOverload) else []
    writes = [i for i, a in enumerate(args) if a.alias_info is not None and a.alias_info.is_write]
    x = n.args[0] if n.args else None
    return writes == [0] and isinstance(x, Node) and x.op == "call_function" and list(x.users) == [n]


def _substitute(v: Any, values: dict) -> Any:
    if isinstance(v, Node):
        return values[v]
    if isinstance(v, (list, tuple)):
        return type(v)(_substitute(x, values) for x in v)
    if isinstance(v, dict):
        return {k: _substitute(x, values) for k, x in v.items()}
    return v


WEIGHTED = _targets(aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution, aten.linear)
TRANSPOSED = _targets(aten.conv_transpose1d, aten.conv_transpose2d)
RELAYOUT = _targets(aten.view, aten.reshape, aten._unsafe_view, aten.unsqueeze, aten.squeeze, aten.flatten,
                    aten.permute, aten.transpose, aten.expand, aten.select, aten.slice, aten.clone, aten.contiguous)
VECTOR_NORM = _targets(aten.linalg_vector_norm, aten.norm)
EXPAND = _targets(aten.expand, aten.expand_as)
CLAMP_MIN = _targets(aten.clamp_min, aten.clamp)
POW = _targets(aten.pow.Tensor_Scalar)
SQUARE = _targets(aten.square)
DIV = _targets(aten.div.Tensor, aten.div.Scalar)
SQRT = _targets(aten.sqrt)
ADDCMUL = _targets(aten.addcmul)


# Reductions of one element per output (over axes of size 1): the value itself.
REDUCTIONS = _targets(aten.mean, aten.sum, aten.amax, aten.amin)
# Relayouts that keep every element exactly once (no slicing, no broadcast): an elementwise op commutes
# with them. litert-torch writes each as a RESHAPE or TRANSPOSE, or folds it into one (a transpose that
# only moves an axis of size 1 is a RESHAPE).
BIJECTIVE = _targets(aten.view, aten.reshape, aten._unsafe_view, aten.flatten, aten.unflatten, aten.squeeze,
                     aten.unsqueeze, aten.permute, aten.transpose, aten.t, aten.clone, aten.contiguous, aten.alias)
SELF_BINARY = _targets(aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.maximum,
                       aten.minimum)


def single_element_reductions(gm: GraphModule) -> list[str]:
    """A mean / sum / max / min over axes of size 1 (CSATv2's `nn.LayerNorm(1)` on a one-channel
    map, its mean and variance) is its input, squeezed unless keepdim. litert-torch writes it as a
    RESHAPE, which an int8 file must keep on one scale; given its own, the converter refused the file.

        before: m = mean(x, [-1], keepdim=True)      x: [B, N, 1]
        after:  m = x                                  (keepdim=False: squeeze(x, [-1]))"""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in REDUCTIONS or n.kwargs.get("dtype") is not None:
            continue
        dims = _reduced_dims(n)
        x = n.args[0]
        if dims is None or not isinstance(x, Node) or not isinstance(val := n.meta.get("val"), torch.Tensor) \
                or not isinstance(got := x.meta.get("val"), torch.Tensor) or got.dtype != val.dtype \
                or any(got.shape[d] != 1 for d in dims):
            continue
        if tuple(val.shape) == tuple(got.shape):
            n.replace_all_uses_with(x)
            gm.graph.erase_node(n)
        else:
            n.target, n.args, n.kwargs = aten.squeeze.dims, (x, [d % got.dim() for d in dims]), {}
        done.append(n.name)
    return done


def _reduced_dims(n: Node) -> list[int] | None:
    """The axes a reduction runs over (every axis when none are named), or None for an overload
    that takes no dims (sum.dtype...)."""
    x = n.args[0]
    rank = x.meta["val"].dim() if isinstance(x, Node) and isinstance(x.meta.get("val"), torch.Tensor) else None
    if rank is None:
        return None
    dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", ())
    if isinstance(dims, int):
        dims = [dims]
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) for d in dims):
        return None
    return list(dims) if dims else list(range(rank))


def self_binary_before_relayouts(gm: GraphModule) -> list[str]:
    """An elementwise op on two copies of one relaid tensor (`x·x` or `x − x` after a reshape,
    flatten, transpose) computed before the relayout. litert-torch's converter moves such a
    RESHAPE after the op itself and gives the moved RESHAPE the op's output scale on its input's:
    "'tfl.reshape' op quantization parameters violate the same scale constraint" (CSATv2's
    LayerNorm(1) after `x.flatten(2).transpose(1, 2)`: x − mean(x) is x − x there). Same values.

        before: t = transpose(flatten(x, 2), 1, 2); y = mul(t, t)
        after:  y = transpose(flatten(mul(x, x), 2), 1, 2)"""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in SELF_BINARY or n.kwargs or len(n.args) != 2 \
                or n.args[0] is not n.args[1] or not isinstance(n.args[0], Node):
            continue
        chain, root = [], n.args[0]
        while root.op == "call_function" and root.target in BIJECTIVE and not root.kwargs \
                and isinstance(root.args[0], Node):
            chain.append(root)
            root = root.args[0]
        if not chain or not _is_float(root):
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            y = ins.call(n.target, root, root)
            for r in reversed(chain):
                y = ins.call(r.target, y, *r.args[1:])
        ins.finish(y)
        for r in chain:  # the relayouts only the op read
            if not r.users:
                gm.graph.erase_node(r)
        done.append(n.name)
    return done


CASTS = _targets(aten.to, aten._to_copy, aten.type_as)


def linear_on_one_row(gm: GraphModule) -> list[str]:
    """A linear on a tensor holding one row (`[1, 1, 1, C]`: ConvNeXt-style pointwise layers on a 1×1
    map, CSATv2's last stage at 64²) computed on its 2-D view. litert-torch writes such a linear as
    FULLY_CONNECTED with keep_num_dims=False but a 4-D output shape: the runtime makes it [1, C'],
    and a reduction over axis 3 after it (GRN's channel mean) is refused ("Invalid axis index").

        before: y = linear(x, w, b)                             x: [1, 1, 1, C]
        after:  y = reshape(linear(reshape(x, [1, C]), w, b), [1, 1, 1, C'])

    Rank 4 and up only: a rank-3 one-row linear (a class token's MLP: CaiT, XCiT, VOLO) converts and
    loads as it is, and rewritten it put XCiT's `cls_attn_blocks.1.mlp.fc1` 5 steps from the
    simulation in TFLite (cause not found)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or n.target not in _targets(aten.linear) \
                or not isinstance(n.args[0], Node) or not _is_float(n.args[0]):
            continue
        shape, out = list(n.args[0].meta["val"].shape), list(n.meta["val"].shape)
        if len(shape) < 4 or any(d != 1 for d in shape[:-1]):
            continue
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            flat = ins.call(aten.reshape.default, n.args[0], [1, shape[-1]])
            y = ins.call(aten.reshape.default, ins.call(aten.linear.default, flat, *n.args[1:]), out)
        ins.finish(y)
        done.append(n.name)
    return done


AUTOCAST = torch.ops.higher_order.wrap_with_autocast


def inline_disabled_autocast(gm: GraphModule) -> list[str]:
    """A region the model runs under `torch.autocast(..., enabled=False)` (EfficientViT's LiteMLA
    attention: to keep it float32 under mixed precision) inlined: in a float32 program it computes
    what its ops do anyway. torch.export keeps it as a `wrap_with_autocast` call of a submodule,
    which no rewrite and not the annotator look into: its matmuls, pad, slices and division stayed
    float in every format (EfficientViT-B0 onnx-int8: 28 float ops). An enabled region (another
    dtype) is left as it is.

        before: out = wrap_with_autocast("cpu", bf16, False, False, submod, q, k, v)[0]
        after:  out = <submod's ops on q, k, v>"""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target is not AUTOCAST or n.args[2] \
                or not all(u.target is operator.getitem for u in n.users):
            continue
        body = getattr(gm, n.args[4].target)
        if any(m.op not in ("placeholder", "call_function", "output") for m in body.graph.nodes):
            continue  # constants or nested modules of its own: not worth the bookkeeping
        env = dict(zip([m for m in body.graph.nodes if m.op == "placeholder"], n.args[5:], strict=False))
        with gm.graph.inserting_before(n):
            for m in body.graph.nodes:
                if m.op == "call_function":
                    env[m] = gm.graph.node_copy(m, env.__getitem__)
                elif m.op == "output":
                    outs = [env[o] if isinstance(o, Node) else o for o in m.args[0]]
        for u in list(n.users):
            u.replace_all_uses_with(outs[u.args[1]])
            gm.graph.erase_node(u)
        sub = n.args[4]
        gm.graph.erase_node(n)
        if not sub.users:
            gm.graph.erase_node(sub)
            delattr(gm, sub.target)
        done.append(n.name)
    return done


def in_place_to_functional(gm: GraphModule) -> list[str]:
    """An in-place op that writes only its first argument, a new tensor computed in the graph (not
    a view: `_fresh`) that nothing else reads (`_updates_its_own`), is its functional op: the same
    value, and no node sees the write. Every rule after it (constant operands, scalars, signs,
    fusing) names ops by their functional spelling; left in place, timm CSATv2's `x.mul(std).add_(mean)` kept its buffer operand
    unquantized, and onnx-int8 wrote a float Add of the DequantizeLinear output and the float table.

        before: y = add_(mul(x, s), m)        after: y = add(mul(x, s), m)"""
    done = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload) \
                or not n.target._schema.is_mutable or not _updates_its_own(n) or not _fresh(n.args[0]) \
                or not _one_dtype(n):
            continue
        f = _functional(n.target)
        if f is not None:
            n.target = f
            done.append(n.name)
    return done


def _fresh(x: Node) -> bool:
    """Whether `x` is a new tensor, not a view or an in-place result of another: a write to a view
    writes its base (QAT's `running_mean.mul_(1 - m).add_(m · mean)`: the add, made functional, left
    the BatchNorm's statistics unchanged)."""
    return isinstance(x.target, torch._ops.OpOverload) and not any(r.alias_info is not None
                                                                 for r in x.target._schema.returns)


def _one_dtype(n: Node) -> bool:
    """Whether every tensor `n` reads has its output's dtype: an in-place op casts its result to its
    first argument's dtype, the functional one promotes (a float16 tensor plus a float32 one)."""
    out = n.meta.get("val")
    vals = [a.meta.get("val") for a in n.all_input_nodes]
    return isinstance(out, torch.Tensor) and all(isinstance(v, torch.Tensor) and v.dtype == out.dtype for v in vals)


def _functional(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """The functional overload of in-place `op` (`aten.add_.Tensor` → `aten.add.Tensor`): the same
    arguments, none written; None where there is none."""
    name = op._schema.name.split("::")[-1]
    if not name.endswith("_") or name.endswith("__"):
        return None
    packet = getattr(aten, name[:-1], None)
    f = getattr(packet, op._overloadname, None) if packet is not None else None
    if not isinstance(f, torch._ops.OpOverload) or f._schema.is_mutable:
        return None
    args, fargs = op._schema.arguments, f._schema.arguments
    same = len(args) == len(fargs) and all(
        a.name == b.name and a.type == b.type and a.kwarg_only == b.kwarg_only for a, b in zip(args, fargs))
    return f if same else None


def drop_noop_casts(gm: GraphModule) -> list[str]:
    """A cast to the dtype (and device) its input already has is the input itself (timm EVA's RoPE:
    `cat([q[:, :, :1], rope(q[:, :, 1:])]).type_as(v)`, `.float()`). Left in, the annotator gave the
    float→float copy a quantize of its own; the converters drop the copy, and litert-torch then
    refused the concatenation it fed ("quantization parameters violate the same scale constraint").

        before: y = cat([a, to(b, float32)])                       b: float32
        after:  y = cat([a, b])"""
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in CASTS or not n.args or not isinstance(n.args[0], Node):
            continue
        x, got, want = n.args[0], n.args[0].meta.get("val"), n.meta.get("val")
        if not (isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)):
            continue
        if (got.dtype, got.device, tuple(got.shape)) != (want.dtype, want.device, tuple(want.shape)) \
                or n.kwargs.get("memory_format") not in (None, torch.preserve_format):
            continue
        n.replace_all_uses_with(x)
        gm.graph.erase_node(n)
        done.append(n.name)
    return done


LSTM = _targets(aten.lstm.input)
# Unrolled steps (layers × directions × sequence length, all LSTMs of a program) beyond which the
# LSTMs stay float: the int8 export's cost grows faster than the unrolled program (lstm_to_primitives).
LSTM_MAX_STEPS = 128
ZEROS = _targets(aten.zeros, aten.zeros_like, aten.new_zeros)


def _zero_state(gm: GraphModule, n: Any) -> bool:
    if isinstance(n, Node) and n.op == "call_function" and n.target in ZEROS:
        return True
    t = constant_of(gm, n)
    return t is not None and not bool(t.any())


def lstm_to_primitives(gm: GraphModule) -> list[str]:
    """An LSTM (`aten.lstm`, one op that no annotator enters: Sequencer's LSTM2d kept 1080 float ops
    in onnx-int8, and the converters expanded it in float themselves) → its recurrence, unrolled over
    the (static) sequence, in ops every format has an int8 kernel for. Made small: one input
    projection for every step of a direction (b_ih + b_hh folded into its bias), then per step only
    the recurrent product and the gates, activated whole and split by slices (PyTorch's i, f, g, o
    order); the reverse direction reads the steps backwards; one concat and one reshape per layer
    gather every step's output.

        before: y, h_n, c_n = lstm(x, [h0, c0], [W_ih, W_hh, b_ih, b_hh, ...], ...)     x: [B, T, I]
        after:  p = linear(x, W_ih, b_ih + b_hh)                           [B, T, 4H], once per direction
                per step t:  z = select(p, 1, t) + linear(h, W_hh)          (z = select(p, 1, t) at t = 0, h0 = 0)
                             s = sigmoid(z); u = tanh(z)
                             c = s[H:2H]·c + s[:H]·u[2H:3H];  h = s[3H:]·tanh(c)
                y = reshape(cat([h_f(0), h_b(0), h_f(1), h_b(1), ...], -1), [B, T, D·H])

    Same values in float (to rounding). Needs the weights as constants (post-training:
    `transform(frozen=True)` runs it); a projection (`proj_size`) or training-mode dropout is left
    as it is. A program whose LSTMs unroll to more than LSTM_MAX_STEPS steps in all keeps them as
    they are (float ops, named as such): each step is ~25 nodes once quantized, and Sequencer2D-S
    at 64² (~650 steps, 6000 nodes) did not finish its onnx-int8 export in 25 min (torch.export's
    re-captures, observer insertion and torch.onnx all grow faster than the node count)."""
    todo = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in LSTM or n.kwargs:
            continue
        x, hx, params, has_biases, layers, _dropout, train, bidirectional, batch_first = n.args
        dirs = 2 if bidirectional else 1
        per = 4 if has_biases else 2
        val = x.meta.get("val") if isinstance(x, Node) else None
        if train or len(params) != layers * dirs * per or not isinstance(val, torch.Tensor) or val.dim() != 3 \
                or any(u.target is not operator.getitem for u in n.users):
            continue
        weights = [constant_of(gm, p) for p in params]
        if all(w is not None for w in weights):
            todo.append((n, weights, layers * dirs * val.shape[1 if batch_first else 0]))
    if sum(steps for _, _, steps in todo) > LSTM_MAX_STEPS:
        return []
    done = []
    for n, weights, _ in todo:
        ins = _Inserter(gm, n)
        with gm.graph.inserting_before(n):
            y, h_n, c_n = _lstm_layers(gm, ins, n, weights)
        _infer_vals(gm, ins.made)
        for u in list(n.users):
            got = (y, h_n, c_n)[u.args[1]]
            if isinstance(got, list):  # the final states: [L·D, B, H]
                with gm.graph.inserting_before(u):
                    got = ins.call(aten.cat.default, got, 0)
                _infer_vals(gm, [got])
            u.replace_all_uses_with(got)
            gm.graph.erase_node(u)
        gm.graph.erase_node(n)
        done.append(n.name)
    return done


def _lstm_layers(gm: GraphModule, ins: "_Inserter", n: Node, weights: list) -> tuple:
    """Builds every layer of `lstm_to_primitives` for the lstm node `n` (its parameters' values:
    `weights`); returns the output and the final h, c (lists of [1, B, H] pieces for a concat, built
    only when read)."""
    x, hx, params, has_biases, layers, _dropout, _train, bidirectional, batch_first = n.args
    dirs, per, val = 2 if bidirectional else 1, 4 if has_biases else 2, x.meta["val"]
    steps = val.shape[1] if batch_first else val.shape[0]
    batch = val.shape[0] if batch_first else val.shape[1]
    t_dim = 1 if batch_first else 0
    h0, c0 = hx
    last_h, last_c = [], []
    wants = {u.args[1] for u in n.users}
    for layer in range(layers):
        outs: list[list[Node]] = [[None] * dirs for _ in range(steps)]
        for d in range(dirs):
            k = (layer * dirs + d) * per
            w_ih, w_hh = params[k], params[k + 1]
            hidden = weights[k + 1].shape[1]
            bias = None
            if per == 4:
                bias = ins.constant(f"_edgeconv_{n.name}_bias", weights[k + 2] + weights[k + 3])
            proj = ins.call(aten.linear.default, x, w_ih, bias)
            h = c = None
            if not _zero_state(gm, h0):
                h = ins.call(aten.select.int, h0, 0, layer * dirs + d)
            if not _zero_state(gm, c0):
                c = ins.call(aten.select.int, c0, 0, layer * dirs + d)
            for t in (range(steps) if d == 0 else range(steps - 1, -1, -1)):
                z = ins.call(aten.select.int, proj, t_dim, t)
                if h is not None:
                    z = ins.call(aten.add.Tensor, z, ins.call(aten.linear.default, h, w_hh))
                s, u = ins.call(aten.sigmoid.default, z), ins.call(aten.tanh.default, z)
                gate = [ins.call(aten.slice.Tensor, s if g != 2 else u, -1, g * hidden, (g + 1) * hidden)
                        for g in range(4)]
                new = ins.call(aten.mul.Tensor, gate[0], gate[2])
                c = new if c is None else ins.call(aten.add.Tensor, ins.call(aten.mul.Tensor, gate[1], c), new)
                h = ins.call(aten.mul.Tensor, gate[3], ins.call(aten.tanh.default, c))
                outs[t][d] = h
            if 1 in wants:
                last_h.append(ins.call(aten.unsqueeze.default, h, 0))
            if 2 in wants:
                last_c.append(ins.call(aten.unsqueeze.default, c, 0))
        x = ins.call(aten.reshape.default, ins.call(aten.cat.default, [h for hs in outs for h in hs], -1),
                     [batch, steps, dirs * hidden])
        if not batch_first:
            x = ins.call(aten.permute.default, x, [1, 0, 2])
    return x, last_h, last_c


REWRITES: tuple[Callable[[GraphModule], list[str]], ...] = (
    inline_disabled_autocast, drop_noop_casts, fold_constants, batch_norm_to_depthwise, hardsigmoid_to_relu6,
    layer_norm_to_primitives, variance_to_primitives, long_means_in_two, avg_pool_without_pad_count,
    resizes_to_linear_maps, sdpa_to_primitives, einsum_to_matmul, unbind_to_select, unfold_fold_to_convs,
    softmax_to_last_axis, roll_to_slices, stack_to_cat, repeat_interleave_to_expand, l2_normalize_to_rsqrt,
    algebra_to_int8_ops, vector_norm_to_rsqrt, silu_to_sigmoid_mul, scalars_to_constants, merge_duplicates,
    single_element_reductions, linear_on_one_row, self_binary_before_relayouts)


def transform(gm: GraphModule, frozen: bool = False) -> GraphModule:
    """Every rewrite, in order. `frozen`: the parameters are final (post-training quantization),
    so constants may be folded through them (`fold_constants`)."""
    changed = bool(in_place_to_functional(gm)) | bool(one_element_norms_to_bias(gm))
    if frozen:
        changed |= bool(fold_constants(gm, frozen)) | bool(conv_transpose_to_conv(gm)) | bool(lstm_to_primitives(gm))
    for rewrite in REWRITES:
        changed |= bool(rewrite(gm))
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
