"""edgeconv's PT2E annotator: every activation edge of a conv net quantized the way integer
kernels need it, so the lowered artifacts are full-integer and the simulation is what they run.

litert-torch's own annotators find ops through `get_source_partitions`, which groups nodes by
their source function: in a non-strict `torch.export` capture all residual `x + y` of a stage
share one partition, only its first output node is annotated, and the others stay float (a
MobileNetV2 then lowers 9 of its 10 ADDs as DEQUANTIZE → float ADD → QUANTIZE). This module walks
the graph node by node instead, by aten target:

- conv / linear: int8 input, per-channel (or per-tensor) symmetric weight, float bias (every
  lowering makes it int32 with scale s_in·s_w); output int8, or — when a single ReLU/ReLU6/clamp
  follows — no output of its own: the activation carries it (fused activation, as the kernels do);
- scale-preserving ops (pad, max/avg pooling, reshape/flatten/permute/transpose/squeeze/slice/
  split, nearest and bilinear upsampling): output shares the input's scale and zero point — TFLite
  requires it (PAD, CONCATENATION, pooling, RESHAPE, RESIZE_*) and it makes them exact in every format;
- concat: every input and the output share one scale (the producers' observers are merged);
- ops with their own output range (add, sub, mul incl. activation × activation, hard-swish, GELU,
  SiLU, mean, matmul, layer norm): every float input int8, output int8;
- fixed-range ops: sigmoid and softmax output (1/256, −128), tanh (1/128, 0) — TFLite's LOGISTIC/
  SOFTMAX/TANH int8 kernels define their output that way;
- an input edge from a quantized producer reuses the producer's quantization exactly (one
  tensor, one scale: no requantization between them).

`transform_for_annotation` first rewrites ops no int8 kernel computes as such:
  before: y = batch_norm(x, γ, β, μ, σ²)          (standalone BN: after a concat, add or pool)
  after:  y = conv2d(x, w=γ/√(σ²+ε) as [C,1,1,1], b=β−μ·w, groups=C)   (depthwise 1×1: per-channel int8)
  before: y = hardsigmoid(x)
  after:  y = hardtanh(x + 3, 0, 6) * (1/6)        (ADD with fused ReLU6, MUL: both int8)
Ops not listed stay unannotated: float in every format, and the manifest names them.
"""
from __future__ import annotations

import contextlib
import functools
import operator
from typing import Any, Callable, Iterable

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import (FixedQParamsQuantizationSpec, QuantizationAnnotation,
                                                 SharedQuantizationSpec)

KEY = "quantization_annotation"
aten = torch.ops.aten


def _targets(*ops: Any) -> frozenset:
    out = set()
    for op in ops:
        if isinstance(op, torch._ops.OpOverloadPacket):
            out.update(getattr(op, o) for o in op.overloads())
        else:
            out.add(op)
    return frozenset(out)


WEIGHTED = _targets(aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution, aten.linear)
TRANSPOSED = _targets(aten.conv_transpose1d, aten.conv_transpose2d)
# A clamp to [0, x] right after a conv/linear/add runs inside that op's integer kernel.
FUSABLE = _targets(aten.relu, aten.relu_, aten.hardtanh, aten.hardtanh_, aten.relu6)
SHARED = _targets(
    aten.pad, aten.constant_pad_nd, aten.max_pool1d, aten.max_pool2d, aten.avg_pool1d, aten.avg_pool2d,
    aten.adaptive_avg_pool2d, aten.adaptive_max_pool2d,
    aten.view, aten.reshape, aten.flatten, aten.unflatten, aten.permute, aten.transpose, aten.squeeze,
    aten.unsqueeze, aten.contiguous, aten.clone, aten.dropout, aten.alias, aten.slice, aten.select,
    aten.narrow, aten.t, aten.pixel_shuffle, aten.pixel_unshuffle, aten.upsample_nearest2d,
    aten.upsample_nearest1d, aten.expand, aten.expand_as, aten.flip, aten.roll, aten.max_pool2d_with_indices,
    # Bilinear too: a convex combination stays in its input's range, and TFLite's RESIZE_BILINEAR int8
    # has one scale for input and output — given its own output scale, the converter re-quantized the
    # producer (MobileViT's conv_1x1 before its 7→8 resize) straight to the resize's narrower range,
    # clipping it: 26 steps off the simulation in isolation.
    aten.upsample_bilinear2d)
SPLITS = _targets(aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.tensor_split)
CONCAT = _targets(aten.cat, aten.concat, aten.stack)
OWN = _targets(
    aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.hardswish, aten.hardswish_,
    aten.gelu, aten.silu, aten.silu_, aten.leaky_relu, aten.elu, aten.mean, aten.sum, aten.matmul,
    aten.bmm, aten.mm, aten.layer_norm, aten.rsqrt, aten.relu, aten.relu_, aten.hardtanh,
    aten.hardtanh_, aten.relu6, aten.clamp, aten.abs, aten.neg, aten.square, aten.max, aten.min,
    aten.maximum, aten.minimum, aten.amax)
