"""CoreML targets: mlprogram `.mlpackage` files written by coremltools from the captured program.

- `coreml`       fp32 compute, float weights.
- `coreml-fp16`  fp16 compute and weights (coremltools' default for mlprogram).
- `coreml-int8`  int8 per-channel symmetric weights on every conv and linear (weight_threshold
                 lowered to 0 so stems and depthwise kernels are quantized too); float activations.
- `coreml-w8a8`  the PT2E-quantized program itself: iOS17 `quantize`/`dequantize` activations and
                 `constexpr_affine_dequantize` weights carrying edgeconv's own scales. coremltools
                 calibrates activations only through MLModel.predict (macOS); instead the torch
                 calibration's scales go through the converter. Two default MIL passes would alter
                 them and are removed (see W8A8_REMOVED_PASSES), and compute stays FLOAT32 so scales
                 are not stored in fp16.

Every target honours `Graph.float_nodes`: the quantize pass already leaves them float in the
w8a8 program; coreml-int8 skips their weights in linear_quantize_weights.

On Linux the artifacts are run by edgeconv's MIL evaluator (mil/, numpy); on macOS by MLModel.predict.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeconv.errors import UserError
from edgeconv.exporters.base import FLOAT_PASSES, INT8_PASSES, ExportInfo, Target, input_names, output_names
from edgeconv.exporters.coreml.coremltools_import import import_coremltools, quiet as _quiet
from edgeconv.exporters.coreml.rank import lower_rank_regions, op_name
from edgeconv.exporters.coreml.read import WEIGHT_OPS, activation_quant, constexpr_quant, float_ops
from edgeconv.exporters.coreml.runtime import ENGINE_MIL_EVAL, ENGINE_PREDICT
from edgeconv.exporters.lowering import unfold_as_gather
from edgeconv.parity import FLOAT_TOLERANCE, FP16_TOLERANCE, INT8_TOLERANCE
from edgeconv.registry import FORMATS, TARGETS
from edgeconv.results import QuantParams

if TYPE_CHECKING:
    import torch

    from edgeconv.context import Context
    from edgeconv.graph import Graph

# Default MIL passes that rewrite activation quantization: the first rescales the two branches
# of a quantized add to one scale, the second turns int8 zero point -128 into uint8 zero point 0.
W8A8_REMOVED_PASSES = (
    "common::distributive_quantized_binary_op_scale_normalization",
    "common::nullify_redundant_quantization_zero_point",
)
DEPLOYMENT_TARGET = "iOS17"  # first opset with quantize/dequantize activation ops


# --- program preparation -------------------------------------------------------------------

def _quantize_node(node: "torch.fx.Node") -> bool:
    import torch

    qd = torch.ops.quantized_decomposed
    return node.op == "call_function" and node.target in (
        qd.quantize_per_channel.default, qd.quantize_per_tensor.default)


def coreml_program(graph: "Graph") -> "torch.export.ExportedProgram":
    """The program ct.convert accepts.

    A quantized Graph holds `convert_pt2e(..., fold_quantize=False)`: float weights quantized by
    `quantize_per_channel` at run time, which coremltools refuses ("Unsupported fx node").
    Before: get_attr(w) -> quantize_per_channel -> dequantize_per_channel -> conv.
    After:  get_attr(int8 w) -> dequantize_per_channel -> conv   (on a copy; the Graph is untouched).
    The inference dialect (`run_decompositions({})`) is required: a training-dialect program is refused.
    """
    import torch

    if not graph.quantized:
        from edgeconv.calib.rewrites import unfold_fold_to_convs

        gm = graph.module()
        # coremltools refuses an overlapping col2im (an int8 program had it rewritten before quantizing)
        # and cannot express the as_strided that torch decomposes Tensor.unfold to (HaloAttn's windows)
        folded = unfold_fold_to_convs(gm)
        if folded:
            gm.recompile()
        folded += unfold_as_gather(gm)
        if not _lower_rank_moves(gm) + lower_rank_regions(gm) and not folded:
            return _explicit_pool_strides(graph.program.run_decompositions({}))
        return _explicit_pool_strides(torch.export.export(gm, graph.example_inputs, strict=False).run_decompositions({}))
    from torchao.quantization.pt2e.constant_fold import constant_fold

    gm = copy.deepcopy(graph.module())
    constant_fold(gm, _quantize_node)
    # Quantized constants that are not conv/linear weights (a scalar multiplier, a bias added after
    # a squeeze-excite conv) are dequantized here, in torch: coremltools 9.0 folds
    # dequantize(int8 const) with int8 arithmetic, so (127 - (-128)) wraps to -1 and 0.2 becomes
    # -0.00078 in the file. Their values are the same either way; only the weights stay int8.
    _dequantize_constants(gm)
    _hardswish_as_gate(gm)
    unfold_as_gather(gm)  # torch decomposes Tensor.unfold to as_strided, which coremltools cannot express
    _unquantize_high_rank_moves(gm)
    _lower_rank_moves(gm)
    lower_rank_regions(gm)  # what is still above rank 5: Twins' qkv of a window, MViTv2's rel-pos terms
    _requantize_moves(gm)
    return _explicit_pool_strides(torch.export.export(gm, graph.example_inputs, strict=False).run_decompositions({}))


# Ops whose outputs are some of their input's values, re-laid out or picked (a piece of a split, a
# max): requantizing their output at their input's scale and zero point changes nothing.
_MOVES = ("view", "reshape", "_unsafe_view", "permute", "transpose", "clone", "contiguous",
          "select", "unbind", "amax", "amin")
CORE_ML_MAX_RANK = 5


def _is_move(n: Any) -> bool:
    """Whether `n` calls one of _MOVES — by the op's own name: a substring match took
    conv_transpose2d for a transpose."""
    import operator

    if getattr(n, "target", None) is operator.getitem:  # a piece of an unbind
        return _is_move(n.args[0])
    return op_name(n) in _MOVES


def _lower_rank_moves(gm: "torch.fx.GraphModule") -> int:
    """A reshape to rank > 5 whose permuted result is only reshaped again (a window partition or
    its reverse: timm NesT, Hiera, Swin), rewritten at the lowest rank the permutation
    allows. Dims that stay next to each other, in order, through the permutation move as one: a
    window partition [B, H/w, w, W/w, w, C] permuted (0, 1, 3, 2, 4, 5) is [B·H/w, w, W/w, w·C]
    permuted (0, 2, 1, 3). The same elements in the same order, so every reshape after it holds.
    Core ML refuses tensors above rank 5, and coremltools folds such a chain only when the
    reshape feeds the transpose directly (nothing between, and the last reshape right after).
    A permutation of more than five such runs (Hiera's unroll) is done in two steps (_permute_steps);
    anything else above rank 5 is left to rank.lower_rank_regions."""
    import torch

    aten = torch.ops.aten
    done = 0
    for p in list(gm.graph.nodes):
        if p.op != "call_function" or p.target not in (aten.permute.default, aten.transpose.int):
            continue
        v = p.args[0]
        in_val = getattr(v, "meta", {}).get("val")
        if not isinstance(in_val, torch.Tensor) or in_val.dim() <= CORE_ML_MAX_RANK:
            continue
        perm = [int(d) % in_val.dim() for d in p.args[1]] if p.target == aten.permute.default \
            else _swapped(in_val.dim(), *(int(d) for d in p.args[1:3]))
        if len(v.users) != 1 \
                or not any(m in str(v.target) for m in ("view", "reshape")) or not _only_reshaped(p, split_ok=True):
            continue
        split = any(str(u.target).startswith(("aten.unbind", "aten.select")) for u in p.users)
        # A dim of size 1 moves no element: left out, MaxViT's grid partition [1, g, H/g, g, W/g, C]
        # permuted (0, 2, 4, 1, 3, 5) is five runs, not six (a split keeps the dim it splits along).
        kept = [d for d in range(in_val.dim()) if in_val.shape[d] != 1 or (split and d == perm[0])]
        sizes = [int(in_val.shape[d]) for d in kept]
        order = [kept.index(d) for d in perm if d in kept]
        steps = [order] if split else _permute_steps(order)
        if not order or not steps or (split and len(_runs(order, split)) > CORE_ML_MAX_RANK):
            continue
        with gm.graph.inserting_before(p):
            moved = _grouped_permutes(gm.graph, v.args[0], in_val, sizes, steps, split)
        p.replace_all_uses_with(moved)
        gm.graph.erase_node(p)
        gm.graph.erase_node(v)
        _explicit_reshapes(moved)  # a flatten(start, end) names dims of the old shape
        for u in list(moved.users):  # the pieces of a split keep their shapes (rank <= 5)
            for piece in (list(u.users) if "unbind" in str(u.target) else [u] if "select" in str(u.target) else []):
                with gm.graph.inserting_after(piece):
                    back = gm.graph.call_function(aten.reshape.default, (piece, list(piece.meta["val"].shape)))
                piece.replace_all_uses_with(back, delete_user_cb=lambda w, back=back: w is not back)
        done += 1
    if done:
        gm.recompile()
    return done


def _explicit_reshapes(n: "torch.fx.Node") -> None:
    """Every reshape-like use of `n` (through copies) as a reshape to the shape it produced."""
    import torch

    for u in list(n.users):
        t = str(u.target)
        if "clone" in t or "contiguous" in t:
            _explicit_reshapes(u)
        elif any(m in t for m in ("view", "reshape", "flatten")):
            u.target, u.args, u.kwargs = torch.ops.aten.reshape.default, (u.args[0], list(u.meta["val"].shape)), {}


def _runs(order: list[int], split: bool = False) -> list[list[int]]:
    """The input dims of a permutation in output order, in runs of dims that follow each other;
    with `split`, output dim 0 on its own (an unbind/select along it)."""
    runs: list[list[int]] = []
    for d in order:
        if runs and d == runs[-1][-1] + 1 and not (split and len(runs) == 1):
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def _permute_steps(order: list[int]) -> list[list[int]] | None:
    """`order` as permutations applied one after another, each of at most CORE_ML_MAX_RANK runs:
    itself, else one block of dims moved elsewhere (at most 4 runs) and then the rest. Hiera's unroll
    [N, H/2, 2, W/2, 2, C] permuted (0, 2, 4, 1, 3, 5) is six runs: (1, 0, 2, 3, 4, 5), then
    (1, 2, 4, 0, 3, 5) (five). Every permutation of six dims splits so (checked exhaustively)."""
    if len(_runs(order)) <= CORE_ML_MAX_RANK:
        return [order]
    n = len(order)
    for i in range(n):
        for j in range(i + 1, n + 1):
            rest = [d for d in range(n) if not i <= d < j]
            for k in range(len(rest) + 1):
                first = rest[:k] + list(range(i, j)) + rest[k:]  # block [i, j) moved to position k
                if first == list(range(n)):
                    continue
                then = [first.index(d) for d in order]
                if len(_runs(then)) <= CORE_ML_MAX_RANK:
                    return [first, then]
    return None


def _grouped_permutes(graph: "torch.fx.Graph", src: "torch.fx.Node", like: "torch.Tensor", sizes: list[int],
                      steps: list[list[int]], split: bool = False) -> "torch.fx.Node":
    """`src` (any shape holding `sizes` in order) permuted by each of `steps` in turn, every step a
    reshape that merges its runs and a permute of the runs: each tensor of rank <= CORE_ML_MAX_RANK
    (`split`: one step, whose output dim 0 stays on its own)."""
    import torch

    aten = torch.ops.aten
    for order in steps:
        runs = _runs(order, split)
        by_input = sorted(runs)
        shape = [int(torch.Size(sizes[r[0]:r[-1] + 1]).numel()) for r in by_input]
        flat = graph.call_function(aten.reshape.default, (src, shape))
        src = graph.call_function(aten.permute.default, (flat, [by_input.index(r) for r in runs]))
        flat.meta["val"] = like.new_empty(shape)  # the rank _requantize_moves reads
        src.meta["val"] = flat.meta["val"].permute([by_input.index(r) for r in runs])
        sizes = [sizes[d] for d in order]
    return src


def _swapped(rank: int, a: int, b: int) -> list[int]:
    perm = list(range(rank))
    perm[a % rank], perm[b % rank] = perm[b % rank], perm[a % rank]
    return perm


def _only_reshaped(n: "torch.fx.Node", split_ok: bool = False) -> bool:
    """Whether every use of `n` only reads its elements in order (a reshape, through copies) or,
    with `split_ok`, takes pieces along dim 0 of rank <= 5 (qkv.unbind(0))."""
    for u in n.users:
        t = str(u.target)
        if "clone" in t or "contiguous" in t:
            if not _only_reshaped(u):
                return False
        elif split_ok and t in ("aten.unbind.int", "aten.select.int") and int((*u.args, 0)[1]) == 0 \
                and n.meta["val"].dim() - 1 <= CORE_ML_MAX_RANK:
            continue
        elif not any(m in t for m in ("view", "reshape", "flatten")):
            return False
    return True


def _unquantize_high_rank_moves(gm: "torch.fx.GraphModule") -> int:
    """Core ML holds tensors of rank <= 5; coremltools folds a rank-6 reshape → transpose → reshape
    (a window partition: SwinIR, Swin2SR) into lower-rank ops, but only when nothing sits between
    them, and a quantized program puts quantize → dequantize after each. Where a rank-6 move is
    requantized at the scale and zero point its input already has, that pair is the identity on
    values already on the grid, so it is dropped (the chain folds; the numbers are the same).
    Before: dq(a) → view(6-D) → q(s, z) → dq → permute → …   After: dq(a) → view(6-D) → permute → …"""
    import torch

    qd = torch.ops.quantized_decomposed
    dropped = 0
    for q in list(gm.graph.nodes):
        if q.target != qd.quantize_per_tensor.default or not q.users:
            continue
        move, dqs = q.args[0], list(q.users)  # one dequantize per reader (qkv's three selects)
        dq = dqs[0]
        if any(d.target != qd.dequantize_per_tensor.default or d.args[1:] != dq.args[1:] for d in dqs) \
                or getattr(move, "op", None) != "call_function":
            continue
        val = move.meta.get("val")
        if val is None or val.dim() <= CORE_ML_MAX_RANK or not _is_move(move):
            continue
        src = move.args[0]  # the dequantize (or an earlier move) feeding it, with its scale and zero point
        while getattr(src, "target", None) != qd.dequantize_per_tensor.default and _is_move(src):
            src = src.args[0]
        if getattr(src, "target", None) != qd.dequantize_per_tensor.default or tuple(src.args[1:]) != tuple(dq.args[1:]):
            continue
        for d in dqs:
            d.replace_all_uses_with(move)
            gm.graph.erase_node(d)
        gm.graph.erase_node(q)
        dropped += 1
    if dropped:
        gm.recompile()
    return dropped


def _requantize_moves(gm: "torch.fx.GraphModule") -> int:
    """Give every relayout its own int8 input again. `_unquantize_high_rank_moves` drops the
    requantize after each rank-6 move so the chain can be lowered; once lowered (rank <= 5), the
    moves sat back to back in float: dq(a) → reshape → permute → reshape → q, two of them reading
    a float tensor. A relayout of values on a grid stays on that grid, so q → dq at the dequantize's
    own scale and zero point between them is exact, and each move reads a dequantize (coremltools
    then moves the reshapes onto the int8 tensor, int_op_canonicalization).
    After: dq(a) → reshape → q(s, z) → dq → permute → q(s, z) → dq → reshape → q."""
    import torch

    qd = torch.ops.quantized_decomposed
    done = 0
    for n in list(gm.graph.nodes):
        root = _dequantized_root(n)
        val = n.meta.get("val")
        if root is None or not isinstance(val, torch.Tensor) or val.dim() > CORE_ML_MAX_RANK:
            continue
        # A quantize at other parameters is a reader too: coremltools' int_op_canonicalization turns
        # dq(s1) → reshape → q(s2) into an int8 reshape whatever s2 is (the s1 values read at s2).
        readers = [u for u in n.users if u.target != qd.quantize_per_tensor.default
                   or tuple(u.args[1:6]) != tuple(root.args[1:6])]
        if not readers:
            continue
        with gm.graph.inserting_after(n):
            q = gm.graph.call_function(qd.quantize_per_tensor.default, (n, *root.args[1:6]))
        with gm.graph.inserting_after(q):
            dq = gm.graph.call_function(qd.dequantize_per_tensor.default, (q, *root.args[1:]), dict(root.kwargs))
        for u in readers:
            u.replace_input_with(n, dq)
        done += 1
    if done:
        gm.recompile()
    return done


def _dequantized_root(n: "torch.fx.Node") -> "torch.fx.Node | None":
    """The per-tensor dequantize that `n`, a relayout, reads (through other relayouts), else None."""
    import torch

    qd = torch.ops.quantized_decomposed
    if not _is_move(n):
        return None
    src = n.args[0]
    while _is_move(src):
        src = src.args[0]
    return src if getattr(src, "target", None) == qd.dequantize_per_tensor.default else None


def _hardswish_as_gate(gm: "torch.fx.GraphModule") -> int:
    """hard-swish as x · hardsigmoid(x), both reading x. MIL has no hard-swish op; coremltools
    writes it as thresholded_relu(x, -3) → sigmoid_hard → mul, so the sigmoid_hard and the mul both
    read a float intermediate of the dequantized input. The threshold changes nothing (x < -3
    already gives x · 0). As a gate, the sigmoid_hard reads the dequantize and the mul reads only
    the dequantize and that gate: hard-swish of one int8 tensor, requantized, which float_ops
    reads as one activation (MIL's silu is the same product as a single op)."""
    import torch

    aten = torch.ops.aten
    done = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in (aten.hardswish.default, aten.hardswish_.default):
            continue
        with gm.graph.inserting_before(n):
            gate = gm.graph.call_function(aten.hardsigmoid.default, (n.args[0],))
            out = gm.graph.call_function(aten.mul.Tensor, (n.args[0], gate))
        out.meta = dict(n.meta)
        gate.meta["val"] = n.meta.get("val")
        n.replace_all_uses_with(out)
        gm.graph.erase_node(n)
        done += 1
    if done:
        gm.recompile()
    return done


def _dequantize_constants(gm: "torch.fx.GraphModule") -> int:
    """Replace dequantize(constant) nodes that are not conv/linear weights by float constants.
    (torchao's constant folder treats dequantize as impure, so this is done here.)"""
    import torch

    qd = torch.ops.quantized_decomposed
    dqs = (qd.dequantize_per_tensor.default, qd.dequantize_per_channel.default)

    def value(a: Any) -> Any:
        return _get_attr(gm, a.target) if isinstance(a, torch.fx.Node) else a

    done = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in dqs or _feeds_weight(n):
            continue
        if any(isinstance(a, torch.fx.Node) and a.op != "get_attr" for a in n.args):
            continue
        name = f"_ec_dequantized_{done}"
        gm.register_buffer(name, n.target(*[value(a) for a in n.args]))
        with gm.graph.inserting_before(n):
            const = gm.graph.get_attr(name)
        n.replace_all_uses_with(const)
        gm.graph.erase_node(n)
        done += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return done


def _get_attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _explicit_pool_strides(program: "torch.export.ExportedProgram") -> "torch.export.ExportedProgram":
    """Spell out pooling's default stride (= kernel size): coremltools 9.0 refuses a max_pool2d node
    whose stride argument was left out, as `F.max_pool2d(x, 2)` exports.
    Before: max_pool2d(x, [2, 2]).  After: max_pool2d(x, [2, 2], [2, 2])."""
    import torch

    aten = torch.ops.aten
    pools = {aten.max_pool2d.default, aten.avg_pool2d.default, aten.max_pool1d.default, aten.avg_pool1d.default,
             aten.max_pool2d_with_indices.default}
    changed = False
    for n in program.graph.nodes:
        if n.op == "call_function" and n.target in pools and len(n.args) == 2 and "stride" not in n.kwargs:
            n.args = (n.args[0], n.args[1], n.args[1])
            changed = True
    if changed:
        program.graph_module.recompile()
    return program


def convert(program: "torch.export.ExportedProgram", precision: str = "fp32", keep_scales: bool = False,
            target: str = "coreml", names: tuple[str, ...] = (), inputs: tuple[str, ...] = ()) -> Any:
    """ct.convert a `coreml_program` to an in-memory mlprogram MLModel (not loaded for prediction)."""
    from edgeconv.exporters.lowering import lowering_errors

    ct = import_coremltools()
    pipeline = _fresh(ct, keep_scales)
    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    named = {"outputs": [ct.TensorType(name=n) for n in names]} if names else {}
    if inputs:  # in forward's order: ct.convert pairs them with the program's user inputs
        named["inputs"] = [ct.TensorType(name=n) for n in inputs]
    decomposed: list[str] = []
    with _quiet(), lowering_errors(target):
        while True:
            try:
                return ct.convert(program, convert_to="mlprogram", pass_pipeline=pipeline, **named,
                                  minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                                  compute_precision=compute, skip_model_load=True)
            except Exception as e:  # a missing op translation: torch's own decomposition of it, else its name
                op = _unsupported_op(str(e))
                if not op:
                    raise
                smaller = _decomposed(program, op) if op not in decomposed and len(decomposed) < 8 else None
                if smaller is None:
                    raise UserError(f"{target}: coremltools {ct.__version__} cannot express op {op} of this "
                                    "model; replace that op in the model or choose another target") from None
                program, pipeline = smaller, _fresh(ct, keep_scales)
                decomposed.append(op)


def _fresh(ct: Any, keep_scales: bool) -> Any:
    pipeline = ct.PassPipeline.DEFAULT
    if keep_scales:
        pipeline.remove_passes(list(W8A8_REMOVED_PASSES))
    return pipeline


def _decomposed(program: "torch.export.ExportedProgram", op: str) -> "torch.export.ExportedProgram | None":
    """The program with `op` (as coremltools names it: `addcmul`, `upsample_bicubic2d`) replaced by
    torch's own decomposition into ops coremltools has, or None when torch has none for it."""
    import torch
    from torch._decomp import get_decompositions

    packet = getattr(torch.ops.aten, op.split(".")[-1], None)
    table = get_decompositions([packet]) if packet is not None else {}
    if not table:
        return None
    try:
        return program.run_decompositions(table)
    except Exception:  # noqa: BLE001 — a decomposition that does not apply: the op is named instead
        return None


def _unsupported_op(message: str) -> str | None:
    m = re.search(r"convert function for op '([^']+)' not implemented", message) or \
        re.search(r"Unsupported fx node ([\w.:]+)", message)
    return m.group(1) if m else None


def weight_const_names(mlmodel: Any, skip_ops: tuple[str, ...] = ()) -> dict[str, str]:
    """Weight const name -> consumer op name, for every conv/linear not listed in skip_ops."""
    func = mlmodel._mil_program.functions["main"]
    names = {}
    for op in func.operations:
        if op.op_type in WEIGHT_OPS and op.name not in skip_ops:
            w = op.inputs["weight"].op
            if w is not None and w.op_type == "const":
                names[w.name] = op.name
    return names


def quantize_weights(mlmodel: Any, skip_ops: tuple[str, ...] = ()) -> Any:
    """int8 per-channel symmetric weights on every conv/linear except skip_ops.

    Configured per weight (op_name_configs) instead of globally, so that biases and other constants
    stay float even with weight_threshold=0, the setting that includes small stem/depthwise kernels.
    """
    import_coremltools()  # the one import path: a missing extra is one line
    from coremltools.optimize import coreml as cto

    cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                      weight_threshold=0)
    names = weight_const_names(mlmodel, skip_ops)
    config = cto.OptimizationConfig(global_config=None, op_name_configs={n: cfg for n in names})
    with _quiet():
        return cto.linear_quantize_weights(mlmodel, config)


def pt2e_params(program: "torch.export.ExportedProgram") -> tuple[list[QuantParams], list[QuantParams]]:
    """(activation, weight) quantization parameters of a PT2E program, in graph order.

    Activations from `quantize_per_tensor` nodes, weights from `dequantize_per_channel/_tensor`
    nodes fed by a constant and used as a conv/linear weight. (Other quantized constants, e.g. a
    bias added after a squeeze-excite conv, coremltools folds into float constants holding the same
    dequantized values: numerically identical, so not counted.)
    """
    import torch

    qd = torch.ops.quantized_decomposed
    consts = {**dict(program.named_parameters()), **dict(program.named_buffers()), **program.constants}
    sig = program.graph_signature
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}

    def value(a: Any) -> np.ndarray:
        if isinstance(a, torch.fx.Node):
            return consts[lifted[a.name]].detach().numpy()
        return np.asarray(a)

    acts, weights = [], []
    for n in program.graph.nodes:
        if n.op != "call_function":
            continue
        if n.target == qd.quantize_per_tensor.default and not _is_const(n.args[0], lifted):
            acts.append(QuantParams(dtype=str(n.args[-1]).replace("torch.", ""),
                                    scale=(float(value(n.args[1])),), zero_point=(int(value(n.args[2])),)))
        elif n.target in (qd.dequantize_per_channel.default, qd.dequantize_per_tensor.default) \
                and _is_const(n.args[0], lifted) and _feeds_weight(n):
            per_channel = n.target == qd.dequantize_per_channel.default
            weights.append(QuantParams(
                dtype=str(n.args[-1]).replace("torch.", ""),
                scale=tuple(float(v) for v in np.atleast_1d(value(n.args[1]))),
                zero_point=tuple(int(v) for v in np.atleast_1d(value(n.args[2]))),
                axis=int(n.args[3]) if per_channel else None))
    return acts, weights


