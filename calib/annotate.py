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
  a ReLU/ReLU6 right after a pool shares it too (TFLite fuses it into the pool's kernel);
- concat: every input and the output share one scale (the producers' observers are merged);
- ops with their own output range (add, sub, mul incl. activation × activation, hard-swish, GELU,
  SiLU, mean, matmul, rsqrt, layer norm): every float input int8, output int8 — for add, sub and
  mul, as for conv, carried by a single ReLU/ReLU6/clamp after them (TFLite's ADD/SUB/MUL fuse it);
- fixed-range ops: sigmoid and softmax output (1/256, −128), tanh (1/128, 0) — TFLite's LOGISTIC/
  SOFTMAX/TANH int8 kernels define their output that way;
- an input edge from a quantized producer reuses the producer's quantization exactly (one
  tensor, one scale: no requantization between them).

`transform_for_annotation` first rewrites ops no int8 kernel computes as such into ops that have
one (batch norm, hard-sigmoid, layer norm, fused attention, unbind: `edgeconv.calib.rewrites`).
Ops not listed stay unannotated: float in every format, and the manifest names them.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Iterable

import torch
from edgeconv.calib.rewrites import ON_INPUT_SCALE, TRANSPOSED, WEIGHTED, _is_float, _targets, activations, aten
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    SharedQuantizationSpec,
)

KEY = "quantization_annotation"


def _spellings(*ops: Any) -> frozenset:
    """Every overload of each op and of its in-place and `_copy` forms (`dropout_`, `squeeze_`,
    `view_copy`). A spelling left out was left unannotated: the next op's input got an observer of its
    own, so an elided op (TNT's in-place `attn_drop` after its softmax) put a requantization between
    two tensors the file keeps on one scale ("'tfl.reshape' op quantization parameters violate the same
    scale constraint")."""
    out: set = set()
    for op in ops:
        name = op.__name__ if isinstance(op, torch._ops.OpOverloadPacket) else None
        variants = [op] if name is None else [getattr(aten, v, None) for v in (name, name + "_", name + "_copy")]
        out |= _targets(*(v for v in variants if v is not None))
    return frozenset(out)

# A clamp to [0, x] right after a conv/linear/add runs inside that op's integer kernel.
FUSABLE = _targets(aten.relu, aten.relu_, aten.hardtanh, aten.hardtanh_, aten.relu6, aten.clamp, aten.clamp_)
SHARED = _spellings(
    aten.pad, aten.constant_pad_nd, aten.max_pool1d, aten.max_pool2d, aten.avg_pool1d, aten.avg_pool2d,
    aten.adaptive_avg_pool2d, aten.adaptive_max_pool2d,
    aten.view, aten.reshape, aten.flatten, aten.unflatten, aten.permute, aten.transpose, aten.squeeze,
    aten.unsqueeze, aten.contiguous, aten.clone, aten.dropout, aten.feature_dropout, aten.alpha_dropout,
    aten.feature_alpha_dropout, aten.alias, aten.detach, aten._unsafe_view, aten.slice, aten.select, aten.narrow,
    aten.t, aten.pixel_shuffle, aten.pixel_unshuffle, aten.upsample_nearest2d,
    aten.upsample_nearest1d, aten.expand, aten.expand_as, aten.flip, aten.roll, aten.max_pool2d_with_indices,
    # Bilinear too: a convex combination stays in its input's range, and TFLite's RESIZE_BILINEAR int8
    # has one scale for input and output — given its own output scale, the converter re-quantized the
    # producer (MobileViT's conv_1x1 before its 7→8 resize) straight to the resize's narrower range,
    # clipping it: 26 steps off the simulation in isolation.
    aten.upsample_bilinear2d)
# A ReLU/ReLU6 after a pool: TFLite fuses it into the pool, whose int8 kernels keep one scale from
# input to output; given its own, the converter refused the file ("'tfl.average_pool_2d' op quantization
# parameters violate the same scale constraint", max_pool_2d alike). On the pool's grid the clamp is exact.
POOLS = _targets(aten.max_pool1d, aten.max_pool2d, aten.avg_pool1d, aten.avg_pool2d, aten.adaptive_avg_pool2d,
                 aten.adaptive_max_pool2d)
SPLITS = _targets(aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.tensor_split)
CONCAT = _targets(aten.cat, aten.concat, aten.stack)
OWN = _spellings(
    aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.hardswish, aten.hardswish_,
    aten.gelu, aten.silu, aten.silu_, aten.leaky_relu, aten.elu, aten.mean, aten.sum, aten.matmul,
    aten.bmm, aten.mm, aten.layer_norm, aten.rsqrt, aten.relu, aten.relu_, aten.hardtanh,
    aten.hardtanh_, aten.relu6, aten.clamp, aten.abs, aten.neg, aten.square, aten.max, aten.min,
    aten.maximum, aten.minimum, aten.amax)
FIXED = {**{t: (1 / 256, -128) for t in _targets(aten.sigmoid, aten.sigmoid_, aten.softmax, aten._softmax)},
         **{t: (1 / 128, 0) for t in _targets(aten.tanh, aten.tanh_)}}
# Binary ops whose constant operand is quantized as an int8 constant (a broadcast scalar or vector).
# ops whose constant operand is stored as an int8 tensor (matmul: a softmax over one element became
# its constant 1, calib.rewrites.softmax_to_last_axis). In-place spellings too, as in OWN: an `add_`
# `calib.rewrites.in_place_to_functional` keeps (its input is read elsewhere) left the operand float.
CONST_OPERAND = _spellings(aten.add, aten.sub, aten.mul, aten.matmul, aten.bmm)
# Ops whose integer kernel takes a fused ReLU/ReLU6 (TFLite ADD, SUB, MUL, the convs): the clamp after
# one carries its output, so the program rounds once where the file does. Given an output of its own,
# the op's result was rounded at its scale and again at the clamp's, and the converter still fused the
# pair into one op rounding once (ReXNet's SE gate `x * sigmoid(s)` → ReLU6: MUL with fused RELU6 at
# the ReLU6's scale, 2–5 steps off the simulation in isolation on up to 19 % of values).
# In-place too: QAT captures in train mode, where timm's `x += shortcut` stays aten.add_; left out,
# its output was quantized before the ReLU the file fuses into the ADD (2 steps in isolation).
FUSING = WEIGHTED | TRANSPOSED | _targets(aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_)
# A normalization's internal tensors (centred input, square, variance, rsqrt): calibrated with the
# norm spec (`calib.observers.norm_spec`), their extremes being a few outlying tokens.
NORM_OP_TYPES = ("layer_norm", "var", "rsqrt")


class Annotator:
    """One walk over the graph, in topological order, with the config's specs."""

    def __init__(self, gm: GraphModule, config: Any, skip: Callable[[Node], bool] | None = None,
                 norm_spec: Any = None) -> None:
        self.gm, self.act_spec, self.w_spec = gm, config.input_activation, config.weight
        # a normalization's internal tensors (`calib.observers.norm_spec`); the activations' by default
        self.norm_spec = norm_spec if norm_spec is not None else self.act_spec
        self.skip = skip or (lambda n: False)
        self.acts = activations(gm)
        self.live = reaching_output(gm)

    # -- specs ------------------------------------------------------------------------------
    def out_spec(self, n: Node) -> Any:
        ann = n.meta.get(KEY)
        return ann.output_qspec if ann is not None else None

    def in_spec(self, p: Node) -> Any:
        """Quantization of the edge from producer `p`: `p`'s own if it has one (same tensor, same
        scale — no requantization), else a fresh int8 observer."""
        return SharedQuantizationSpec(p) if self.out_spec(p) is not None else self.act_spec

    def fused_into(self, n: Node) -> Node | None:
        """The clamp that carries `n`'s output when it is `n`'s only user. Users whose value never
        reaches the output (QAT's batch-statistics updates read the conv before its ReLU) do not count."""
        users = [u for u in n.users if u in self.live]
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
            elif relayout(n) or self._after_pool(n):
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

    def _after_pool(self, n: Node) -> bool:
        """A ReLU/ReLU6 on a pool's output: it shares the pool's scale (POOLS)."""
        p = n.args[0] if n.args else None
        return n.target in FUSABLE and _relu_like(n) and isinstance(p, Node) and p.target in POOLS

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
        if not (isinstance(x, Node) and x in self.acts and _is_float(x)) or not _is_float(n) \
                or x.meta["val"].dtype != n.meta["val"].dtype:  # view.dtype reinterprets the bits
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
        """One scale for every input and the output (the int8 CONCATENATION kernels need it). A
        constant input (ViT's class token, expanded) is quantized at that scale as an int8 constant."""
        xs = [x for x in n.args[0] if isinstance(x, Node)]
        acts = [x for x in xs if x in self.acts]
        if not acts or not all(_is_float(x) for x in xs):
            return
        first = acts[0]
        share = SharedQuantizationSpec((first, n))
        inputs = {first: self.in_spec(first)}
        for x in xs:
            if x is not first:
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
        if out is self.act_spec and op_type(n) in NORM_OP_TYPES:
            out = self.norm_spec
        if n.target in CONST_OPERAND:
            for a in n.args[:2]:
                if isinstance(a, Node) and a not in self.acts and _is_float(a):
                    inputs[a] = self.act_spec  # a constant operand: an int8 constant tensor
            x = next((a for a in n.args[:2] if isinstance(a, Node) and a in inputs and a in self.acts), None)
            eps = [a for a in n.args[:2] if isinstance(a, Node) and a.meta.get(ON_INPUT_SCALE)]
            if eps and x is not None and out is not None:  # x + eps: one observer, x's (ON_INPUT_SCALE)
                inputs[eps[0]] = out = SharedQuantizationSpec((x, n))
        if n.target in (aten.layer_norm.default,):
            inputs = {n.args[0]: self.in_spec(n.args[0])} if isinstance(n.args[0], Node) else {}
        self.set(n, inputs, out)


def relayout(n: Node) -> bool:
    """Whether `n`'s output holds its input's values, only moved, repeated or dropped: it then shares
    the input's quantization (SHARED), whatever its spelling — any SHARED op and its in-place /
    `_copy` forms, or an op the schema declares a view of its input (`unfold`, `diagonal`,
    `as_strided`). Splits (several outputs) are not: they go through SPLITS and getitem. (A
    reduction over axes of one element is its input: `calib.rewrites.single_element_reductions`.)"""
    t = n.target
    if t in SHARED:
        return True
    return isinstance(n.meta.get("val"), torch.Tensor) and isinstance(t, torch._ops.OpOverload) and t.is_view


def reaching_output(gm: GraphModule) -> set[Node]:
    """Nodes with a path to the graph's output."""
    live: set[Node] = set()
    todo = [n for n in gm.graph.nodes if n.op == "output"]
    while todo:
        n = todo.pop()
        if n not in live:
            live.add(n)
            todo.extend(n.all_input_nodes)
    return live


def _relu_like(n: Node) -> bool:
    """relu, relu6, and hardtanh or clamp to the bounds of one: clamps a kernel fuses (ReLU, ReLU6,
    ReLU_N1_TO_1 need a lower bound of 0 or -1). The converter fuses `clamp(x, 0, 6)` after a MUL
    as RELU6 just as it does `relu6`; `clamp(x, 0)` is a ReLU."""
    if n.target in _targets(aten.hardtanh, aten.hardtanh_):
        lo = n.args[1] if len(n.args) > 1 else n.kwargs.get("min_val", -1.0)
        hi = n.args[2] if len(n.args) > 2 else n.kwargs.get("max_val", 1.0)
        return (lo, hi) in ((0.0, 6.0), (-1.0, 1.0), (0, 6), (-1, 1))
    if n.target in _targets(aten.clamp, aten.clamp_):
        lo = n.args[1] if len(n.args) > 1 else n.kwargs.get("min")
        hi = n.args[2] if len(n.args) > 2 else n.kwargs.get("max")
        return (lo, hi) in ((0, None), (0, 6), (-1, 1))  # 0 == 0.0: float bounds match too
    return True


def _is_float_list(n: Node) -> bool:
    val = n.meta.get("val")
    return isinstance(val, (list, tuple)) and bool(val) and all(
        isinstance(v, torch.Tensor) and v.dtype.is_floating_point for v in val)


def op_type(n: Node) -> str:
    """The op type a quant config names `n` by: the op a rewrite decomposed (`layer_norm` for each
    of its pieces), else the aten op's name without underscores around it (`softmax` for `_softmax`,
    `hardswish` for `hardswish_`)."""
    return n.meta.get("edgeconv_op_type") or getattr(n.target, "__name__", str(n.target)).split(".")[0].strip("_")


def annotate_graph(gm: GraphModule, config: Any, skip: Callable[[Node], bool] | None = None,
                   norm_spec: Any = None) -> GraphModule:
    Annotator(gm, config, skip, norm_spec).run()
    return gm


def describe(gm: GraphModule) -> Iterable[str]:
    """Activation ops left unannotated (float in every format): 'name (target)'."""
    acts = activations(gm)
    for n in gm.graph.nodes:
        if n.op == "call_function" and n in acts and _is_float(n) and KEY not in n.meta \
                and n.target is not operator.getitem:
            yield f"{n.name} ({getattr(n.target, '__name__', n.target)})"