FIXED = {**{t: (1 / 256, -128) for t in _targets(aten.sigmoid, aten.sigmoid_, aten.softmax, aten._softmax)},
         **{t: (1 / 128, 0) for t in _targets(aten.tanh, aten.tanh_)}}
# Binary ops whose constant operand is quantized as an int8 constant (a broadcast scalar or vector).
CONST_OPERAND = _targets(aten.add, aten.sub, aten.mul)
FUSING = WEIGHTED | TRANSPOSED | _targets(aten.add, aten.sub)
# Meta flag on a constant operand that always lies inside its op's output range: quantized on the
# output's scale rather than its own.
ON_OUTPUT_SCALE = "edgeconv_on_output_scale"


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


class Annotator:
    """One walk over the graph, in topological order, with the config's specs."""

    def __init__(self, gm: GraphModule, config: Any, skip: Callable[[Node], bool] | None = None) -> None:
        self.gm, self.act_spec, self.w_spec = gm, config.input_activation, config.weight
        self.skip = skip or (lambda n: False)
        self.acts = activations(gm)

    # -- specs ------------------------------------------------------------------------------
    def out_spec(self, n: Node) -> Any:
        ann = n.meta.get(KEY)
        return ann.output_qspec if ann is not None else None

    def in_spec(self, p: Node) -> Any:
        """Quantization of the edge from producer `p`: `p`'s own if it has one (same tensor, same
        scale — no requantization), else a fresh int8 observer."""
        return SharedQuantizationSpec(p) if self.out_spec(p) is not None else self.act_spec

    def fused_into(self, n: Node) -> Node | None:
        """The clamp that carries `n`'s output when it is `n`'s only user."""
        users = list(n.users)
        if len(users) == 1 and users[0].op == "call_function" and users[0].target in FUSABLE \
                and users[0].args[0] is n and not self.skip(users[0]) and _relu_like(users[0]):
            return users[0]
        return None

    def float_args(self, n: Node) -> list[Node]:
        args = list(n.args[0]) if n.target in CONCAT else list(n.args)
        return [a for a in args if isinstance(a, Node) and a in self.acts and _is_float(a)]

    def set(self, n: Node, inputs: dict, output: Any) -> None:
        n.meta[KEY] = QuantizationAnnotation(input_qspec_map=inputs, output_qspec=output, _annotated=True)

    # -- the walk ---------------------------------------------------------------------------
    def run(self) -> None:
        for n in list(self.gm.graph.nodes):
            if n.op != "call_function" or n not in self.acts or self.skip(n):
                continue
            ann = n.meta.get(KEY)
            if ann is not None and ann._annotated:
                continue
            t = n.target
            if t in WEIGHTED or t in TRANSPOSED:
                self.weighted(n)
            elif t in FUSABLE and self._is_fused(n):
                self.set(n, {}, self.act_spec)
            elif t in SHARED:
                self.shared(n)
            elif t is operator.getitem:
                self.getitem(n)
            elif t in SPLITS:
                src = n.args[0]
                if isinstance(src, Node) and _is_float(src) or _is_float_list(n):
                    self.set(n, {src: self.in_spec(src)}, None)
            elif t in CONCAT:
                self.concat(n)
            elif t in FIXED:
                self.fixed(n)
            elif t in OWN:
                self.own(n)

    def _is_fused(self, n: Node) -> bool:
        p = n.args[0]
        return isinstance(p, Node) and p.op == "call_function" and p.target in FUSING \
            and self.fused_into(p) is n and p.meta.get(KEY) is not None

    def weighted(self, n: Node) -> None:
        x, w = n.args[0], n.args[1]
        if not (isinstance(x, Node) and _is_float(x)) or not isinstance(w, Node) or w in self.acts:
            return  # a weight computed from the input (dynamic conv) is not a weight: leave it float
        w_spec = self.w_spec
        if n.target in TRANSPOSED and w_spec.qscheme == torch.per_channel_symmetric:
            import dataclasses

            w_spec = dataclasses.replace(w_spec, ch_axis=1)  # [Cin, Cout/groups, ...]
        out = None if self.fused_into(n) is not None else self.act_spec
        self.set(n, {x: self.in_spec(x), w: w_spec}, out)

    def shared(self, n: Node) -> None:
        x = n.args[0]
        if not (isinstance(x, Node) and x in self.acts and _is_float(x)) or not _is_float(n):
            return
        self.set(n, {x: self.in_spec(x)}, SharedQuantizationSpec((x, n)))

    def getitem(self, n: Node) -> None:
        src = n.args[0]
        if not isinstance(src, Node) or not _is_float(n):
            return
        ann = src.meta.get(KEY)
        if src.target in SPLITS and ann is not None and ann.input_qspec_map:
            (x,) = ann.input_qspec_map
            self.set(n, {}, SharedQuantizationSpec((x, src)))

    def concat(self, n: Node) -> None:
        xs = [x for x in n.args[0] if isinstance(x, Node)]
        if not xs or not all(_is_float(x) and x in self.acts for x in xs):
            return
        first = xs[0]
        share = SharedQuantizationSpec((first, n))
        inputs = {first: self.in_spec(first)}
        for x in xs[1:]:
            inputs[x] = share
        self.set(n, inputs, share)

    def fixed(self, n: Node) -> None:
        x = n.args[0]
        if not (isinstance(x, Node) and _is_float(x)):
            return
        scale, zp = FIXED[n.target]
        spec = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=scale, zero_point=zp, quant_min=-128,
                                            quant_max=127, qscheme=torch.per_tensor_affine)
        self.set(n, {x: self.in_spec(x)}, spec)

    def own(self, n: Node) -> None:
        if not _is_float(n):
            return
        inputs = {x: self.in_spec(x) for x in self.float_args(n)}
        if not inputs:
            return
        out = None if n.target in FUSING and self.fused_into(n) is not None else self.act_spec
        if n.target in CONST_OPERAND:
            for a in n.args[:2]:
                if isinstance(a, Node) and a not in self.acts and _is_float(a):
                    inputs[a] = self.act_spec  # a constant operand: an int8 constant tensor
                    if a.meta.get(ON_OUTPUT_SCALE) and out is not None:
                        # one observer for the constant and the output: both on the output's scale
                        out = SharedQuantizationSpec((a, n))
        if n.target in (aten.layer_norm.default,):
            inputs = {n.args[0]: self.in_spec(n.args[0])} if isinstance(n.args[0], Node) else {}
        self.set(n, inputs, out)