def _feeds_weight(dq: Any) -> bool:
    return any(u.op == "call_function" and any(k in str(u.target) for k in ("conv", "linear"))
               and len(u.args) > 1 and u.args[1] is dq for u in dq.users)


def _is_const(node: Any, lifted: dict[str, str]) -> bool:
    import torch

    if not isinstance(node, torch.fx.Node):
        return True
    if node.op == "placeholder":
        return node.name in lifted
    if node.op == "get_attr":
        return True
    if node.op == "call_function" and node.target is not None and "quantize_per_channel" in str(node.target):
        return _is_const(node.args[0], lifted)
    return False


def check_scales(mlmodel: Any, program: "torch.export.ExportedProgram") -> str:
    """Compare every activation and weight scale/zero point of the artifact with PT2E's, exactly.

    Matched as multisets of values (names change in conversion; MIL dedups a shared requantize).
    Returns a one-line summary; raises if the artifact lost or changed any of edgeconv's scales.
    """
    from edgeconv.errors import EdgeconvError
    from edgeconv.exporters.coreml.mil.program import from_pymil

    prog = from_pymil(mlmodel._mil_program.functions["main"])
    want_act, want_w = pt2e_params(program)
    got_act = {(p.scale, p.zero_point) for _, p in activation_quant(prog)}
    got_w = {(q.scale, q.zero_point) for s in prog.steps if (q := constexpr_quant(prog, s))}
    missing_a = [p for p in want_act if (p.scale, p.zero_point) not in got_act]
    missing_w = [p for p in want_w if (p.scale, p.zero_point) not in got_w]
    if missing_a or missing_w:
        raise EdgeconvError(f"coreml-w8a8 lost edgeconv's scales: {len(missing_a)} activation and "
                            f"{len(missing_w)} weight parameter sets differ from PT2E's")
    return (f"all {len(want_act)} activation and {len(want_w)} weight scale/zero-point sets equal PT2E's "
            f"({len(got_act)} distinct activation quantize params in the artifact)")


# --- targets -------------------------------------------------------------------------------

class CoreMLTarget(Target):
    format = FORMATS.get("coreml")
    # Both engines, platform-independent (the README table is generated from it); the runner that
    # load() returns names the one that actually ran (its `runtime`).
    runtime = f"{ENGINE_PREDICT} (macOS) / {ENGINE_MIL_EVAL.removeprefix('coreml: ')} (elsewhere)"
    precision: ClassVar[str] = "fp32"
    weight_int8: ClassVar[bool] = False

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        notes: list[str] = [f"mlprogram, minimum deployment target {DEPLOYMENT_TARGET}, compute {self.precision}"]
        scales_from = ""
        program = coreml_program(graph)
        mlmodel = convert(program, self.precision, keep_scales=self.quantized, target=self.name,
                          names=output_names(graph, ctx), inputs=input_names(graph, ctx))
        if self.quantized:
            summary = check_scales(mlmodel, program)
            scales_from = (
                "PT2E program lowered by ct.convert as iOS17 quantize/dequantize + constexpr_affine_dequantize "
                f"ops; compute_precision FLOAT32 and default MIL passes {', '.join(W8A8_REMOVED_PASSES)} removed "
                f"so no scale is rescaled, stored in fp16 or rewritten to uint8; checked: {summary}")
            notes.append(scales_from)
        if self.weight_int8:
            skip = tuple(graph.float_nodes)
            mlmodel = quantize_weights(mlmodel, skip)
            n = len(weight_const_names_after(mlmodel))
            notes.append(f"linear_quantize_weights linear_symmetric int8 per_channel, weight_threshold=0: "
                         f"{n} conv/linear weights quantized" + (f"; kept float: {', '.join(skip)}" if skip else ""))
        if graph.float_nodes and not self.weight_int8:
            notes.append(f"float nodes honoured: {', '.join(graph.float_nodes)}")
        save(mlmodel, path)
        return ExportInfo(notes=tuple(notes), scales_from=scales_from,
                          float_ops=float_ops(path) if self.quantized else None)