def _relu_like(n: Node) -> bool:
    """relu, relu6 and hardtanh(0, x): clamps a kernel fuses (ReLU, ReLU6, ReLU_N1_TO_1 need
    a lower bound of 0 or -1)."""
    if n.target in _targets(aten.hardtanh, aten.hardtanh_):
        lo = n.args[1] if len(n.args) > 1 else n.kwargs.get("min_val", -1.0)
        hi = n.args[2] if len(n.args) > 2 else n.kwargs.get("max_val", 1.0)
        return (lo, hi) in ((0.0, 6.0), (-1.0, 1.0), (0, 6), (-1, 1))
    return True


def _is_float_list(n: Node) -> bool:
    val = n.meta.get("val")
    return isinstance(val, (list, tuple)) and bool(val) and all(
        isinstance(v, torch.Tensor) and v.dtype.is_floating_point for v in val)


def op_type(n: Node) -> str:
    """The op type a quant config names `n` by: the op a rewrite decomposed (`layer_norm` for each
    of its pieces), else the aten op's name without a leading underscore (`softmax`, `gelu`)."""
    return n.meta.get("edgeconv_op_type") or getattr(n.target, "__name__", str(n.target)).split(".")[0].lstrip("_")


def annotate_graph(gm: GraphModule, config: Any, skip: Callable[[Node], bool] | None = None) -> GraphModule:
    Annotator(gm, config, skip).run()
    return gm


# --- rewrites before annotation ------------------------------------------------------------------

BATCH_NORM = _targets(aten.batch_norm, aten._native_batch_norm_legit_no_training)


def _param(gm: GraphModule, n: Any) -> torch.Tensor | None:
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
        mean_t, var_t = _param(gm, mean), _param(gm, var)
        if mean_t is None or var_t is None:
            continue
        c = mean_t.numel()
        w_t = _param(gm, w) if w is not None else torch.ones(c)
        b_t = _param(gm, b) if b is not None else torch.zeros(c)
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
    if n.target in GROUP_NORM and args[1] == 1 and val.dim() >= 3:
        eps = args[4] if args[4] is not None else n.kwargs.get("eps", 1e-5)
        return args[0], tuple(range(1, val.dim())), args[2], args[3], float(eps)
    return None


def layer_norm_to_primitives(gm: GraphModule) -> list[str]:
    """layer_norm (and GroupNorm with one group) → the integer builtins every format has, so an
    int8 file keeps no float island there (a DSP/NPU delegate would cut the graph at each):

        before: y = layer_norm(x, dims, γ, β, eps)
        after:  μ = mean(x, dims); d = x − μ; v = mean(d·d, dims); n = d · rsqrt(v + eps); y = n·γ + β

    Each piece is then annotated like any MEAN/SUB/MUL/ADD/RSQRT (int8 in, int8 out). The pieces keep
    the norm's source meta, and `edgeconv_op_type` = "layer_norm" so a quant config can keep the op
    type float (`"layer_norm": null`)."""
    acts = activations(gm)
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in acts or not (n.target in LAYER_NORM or n.target in GROUP_NORM):
            continue
        parsed = _norm_args(n)
        val = n.meta.get("val")
        if parsed is None or not isinstance(val, torch.Tensor):
            continue
        x, dims, w, b, eps = parsed
        affine_shape = [1] * val.dim()
        if n.target in GROUP_NORM:
            affine_shape[1] = val.shape[1]
        g = gm.graph
        made: list[Node] = []

        def call(target: Any, *args: Any, made: list[Node] = made) -> Node:
            node = g.call_function(target, args)
            made.append(node)
            return node

        with g.inserting_before(n):
            mu = call(aten.mean.dim, x, list(dims), True)
            d = call(aten.sub.Tensor, x, mu)
            var = call(aten.mean.dim, call(aten.mul.Tensor, d, d), list(dims), True)
            # eps as an int8 constant on the scale of v + eps (a float scalar would leave ONNX's
            # Add with a float input). Not its own scale: eps/s_out would be far below XNNPACK's
            # 1/1024 floor on an ADD's input/output scale ratio, and eps > 0, v ≥ 0 put eps
            # inside the output's range, so the shared scale loses nothing the output keeps.
            eps_node = g.get_attr(_new_attr(gm, "_edgeconv_ln_eps", torch.tensor(eps)))
            eps_node.meta.update(val=torch.tensor(eps), **{ON_OUTPUT_SCALE: True})
            r = call(aten.rsqrt.default, call(aten.add.Tensor, var, eps_node))
            y = call(aten.mul.Tensor, d, r)
            for param, op in ((w, aten.mul.Tensor), (b, aten.add.Tensor)):
                if isinstance(param, Node):
                    if n.target in GROUP_NORM:
                        param = call(aten.view.default, param, affine_shape)
                    y = call(op, y, param)
        for k in made:
            k.meta.update({m: v for m, v in n.meta.items() if m != "val"})
            k.meta["edgeconv_op_type"] = "layer_norm"
        _infer_vals(gm, made)
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        done.append(n.name)
    return done


def _infer_vals(gm: GraphModule, nodes: list[Node]) -> None:
    """Fill `meta["val"]` of freshly inserted nodes by running their targets on their inputs'
    values in the graph's fake mode: prepare_pt2e observes an output only where `val` is a
    FakeTensor, so a real tensor there would leave the piece float."""
    from torch._guards import detect_fake_mode

    vals = [n.meta.get("val") for n in gm.graph.nodes]
    mode = detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)])

    def value(a: Any) -> Any:
        if not isinstance(a, Node):
            return a
        v = a.meta.get("val")
        v = v if isinstance(v, torch.Tensor) else _param(gm, a)
        return mode.from_tensor(v) if mode is not None and not _is_fake(v) else v

    for k in nodes:
        with torch.no_grad(), (mode if mode is not None else contextlib.nullcontext()):
            k.meta["val"] = k.target(*[value(a) for a in k.args])


def _is_fake(v: Any) -> bool:
    from torch._subclasses import FakeTensor

    return isinstance(v, FakeTensor)


REWRITES: tuple[Callable[[GraphModule], list[str]], ...] = (batch_norm_to_depthwise, hardsigmoid_to_relu6,
                                                              layer_norm_to_primitives)


def transform(gm: GraphModule) -> GraphModule:
    changed = False
    for rewrite in REWRITES:
        changed |= bool(rewrite(gm))
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm


@functools.lru_cache(maxsize=None)
def quantizer_class() -> type:
    """A subclass of litert-torch's PT2EQuantizer (litert-torch checks the type it is handed to
    select static Q/DQ lowering) whose annotation is edgeconv's."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class EdgeconvQuantizer(PT2EQuantizer):
        def transform_for_annotation(self, model: GraphModule) -> GraphModule:
            return transform(model)

        def annotate(self, model: GraphModule) -> GraphModule:
            return annotate_graph(model, self.global_config)

    return EdgeconvQuantizer


def describe(gm: GraphModule) -> Iterable[str]:
    """Activation ops left unannotated (float in every format): 'name (target)'."""
    acts = activations(gm)
    for n in gm.graph.nodes:
        if n.op == "call_function" and n in acts and _is_float(n) and KEY not in n.meta \
                and n.target is not operator.getitem:
            yield f"{n.name} ({getattr(n.target, '__name__', n.target)})"