def weight_const_names_after(mlmodel: Any) -> list[str]:
    func = mlmodel._mil_program.functions["main"]
    return [op.name for op in func.operations
            if op.op_type in WEIGHT_OPS and op.inputs["weight"].op is not None
            and op.inputs["weight"].op.op_type.startswith("constexpr_")]


def save(mlmodel: Any, path: Path) -> None:
    """Save the package under a temp name beside `path`, then rename: never a half-written package."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = tmp / "model.mlpackage"
        with _quiet():
            mlmodel.save(str(staged))
        import gc

        gc.collect()  # coremltools' native package writer may still touch Manifest.json until collected
        _reproducible(staged)
        if path.exists():
            shutil.rmtree(path)
        staged.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)




def _reproducible(package: Path) -> None:
    """The same program gives the same bytes, run after run and day after day, so a package's
    sha256 identifies what it computes (the manifest, `edgeconv check`, gate baselines). coremltools
    writes a random item UUID into Manifest.json, the conversion date into the metadata, and the
    metadata map in no fixed order: the identifiers become name-derived UUIDs, the date goes (the
    manifest records the tool versions), and the spec is re-serialized deterministically."""
    import json
    import uuid

    from coremltools.proto import Model_pb2

    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"edgeconv:{item['path']}"))
           for old, item in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {ids[k]: v for k, v in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = ids.get(manifest["rootModelIdentifier"], manifest["rootModelIdentifier"])
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    for item in manifest["itemInfoEntries"].values():
        spec_path = package / "Data" / item["path"]
        if spec_path.is_file() and spec_path.name.endswith(".mlmodel"):
            spec = Model_pb2.Model.FromString(spec_path.read_bytes())
            spec.description.metadata.userDefined.pop("com.github.apple.coremltools.conversion_date", None)
            spec_path.write_bytes(spec.SerializeToString(deterministic=True))


@TARGETS.register("coreml")
class CoreMLFP32(CoreMLTarget):
    name = "coreml"
    passes = FLOAT_PASSES
    tolerance = FLOAT_TOLERANCE
    description = "CoreML mlprogram, fp32 compute and weights"


@TARGETS.register("coreml-fp16")
class CoreMLFP16(CoreMLTarget):
    name = "coreml-fp16"
    half_precision = True
    precision = "fp16"
    passes = FLOAT_PASSES
    tolerance = FP16_TOLERANCE
    description = "CoreML mlprogram, fp16 compute and weights"


@TARGETS.register("coreml-int8")
class CoreMLInt8(CoreMLTarget):
    name = "coreml-int8"
    weight_int8 = True
    passes = FLOAT_PASSES
    # Judged against torch computing with the very weights the file stores (rounded as coremltools
    # rounds them): the artifact must reproduce that to float rounding. What rounding the weights
    # costs against fp32 is the quantization's: the accuracy column shows it beside fp32's.
    parity_reference = "torch-int8-weights"
    tolerance = FLOAT_TOLERANCE
    description = "CoreML mlprogram, int8 per-channel weights on every conv/linear, fp32 activations"


@TARGETS.register("coreml-w8a8")
class CoreMLW8A8(CoreMLTarget):
    name = "coreml-w8a8"
    quantized = True
    passes = INT8_PASSES
    # Float arithmetic like the torch simulation: at most one rounding flip (plus float slack). The
    # fp32 floors judge the int8 program, which is the same in every format: the same floors as the
    # other int8 targets (a stricter 0.98 cosine failed Core ML files of programs that ONNX and TFLite
    # files of the very same program passed).
    tolerance = dataclasses.replace(INT8_TOLERANCE, vs_sim_max_steps=1.5)
    description = "CoreML mlprogram, int8 weights and activations with edgeconv's PT2E scales"
