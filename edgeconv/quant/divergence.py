"""Cross-format divergence: where does an int8 artifact start to differ from the torch quantized
simulation it was lowered from?

Every int8 activation of the torch program (each `quantize_per_tensor` node) is compared, as
integers, with the matching int8 tensor inside the artifact, which the artifact's format reads
(`Format.int8_tensors`: ONNX adds every QuantizeLinear output as a graph output, TFLite's
interpreter keeps every intermediate, CoreML's MIL evaluator keeps every `quantize` output).

Tensors are matched by name where the format keeps it (ONNX), else by order, scale, zero point and
size (names change in litert-torch and coremltools). A tensor that only exists before a fused
activation (conv -> quantize -> relu -> quantize with the same scale: formats fuse the pair) is
left out on every side. A simulation tensor that only copies another at the same parameters (a
relayout, or the identity requantization a removed dropout or `.contiguous()` leaves) is paired only
with a file tensor holding its source's integers where the simulation's op puts them, else it is
covered by its source; a copy of such a copy, by the nearest tensor up the chain the file has.
The report names the first layer whose tensor differs by more than N steps.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.errors import UserError
from edgeconv.exporters.formats import QTensor, format_for, int_values, join_samples
from edgeconv.inputs import Batch, count
from edgeconv.quant.program import folded_simulation
from edgeconv.quant.qparams import SCALE_RTOL
from edgeconv.results import Record, TensorDrift

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeconv.graph import Graph

FUSABLE = ("relu", "hardtanh", "clamp", "clip", "relu6")  # aten activations a format fuses into the op before


@dataclasses.dataclass(frozen=True)
class DivergenceReport(Record):
    artifact: str
    format: str
    threshold_steps: float
    samples: int
    matched: int
    unmatched: tuple[str, ...]  # torch tensors with no counterpart in the artifact
    tensors: tuple[TensorDrift, ...]
    first_divergent: TensorDrift | None
    # each layer in isolation: the simulation's layer fed the artifact's own int8 inputs (None: not run)
    isolated: tuple[TensorDrift, ...] | None = None
    # every simulation tensor not judged in isolation, as "tensor (layer): why" — none is left out silently
    excluded: tuple[str, ...] = ()
    # simulation tensors that re-lay out another with the same scale (a view): the format keeps one
    # tensor for both, so judging the source judges them
    covered: tuple[str, ...] = ()
    # "layer: ..." for each tensor the file stores at other quantization parameters than the
    # simulation's (same real values): a finding at that layer
    rescaled: tuple[str, ...] = ()
    # "tensor (layer): judged within ..." for each simulation tensor the file has no int8 tensor for
    # because it computes it inside a larger op (a LayerNorm's centred input, a concat input's
    # requantization, a broadcast): every path from it reaches tensors judged in isolation, whose
    # check recomputes it from the artifact's own inputs
    within: tuple[str, ...] = ()

    @property
    def worst_isolated(self) -> TensorDrift | None:
        return max(self.isolated, key=lambda d: d.max_steps) if self.isolated else None

    def summary(self) -> str:
        head = f"{self.format} {Path(self.artifact).name}: {self.matched} int8 tensors compared on {self.samples} samples"
        if self.first_divergent is None:
            worst = max((t.max_steps for t in self.tensors), default=0.0)
            return (f"{head}; none drifts by more than {self.threshold_steps:g} steps (worst {worst:g})"
                    + self.isolated_summary())
        d = self.first_divergent
        return (f"{head}; first drift > {self.threshold_steps:g} steps at {d.layer or d.tensor} "
                f"(tensor {d.tensor}: max {d.max_steps:g} steps, {100 * d.share_off:.1f}% of values differ)"
                + self.isolated_summary())

    def isolated_summary(self) -> str:
        w = self.worst_isolated
        if w is None:
            return ""
        return (f"; each layer in isolation (fed the artifact's own inputs): worst {w.max_steps:g} steps at "
                f"{w.layer or w.tensor}")


# --- torch quantized simulation ------------------------------------------------------------------

def int8_values_per_sample(gm: Any) -> int:
    """How many int8 activation values one sample of the torch quantized program `gm` (its folded
    simulation) writes, from the shapes its capture recorded: what `torch_tensors` keeps a sample, and
    about what the artifact's reading keeps beside it."""
    from edgeconv.quant.program import is_q

    total = 0
    for n in gm.graph.nodes:
        if is_q(n) and "per_tensor" in str(n.target) and getattr(n.args[0], "op", None) != "get_attr":
            val = n.meta.get("val", getattr(n.args[0], "meta", {}).get("val"))
            total += int(val.numel()) if hasattr(val, "numel") else 0
    return total


def torch_tensors(graph: "Graph", x: "Batch", gm: Any = None) -> list[QTensor]:
    """Int8 activations of the torch quantized program, in graph order (fused pre-activations left out);
    `x` feeds every input of the net (edgeconv.inputs)."""
    import torch

    from edgeconv.inputs import torch_rows
    from edgeconv.quant.program import folded_simulation, is_q, module_path, producing_layer

    gm = gm if gm is not None else folded_simulation(graph)  # weights quantized once, not on every sample
    qnodes = [n for n in gm.graph.nodes if is_q(n) and "per_tensor" in str(n.target)
              and getattr(n.args[0], "op", None) != "get_attr"]
    fused = {q.name for q in qnodes if _torch_fused(q)}
    keep = [q for q in qnodes if q.name not in fused]
    rows: dict[str, list[np.ndarray]] = {q.name: [] for q in keep}

    class Record_(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name in rows:
                rows[n.name].append(int_values(out.detach().numpy()))
            return out

    with torch.no_grad():
        for i in range(count(x)):
            Record_(gm).run(*torch_rows(x, i, i + 1))
    shapes = {k: np.shape(v[0]) if v else None for k, v in rows.items()}  # one sample's
    out = []
    for q in keep:
        src = q.args[0]
        owner = producing_layer(src)
        layer = module_path(owner) if owner is not None else module_path(src) if hasattr(src, "meta") else ""
        before, op = _copy_of(q)
        out.append(QTensor(src.name if hasattr(src, "name") else q.name, float(q.args[1]), int(q.args[2]),
                           join_samples(rows.pop(q.name)), layer or getattr(src, "name", ""), q.name,
                           before, _moves(op, shapes.get(before), shapes[q.name]) if before else None))
    return out


# Ops that only move or re-lay out values: an int8 tensor made by one of them from a tensor with the
# same scale and zero point holds the same integers in another order.
# Overlapping windows (`Tensor.unfold`: HaloAttn's halo windows) repeat values as expand does; left out,
# the simulation's window tensor was no copy, and among the same-sized int8 tensors a file keeps for
# the windows (the gather before the transpose that puts each window's elements last:
# exporters.lowering.unfold_as_gather) the first one won, in the wrong layout: the tensors after it
# were then fed a misordered window map (timm HaloNet-H1 stages.1.0.self_attn.kv: 91 steps in
# isolation, TFLite and Core ML alike, on files 2 steps from the simulation end to end).
LAYOUT_OPS = ("view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "_unsafe_view",
              "clone", "contiguous", "expand", "unfold")
# Pads move values too, filling the border: with the zero point (0.0) for a constant pad, with
# values of the tensor for reflect / replicate. A pad by nothing (timm's patch merging of an even
# map, `F.pad(x, (0, 0, 0, H % 2, 0, W % 2))`) is an identity the files elide: taken for a tensor of
# its own, Swin-T's was paired with the file's 6-D view of the next reshape and then fed the block
# before's output (tflite-int8: 4 steps at layers.1.downsample on a faithful file).
PAD_OPS = ("pad", "constant_pad_nd")
# Where a pad's replayed map marks a border value: the copy holds the zero point there.
FILL = -1


def _copy_of(q: Any) -> tuple[str, Any]:
    """The quantize node whose values `q` holds with the same scale and zero point, and the layout
    op in between (None for an identity requantization q(dq(q')), which holds them as they are);
    ("", None) when `q` is no copy."""
    from edgeconv.quant.program import is_dq, is_q

    src = q.args[0]
    name = str(getattr(src, "target", ""))
    if is_dq(src):
        dq, op = src, None
    elif getattr(src, "op", None) == "call_function" and (_named(name, LAYOUT_OPS) or _zero_fill_pad(src, name)):
        dq, op = (src.args[0] if src.args else None), src
    elif _identity_arith(src, name):
        dq, op = src.args[0], None
    else:
        return "", None
    if not (is_dq(dq) and is_q(dq.args[0])):
        return "", None
    before = dq.args[0]
    same = (float(before.args[1]), int(before.args[2])) == (float(q.args[1]), int(q.args[2]))
    return (before.name, op) if same else ("", None)


# Elementwise ops that leave x as it is when the other operand is this constant everywhere: x + 0,
# x - 0, x * 1, x / 1. Converters drop them (coremltools' noop_elimination), with the requantization
# after them at the same scale and zero point: CSATv2's SpatialTransformerBlock adds its MLP branch,
# a constant (its LayerNorm(1) input is one value) that the simulation holds as 0 — the .mlpackage
# keeps one int8 tensor for both adds, and the second add, taken for a tensor of its own, was paired
# with another block's tensor of the same parameters 130 tensors on (72 steps in isolation).
IDENTITY_OPERAND = {"add": 0.0, "sub": 0.0, "mul": 1.0, "div": 1.0}


def _identity_arith(node: Any, target: str) -> bool:
    """`node` is x (op) c with c a constant (a number or a get_attr tensor) that leaves x unchanged,
    broadcast to no larger shape than x's."""
    import torch

    from edgeconv.quant.program import _get_attr

    unit = next((v for op, v in IDENTITY_OPERAND.items() if _named(target, (op,))), None)
    if unit is None or getattr(node, "op", None) != "call_function" or len(node.args) != 2 or node.kwargs:
        return False
    x, c = node.args
    if isinstance(c, (int, float)):
        return float(c) == unit
    gm = node.graph.owning_module
    if getattr(c, "op", None) != "get_attr" or gm is None:
        return False
    const, val = _get_attr(gm, c.target), getattr(x, "meta", {}).get("val")
    if not isinstance(const, torch.Tensor) or not isinstance(val, torch.Tensor):
        return False
    try:
        wider = torch.broadcast_shapes(tuple(val.shape), tuple(const.shape)) != tuple(val.shape)
    except RuntimeError:
        return False
    return not wider and bool((const == unit).all())


def _named(target: str, ops: tuple[str, ...]) -> bool:
    return any(f"aten.{op}." in target or target.endswith(f".{op}") for op in ops)


def _zero_fill_pad(node: Any, target: str) -> bool:
    """A pad whose border, if any, holds 0.0 (the zero point) or values of the tensor itself."""
    if not _named(target, PAD_OPS):
        return False
    at = 2 if "constant_pad_nd" in target else 3  # constant_pad_nd(x, pad, value); pad(x, pad, mode, value)
    value = node.args[at] if len(node.args) > at else node.kwargs.get("value")
    return _pad_mode(node, target) != "constant" or not value


def _replay(op: Any, idx: Any) -> Any:
    """The layout op applied to an index tensor; a constant pad fills its border with FILL."""
    target = str(op.target)
    if not _named(target, PAD_OPS) or _pad_mode(op, target) != "constant":
        return op.target(idx, *op.args[1:], **op.kwargs)
    return op.target(idx - FILL, op.args[1]) + FILL  # indices shifted off 0, the border at 0, shifted back


def _pad_mode(node: Any, target: str) -> str:
    if "constant_pad_nd" in target:
        return "constant"
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")


def _moves(op: Any, shape: tuple[int, ...] | None, own: tuple[int, ...] | None) -> np.ndarray | None:
    """Where each value of a copy comes from: the simulation's layout op replayed on the indices of
    one sample of its source (`shape`, `own`: one sample's shape of the source and of the copy; None
    where no sample ran). None where the op takes a computed argument or does not replay to the
    copy's shape. int32 (one sample's indices): a net's copies are a large share of its activations."""
    import torch

    if shape is None or own is None:
        return None
    idx = torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(shape)
    if op is not None:
        computed: list[Any] = []  # Nodes among the op's other arguments (a shape computed at run time)
        torch.fx.node.map_arg((op.args[1:], op.kwargs), lambda a: computed.append(a) or a)
        if computed:
            return None
        try:
            idx = _replay(op, idx)
        except Exception:  # noqa: BLE001 — an op that does not take integers: no map, the weaker check stays
            return None
    out = np.asarray(idx)
    return out.astype(np.int32) if out.shape == tuple(own) and out.size < 2 ** 31 else None


def _torch_fused(q: Any) -> bool:
    """q quantizes a tensor whose only consumers are activations re-quantized with the same params."""
    from edgeconv.quant.program import is_dq, is_q

    users = [u for d in q.users if is_dq(d) for u in d.users]
    if not users or any(not is_dq(d) for d in q.users):
        return False
    for u in users:
        if not any(f in str(u.target) for f in FUSABLE):
            return False
        nxt = [w for w in u.users if is_q(w)]
        if len(nxt) != 1 or (float(nxt[0].args[1]), int(nxt[0].args[2])) != (float(q.args[1]), int(q.args[2])):
            return False
    return True


# --- matching and the report ----------------------------------------------------------------------

def _views(t: np.ndarray, a: np.ndarray) -> list[np.ndarray]:
    """The layouts the artifact tensor `a` may have relative to the torch tensor `t` (all samples
    stacked), each as an array of `t`'s shape; empty when they cannot be the same tensor.
    Inside a TFLite model most 4-D tensors are NHWC but a transposed copy is NCHW."""
    if a.size != t.size:
        return []
    views = [a] if a.shape == t.shape else []
    if a.ndim == 4 and t.ndim == 4 and a.shape[3] == t.shape[1] and a.transpose(0, 3, 1, 2).shape == t.shape:
        views.append(a.transpose(0, 3, 1, 2))
    if not views:
        views.append(a.reshape(t.shape))  # e.g. (1, 64) vs (1, 64, 1, 1) around a flatten
        if t.ndim >= 2 and t.shape[-1] != t.shape[-2]:  # or a transpose of the last two axes (k^T)
            views.append(a.reshape(t.shape[:-2] + (t.shape[-1], t.shape[-2])).swapaxes(-1, -2))
    return views


def _align(t: np.ndarray, a: np.ndarray) -> np.ndarray | None:
    """The artifact tensor `a` in the torch tensor's layout, or None if they cannot be the same:
    of the layouts that fit the shape, the one whose values are closer is the tensor's."""
    views = _views(t, a)
    return min(views, key=lambda v: _gap(t, v)) if views else None


# About how many values a choice between layouts compares (`_gap`, `_same_values_other_layout`).
GAP_SAMPLES = 16384


def _same_values_other_layout(t: np.ndarray, a: np.ndarray) -> bool:
    """The same multiset of values laid out differently: a copy of the tensor in a layout `_views`
    does not list — not a tensor to feed the simulation. Only meaningful against the simulation's
    value computed from the artifact's own inputs (against the end-to-end simulation, a deep net's
    cascaded rounding looks the same). A copy holds the very integers its op computed, so its sorted
    values equal the simulation's but for rare one-step rounding ties: a mean sorted difference of at
    most LAYOUT_COPY_MAX_SORTED steps. A wrong kernel (a transposed one) keeps the histogram's shape
    but not the values, and is fed and judged at its own layer."""
    k = max(1, t.size // GAP_SAMPLES)
    return _gap(t, a) > 2 and float(np.abs(np.sort(t.reshape(-1))[::k].astype(np.int64)
                                           - np.sort(a.reshape(-1))[::k].astype(np.int64)).mean()) <= LAYOUT_COPY_MAX_SORTED


# A layout copy differs from the simulation's value by rounding ties only (a few % of values, one
# step each); a transposed 3×3 kernel on the demo's digits: 0.55 steps.
LAYOUT_COPY_MAX_SORTED = 0.1


def _gap(t: np.ndarray, a: np.ndarray) -> float:
    """Mean |difference| in steps, on an evenly strided subset (a choice between layouts, not a score)."""
    k = _stride(t.size)
    return float(np.abs(t.reshape(-1)[::k].astype(np.int64) - a.reshape(-1)[::k].astype(np.int64)).mean())


def _stride(n: int) -> int:
    """A stride giving about GAP_SAMPLES of n values, coprime with n. Layouts of one tensor differ
    within a period that divides its size (a window's 14 × 14 elements); a stride that is a multiple
    of that period reads the same element of every window in each layout, and two layouts tie. With
    HaloNet's 4 × 256 × 4 × 4 windows of 196, n // 16384 was 196 exactly: the file's window tensor
    before its transpose tied at 0.003 steps with the one after it (143 steps apart in full), and the
    first won. A stride coprime with n visits every offset of every period that divides n."""
    k = max(1, n // GAP_SAMPLES)
    while k > 1 and math.gcd(k, n) != 1:
        k += 1
    return k


# Ops that share their input's scale (pool, reshape, transpose) make runs of tensors with equal
# scale, zero point and size: among the next few such candidates, the closest values decide.
MATCH_WINDOW = 6


def match(ours: list[QTensor], theirs: list[QTensor]) -> list[tuple[QTensor, QTensor | None]]:
    """Pair each torch tensor with an artifact tensor of the same scale, zero point and size: the
    same-named one and the next few unused ones in order are candidates, the closest values win
    (a name the exporter reused for another tensor, or a run of shared-scale copies, cannot
    mislead it); the name wins a tie."""
    index = {id(t): j for j, t in enumerate(theirs)}
    by_name = {t.name: t for t in theirs}
    by_qnode = {q.qnode: q for q in ours if q.qnode}
    used: set[int] = set()
    pairs = []
    paired: dict[str, QTensor] = {}  # torch quantize node -> its artifact tensor
    cursor = 0
    for q in ours:
        src, source, moves = _paired_source(q, by_qnode, paired)
        copy = _copy_check(q, moves, src, source) if source is not None else None
        order = [j for j in list(range(cursor, len(theirs))) + list(range(0, cursor))
                 if id(theirs[j]) not in used and _compatible(q, theirs[j]) and (copy is None or copy(theirs[j]))]
        cands = order[:MATCH_WINDOW]
        hit = by_name.get(q.name)
        if hit is not None and id(hit) not in used and _compatible(q, hit):
            cands = [index[id(hit)]] + [j for j in cands if theirs[j] is not hit]
        elif copy is not None and len(cands) > 1 and cands[0] != index[id(source)] + 1 \
                and _in_place(q, by_qnode.get(q.copy_of)):
            cands = []  # several tensors hold the source's integers, none next to it: ops' (_in_place)
        if not cands:
            given = _from_copy(q, pairs, paired)
            pairs.append((q, given))
            if given is not None:
                paired[q.qnode] = given
            continue
        j = min(cands, key=lambda k: _gap(q.values, _align(q.values, theirs[k].values)))
        used.add(id(theirs[j]))
        if theirs[j] is not hit:
            cursor = j + 1
        pairs.append((q, theirs[j]))
        paired[q.qnode] = theirs[j]
    return pairs


def _in_place(q: QTensor, src: QTensor | None) -> bool:
    """Whether the copy `q` holds its source's (`src`) integers where they were, in its shape (an identity requantization
    a removed dropout leaves, a `.contiguous()`): files elide such a copy. Where several artifact
    tensors hold those integers, ops after it computed the same ones — a residual add whose branch
    is below half a step (CaiT's layer scale at its 1e-5 init), a multiply by ones — and the copy,
    met first, took the first op's tensor: every later op then took the next one's, and the norm
    after each add the other norm's (tiny CaiT's blocks.1.norm2: 3 steps in isolation on a file
    with 0 steps end to end). Unless the first of them comes right after the source's tensor in the
    file (a copy the file kept), such a copy is left to be covered by its source."""
    m = q.moves
    return m is not None and src is not None and src.values.shape == q.values.shape \
        and bool((m.reshape(-1) == np.arange(m.size)).all())


def _from_copy(q: QTensor, pairs: list[tuple[QTensor, QTensor | None]], paired: dict[str, QTensor]) -> QTensor | None:
    """The artifact tensor a copy just before `q` was paired with, taken back for `q` when no other
    fits it: an op whose output equals its input (a layer scale of ones, `gamma * x`, after the
    identity requantization a removed dropout leaves) holds the copy's integers at the copy's
    parameters, and the copy, met first, took the op's tensor. A file elides such copies; one left
    without a tensor is covered by its source, an op left without one is unverified (timm XCiT:
    blocks.8's `gamma2 * mlp(x)` kept the end-to-end ceiling on a file whose every layer was within
    a step). Taken only from a copy whose source is paired, and holding values at least as close
    to `q`'s as to the copy's."""
    if q.copy_of:
        return None
    for i in range(len(pairs) - 1, max(-1, len(pairs) - 1 - MATCH_WINDOW), -1):
        c, b = pairs[i]
        if b is None or not c.copy_of or c.copy_of not in paired or not _compatible(q, b):
            continue
        if _gap(q.values, _align(q.values, b.values)) <= _gap(c.values, _align(c.values, b.values)):
            pairs[i] = (c, None)
            paired.pop(c.qnode, None)
            return b
    return None


def _paired_source(q: QTensor, by_qnode: dict[str, QTensor], paired: dict[str, QTensor]
                   ) -> tuple[QTensor | None, QTensor | None, np.ndarray | None]:
    """For a copy `q`: the nearest simulation tensor up its chain of copies that has an artifact
    tensor, that artifact tensor, and where each of `q`'s values comes from in it (the chain's moves
    composed; None where a link was not replayed). (None, None, None) when no tensor up the chain
    is paired, or `q` is no copy.

    A copy of a copy the file elided is still a copy of what the file kept: CoaT's factorized
    attention lays its k-softmax out by reshape → permute → transpose, which litert-torch folds
    into the matmul. Judged against its immediate source only (unpaired), the permute took the
    next block's softmax — same fixed 1/256 grid and size — and left that softmax with no tensor:
    52 tensors of timm CoaT-Ti's TFLite file unverified, 13 blocks' k-softmax among them."""
    moves, cur = q.moves, q
    for _ in range(len(by_qnode)):
        src = by_qnode.get(cur.copy_of) if cur.copy_of else None
        if src is None:
            return None, None, None
        if src.qnode in paired:
            return src, paired[src.qnode], moves
        # through an unpaired copy: its own moves index its source's sample, ours index its sample
        fits = moves is not None and src.moves is not None and moves.size and int(moves.max()) < src.moves.size
        moves = np.where(moves == FILL, FILL, src.moves.reshape(-1)[np.maximum(moves, 0)]) if fits else None
        cur = src
    return None, None, None


def _copy_check(q: QTensor, moves: np.ndarray | None, src: QTensor | None, art_src: QTensor
                ) -> Callable[[QTensor], bool]:
    """What an artifact tensor must hold to be the file's copy of the simulation's copy `q` of `src`
    (its source, or an ancestor up a chain of copies), given the artifact tensor `art_src` paired with
    `src`: `art_src`'s integers moved the way the simulation moves them (`moves`, the chain's moves
    composed), in a layout `_views` undoes. A copy the file elided has no
    counterpart, and holding the same integers in some order is not enough: the rolled halves of a
    shifted window (slices and a concat at one scale) hold the same multiset, and Swin's crop after
    the window merge — an identity requantization in the simulation — was paired with the file's
    rolled tensor and fed to the roll's slices (65 steps at attn.proj in TFLite and Core ML alike).
    Without a replayed map, the multiset is what is checked."""
    moved = _moved(q, moves, src, art_src)
    if moved is None:
        return lambda b: _holds_values_of(b, art_src)

    def holds(b: QTensor) -> bool:
        return any(int(np.abs(v.astype(np.int64) - moved).max(initial=0)) <= 1
                   and float((v != moved).mean()) <= COPY_MAX_SHARE for v in _views(q.values, b.values))
    return holds


# A copy holds its source's integers; a file that stores it at a scale it recomputed (within
# SCALE_RTOL) may re-round a rare tie by one step.
COPY_MAX_SHARE = 0.01


def _moved(q: QTensor, moves: np.ndarray | None, src: QTensor | None, art_src: QTensor) -> np.ndarray | None:
    """`art_src` (the file's tensor for `src`) moved by the simulation's layout ops (`moves`) into
    `q`'s layout, or None where there is no replayed map or the sizes do not fit one."""
    if moves is None or src is None or moves.size == 0:
        return None
    n = q.values.size // moves.size  # samples: each sample's block of rows is one replay
    if n * moves.size != q.values.size or src.values.size % max(n, 1) or not n:
        return None
    per = src.values.size // n
    aligned = _align(src.values, art_src.values)
    if aligned is None or int(moves.max()) >= per:
        return None
    moves = moves.reshape(-1)
    out = aligned.reshape(n, per)[:, np.maximum(moves, 0)].astype(np.int64)
    out[:, moves == FILL] = q.zero_point  # a constant pad's border: 0.0
    return out.reshape(q.values.shape)


def _holds_values_of(b: QTensor, a: QTensor) -> bool:
    """Whether `b` holds `a`'s integers in some order: what the artifact's copy of a re-laid-out
    tensor must hold. A relayout the file elided has no copy, and the simulation's tensor is then
    covered by its source; without this, a same-sized tensor with the same fixed parameters further
    on (the next block's softmax, at 1/256) was paired with it and fed to the layers after it."""
    return b.values.size == a.values.size and np.array_equal(np.sort(b.values, axis=None), np.sort(a.values, axis=None))


# An artifact tensor that holds the simulation's tensor at other quantization parameters: its
# dequantized values within this relative L2 of the simulation's (the same values re-rounded on
# another grid: about a step's worth; consecutive tensors of a residual stream are 5-10 % apart).
RESCALED_MAX_REL_L2 = 0.02


def rescaled(pairs: list[tuple[QTensor, QTensor | None]], theirs: list[QTensor]) -> list[tuple[QTensor, QTensor]]:
    """Simulation tensors left unmatched for which an unused artifact tensor of the same size, in
    the same place (between the artifact tensors matched to its neighbours), holds the same real
    values at another scale or zero point: a quantization parameter the file changed. Each is a
    finding at that tensor's layer — not an unmatched tensor whose consumer takes the blame. A
    tensor at the simulation's own parameters (within SCALE_RTOL) is none: `match` left it unpaired
    for its values (a copy whose file tensor is not its source's integers moved), and reported as
    "stored at other parameters" it named the same scale and zero point twice."""
    used = {id(a) for _, a in pairs if a is not None}
    found = []
    for i, (q, a) in enumerate(pairs):
        if a is not None:
            continue
        cands = [b for b in in_place(i, pairs, theirs, used) if not _compatible(q, b)]
        scored = [(_float_rel_l2(q, b), k) for k, b in enumerate(cands)]
        if scored:
            err, k = min(scored)
            if err <= RESCALED_MAX_REL_L2:
                used.add(id(cands[k]))
                found.append((q, cands[k]))
    return found


def in_place(i: int, pairs: list[tuple[QTensor, QTensor | None]], theirs: list[QTensor], used: set[int]) -> list[QTensor]:
    """The unused artifact tensors of the size of pairs[i]'s simulation tensor that lie where it
    would (between the artifact tensors matched to its neighbours)."""
    index = {id(t): j for j, t in enumerate(theirs)}
    at = [index[id(a)] if a is not None else None for _, a in pairs]
    lo = next((at[k] for k in range(i - 1, -1, -1) if at[k] is not None), -1)
    hi = next((at[k] for k in range(i + 1, len(at)) if at[k] is not None), len(theirs))
    size = pairs[i][0].values.size
    return [b for b in theirs[lo + 1:hi] if id(b) not in used and b.values.size == size]


def _float_rel_l2(q: QTensor, a: QTensor) -> float:
    """Relative L2 between the real values two int8 tensors encode, in the best layout that fits."""
    fq = (q.values.astype(np.float64) - q.zero_point) * q.scale
    norm = float(np.linalg.norm(fq)) or 1.0
    return min((float(np.linalg.norm((v.astype(np.float64) - a.zero_point) * a.scale - fq)) / norm
                for v in _views(q.values, a.values)), default=float("inf"))


def _compatible(q: QTensor, a: QTensor) -> bool:
    return (abs(q.scale - a.scale) <= SCALE_RTOL * q.scale and q.zero_point == a.zero_point
            and q.values.size == a.values.size)


def check_artifact(artifact: Path | str) -> None:
    """A one-line UserError unless `artifact` is a file of a format that reads its int8 tensors and
    opens in its reader (checked before any quantization work, so a corrupt file fails at once)."""
    path = Path(artifact)
    fmt = format_for(path)
    fmt.check(path)


def isolated_drifts(graph: "Graph", pairs: list[tuple[QTensor, QTensor | None]], x: "Batch",
                    gm: Any = None, theirs: list[QTensor] | None = None
                    ) -> tuple[tuple[TensorDrift, ...], tuple[str, ...], tuple[str, ...]]:
    """Each layer judged alone: the torch simulation runs with every matched int8 tensor replaced by
    the artifact's own, so each quantize node computes from exactly the inputs the artifact's op
    saw. What remains is that op's lowering (requantization, rounding, kernel), not errors that
    rounding flips upstream cascaded into it — the check that separates a lowering bug from a
    deep net's accumulated rounding.

    Which artifact tensor (and layout) feeds a node is decided here, on the first sample, against
    the simulation's value computed from the artifact's inputs — never against the end-to-end
    simulation. Deep random-init and real nets cascade rounding into tens of steps end to end; a
    decision made on those values refused to feed correct tensors (their drift looked like "the
    same values in another layout" or an ambiguous slice), so the layer after them — e.g. the 1×1
    conv after a squeeze-excite MEAN — was judged on the simulation's own input and charged with
    the cascade (EfficientNet-B0: 8 steps on 60 % of values; fed the artifact's MEAN: 0).
    A node is not fed when no candidate comes within 2 steps and either several artifact tensors
    fit it (slices of one tensor: which one cannot be told) or the nearest holds the same values
    in a layout `_views` cannot undo. Candidates holding exactly the chosen tensor's integers on the
    first sample (every softmax of a padded window uniform there) stay in the running until a
    sample tells them apart (`_Feeds._untie`)."""
    import torch

    from edgeconv.inputs import torch_rows
    from edgeconv.quant.program import folded_simulation

    gm = gm if gm is not None else folded_simulation(graph)  # read-only here: the caller's may be shared
    feeds = _Feeds(pairs, theirs or [], count(x))
    # per node: [max, sum, values off, values off by more than a step, values] over the samples —
    # running sums, not the differences themselves (8 bytes a value of every tensor and sample)
    diffs: dict[str, list[float]] = {k: [] for k in feeds.cands}

    class Forced(torch.fx.Interpreter):
        def __init__(self, module: Any, i: int) -> None:
            super().__init__(module)
            self.i = i

        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name not in feeds.cands:
                return out
            mine = out.detach().numpy().astype(np.int64)
            theirs_i = feeds.value(n.name, mine, self.i, _input_qnodes(n))
            if theirs_i is None:
                return out
            d = np.abs(mine - theirs_i.astype(np.int64))
            stats = diffs[n.name] or [0.0, 0.0, 0, 0, 0]
            diffs[n.name] = [max(stats[0], float(d.max(initial=0))), stats[1] + float(d.sum()),
                             stats[2] + int(np.count_nonzero(d)), stats[3] + int(np.count_nonzero(d > 1)),
                             stats[4] + d.size]
            return torch.from_numpy(np.ascontiguousarray(theirs_i)).to(out.dtype)

    with torch.no_grad():
        for i in range(count(x)):
            Forced(gm, i).run(*torch_rows(x, i, i + 1))
    out = []
    for name, pick in feeds.chosen.items():
        if pick is None or not diffs[name]:
            continue
        q, art = feeds.cands[name][0], pick[0]
        top, total, off, off1, size = diffs[name]
        size = max(size, 1)  # a 0-element tensor: nothing differs
        out.append(TensorDrift(q.name, q.layer, art.name, q.scale, q.zero_point, float(top), total / size,
                               off / size, off1 / size))
    return tuple(out), feeds.excluded(), tuple(feeds.relaid)


class _Feeds:
    """Which artifact tensor (and layout) stands in for each simulation tensor in isolation, decided
    on the first sample against what the node computes from the artifact's own inputs (among
    tensors equal on it, on the first sample that tells them apart), with the reason for every node
    left unfed."""

    def __init__(self, pairs: list[tuple[QTensor, QTensor | None]], theirs: list[QTensor], samples: int) -> None:
        self.samples = samples
        # every layout of the matched artifact tensor over all samples at once (its rows need not be
        # one per sample), and the other artifact tensors it could be (same scale, zero point and size)
        self.cands: dict[str, tuple[QTensor, QTensor, list[np.ndarray], list[tuple[QTensor, list[np.ndarray]]]]] = {}
        self.unfit: list[str] = []
        for q, a in pairs:
            if a is None or not q.qnode:
                continue
            views = _views(q.values, a.values)
            if not views:
                self.unfit.append(f"{q.name} ({q.layer}): the artifact's {a.name} cannot be laid out as the "
                                  "simulation's tensor")
                continue
            others = [(b, _views(q.values, b.values)) for b in theirs if b is not a and _compatible(q, b)]
            self.cands[q.qnode] = (q, a, views, others)
        self.chosen: dict[str, tuple[QTensor, np.ndarray] | None] = {}
        # per fed node: the other candidates (in a layout) holding exactly the chosen tensor's integers on
        # every sample so far — the samples seen cannot tell them apart, the next one that does decides
        self.tied: dict[str, list[tuple[QTensor, np.ndarray]]] = {}
        self.why_not: dict[str, str] = {}
        # nodes not fed because the artifact holds their values in a layout `_views` cannot undo:
        # unverified here, judged within the tensors they feed where every path reaches one (`divergence`)
        self.relaid: list[str] = []

    def sample(self, values: np.ndarray, i: int, shape: tuple) -> np.ndarray:
        # rows were stacked sample after sample: sample i is the i-th block of rows, whatever the
        # tensor's first axis means (a batch of 1, or the 3 of a stacked q/k/v)
        rows = values.shape[0] // self.samples
        return values[i * rows:(i + 1) * rows].reshape(shape)

    def value(self, name: str, mine: np.ndarray, i: int, inputs: tuple[str, ...] = ()) -> np.ndarray | None:
        """The artifact's value for node `name` on sample i, or None when it is not fed; `inputs`
        are the quantize nodes its op reads (decided before it: the graph runs in order)."""
        if name not in self.chosen:
            fed = [p[0] for p in (self.chosen.get(k) for k in inputs) if p is not None]
            rivals = self._rivals(name, fed)
            self.chosen[name] = self._decide(name, mine, i, rivals)
            self._keep_ties(name, i, mine.shape, [(b, v) for b, vs in [self.cands[name][1:3], *rivals] for v in vs])
        elif self.tied.get(name):
            self._untie(name, mine, i)
        pick = self.chosen[name]
        return None if pick is None else self.sample(pick[1], i, mine.shape)

    def _keep_ties(self, name: str, i: int, shape: tuple, group: list[tuple[QTensor, np.ndarray]]) -> None:
        """Remember which of `group` hold exactly the chosen tensor's integers on sample i."""
        pick = self.chosen[name]
        if pick is None:
            self.tied.pop(name, None)
            return
        ref = self.sample(pick[1], i, shape)
        self.tied[name] = [(b, v) for b, v in group if not (b is pick[0] and v is pick[1])
                           and np.array_equal(self.sample(v, i, shape), ref)]

    def _untie(self, name: str, mine: np.ndarray, i: int) -> None:
        """Sample i among tensors no earlier sample told apart: the one closest to what the op computes
        from the artifact's inputs (the chosen one on a tie). Every earlier sample fed the same integers
        whichever is kept, so what was measured on them stands.

        Why: a decision on the first sample alone took the first of equal tensors. EfficientViT-M0's
        last stage at 64² pads a 1×1 map to its 4×4 window; where the real token's logits fall within
        a step of the padding's, every head's softmax is a uniform 1/16 — twelve softmaxes of three
        blocks, at the same fixed 1/256 grid, equal on that sample. Each took the first block's
        softmax and was judged against it on the next samples (255 steps at six softmaxes, 40–61 at
        the six `attn @ v` fed from them, on a file equal to its simulation)."""
        pick = self.chosen[name]
        group = [pick, *self.tied[name]]
        gaps = [_gap(mine, self.sample(v, i, mine.shape)) for _, v in group]
        best = group[min(range(len(group)), key=lambda k: (gaps[k], k))]
        self.chosen[name] = best
        self._keep_ties(name, i, mine.shape, [g for g in group if g is not best])

    def _rivals(self, name: str, fed: list[QTensor]) -> list[tuple[QTensor, list[np.ndarray]]]:
        # The op's own inputs can always reproduce the tensors they were fed (an op that keeps its
        # input: a multiply by a scale of 1), so those (and copies of them) are no witness for its output.
        return [(b, vs) for b, vs in self.cands[name][3] if not any(b is f or _holds_values_of(b, f) for f in fed)]

    def _closest(self, mine: np.ndarray, i: int, views: list[np.ndarray]) -> tuple[float, int, np.ndarray]:
        return min(((_gap(mine, self.sample(v, i, mine.shape)), j, v) for j, v in enumerate(views)),
                   key=lambda s: s[:2])

    def _decide(self, name: str, mine: np.ndarray, i: int, rivals: list[tuple[QTensor, list[np.ndarray]]]
                ) -> tuple[QTensor, np.ndarray] | None:
        _, a, views, _ = self.cands[name]
        gap, _, best = self._closest(mine, i, views)
        alt = min(((*self._closest(mine, i, vs), k, b) for k, (b, vs) in enumerate(rivals)),
                  key=lambda s: (s[0], s[1], s[3]), default=None)
        # Several tensors fit: the one the op's own inputs reproduce. The pairing was made on the
        # end-to-end values, where a net's cascaded rounding can swap two tensors with the same
        # parameters and near-equal values (PoolFormer's two norm means of a 2×2 map, one value per
        # sample: paired crosswise, each was 2 steps off the other's, 0 off its own) — so an
        # alternative strictly closer than the paired tensor wins, even within 2 steps.
        if alt is not None and alt[0] < gap and alt[0] <= 2:
            return alt[4], alt[2]
        if gap <= 2:
            return a, best
        if rivals:
            self.why_not[name] = (f"{len(rivals) + 1} artifact tensors share its scale, zero point and size, and "
                                  "none is within 2 steps of what its op computes from the artifact's inputs")
            return None
        if _same_values_other_layout(mine, self.sample(best, i, mine.shape)):
            self.why_not[name] = f"the artifact's {a.name} holds the same values in a layout edgeconv cannot undo"
            self.relaid.append(name)
            return None
        return a, best  # a real lowering difference: fed, so the layers after it are judged alone

    def excluded(self) -> tuple[str, ...]:
        return tuple(self.unfit) + tuple(f"{self.cands[n][0].name} ({self.cands[n][0].layer}): {why}"
                                         for n, why in self.why_not.items())


# How far back from a quantize node its op's int8 inputs are looked for (nodes): the op and the
# dequantize nodes (and float arithmetic a lowering fuses) in front of it.
INPUT_WALK_MAX_NODES = 16


def _input_qnodes(n: Any) -> tuple[str, ...]:
    """The quantize nodes whose int8 tensors the op quantized by `n` reads (through dequantize and
    unquantized float nodes)."""
    from edgeconv.quant.program import is_q

    found, seen, todo = [], set(), list(n.all_input_nodes)
    while todo and len(seen) < INPUT_WALK_MAX_NODES:
        m = todo.pop()
        if m.name in seen:
            continue
        seen.add(m.name)
        if is_q(m):
            found.append(m.name)
        elif m.op == "call_function":
            todo.extend(m.all_input_nodes)
    return tuple(found)


def divergence(graph: "Graph", artifact: Path | str, x: "Batch", steps: float = 3.0,
               isolate: bool = False, ours: list[QTensor] | None = None, gm: Any = None,
               theirs: list[QTensor] | None = None) -> DivergenceReport:
    """Compare every int8 activation of `artifact` with the torch quantized simulation of `graph`."""
    path = Path(artifact)
    fmt = format_for(path)
    if not graph.quantized:
        raise UserError("divergence compares int8 artifacts with the torch quantized simulation; "
                        "quantize the graph first")
    fmt.check(path)
    if isolate and gm is None:  # folded once: isolation and the walk to judged tensors share it
        gm = folded_simulation(graph)
    ours = ours if ours is not None else torch_tensors(graph, x, gm)  # the caller's, when it compares several artifacts
    theirs = theirs if theirs is not None else fmt.int8_tensors(path, x)  # the caller's: another engine's
    drifts, unmatched, covered, missing = [], [], [], []
    pairs = match(ours, theirs)
    matched = {q.qnode: a for q, a in pairs if a is not None}
    by_qnode = {q.qnode: q for q in ours if q.qnode}
    for q, a in pairs:
        # a copy (of a copy …) of a tensor the file has: judging that tensor judges it
        if a is None and q.copy_of and _paired_source(q, by_qnode, matched)[0] is not None:
            covered.append(q.name)
            continue
        if a is None:
            unmatched.append(q.name)
            missing.append(f"{q.name} ({q.layer}): no tensor of the artifact has its scale, zero point and size")
            continue
        av = _align(q.values, a.values)
        diff = np.abs(av.astype(np.int64) - q.values.astype(np.int64))
        drifts.append(TensorDrift(q.name, q.layer, a.name, q.scale, q.zero_point, float(diff.max()),
                                  float(diff.mean()), float((diff > 0).mean()), float((diff > 1).mean())))
    first = next((d for d in drifts if d.max_steps > steps), None)
    isolated, excluded, relaid = isolated_drifts(graph, pairs, x, gm, theirs) if isolate else (None, (), ())
    found = rescaled(pairs, theirs)
    changed_params = tuple(f"{q.layer or q.name}: the file stores {q.name} at scale {a.scale:.6g}, zero point "
                           f"{a.zero_point}; the simulation at scale {q.scale:.6g}, zero point {q.zero_point}"
                           for q, a in found)
    moved = {q.name for q, _ in found}
    unmatched = [n for n in unmatched if n not in moved]
    missing = [m for m in missing if m.split(" ", 1)[0] not in moved]
    within: tuple[str, ...] = ()
    if isolate:
        judged = {d.tensor for d in isolated or ()}
        # only where the file really has no tensor: an unused one of its size in its place is the
        # tensor at other quantization parameters (a finding, or an edit), never "inside an op"
        used = {id(a) for _, a in pairs if a is not None} | {id(a) for _, a in found}
        absent = [q for i, (q, a) in enumerate(pairs)
                  if a is None and q.name in unmatched and not in_place(i, pairs, theirs, used)]
        judged_q = {q.qnode: q for q, _ in pairs if q.name in judged}
        inside = judged_within(gm, absent, judged_q)
        within = tuple(f"{q.name} ({q.layer}): judged within {', '.join(by)}: the artifact has no int8 tensor for "
                       f"this {what} (it computes it inside a larger op), and every path from it reaches those tensors"
                       for q, by, what in inside)
        gone = {q.name for q, _, _ in inside}
        unmatched = [n for n in unmatched if n not in gone]
        missing = [m for m in missing if m.split(" ", 1)[0] not in gone]
        # A tensor the file holds in another layout (a window partition's views and permutes, which
        # litert-torch folds into other reshapes) is not fed; the tensors after it are computed from
        # the simulation's own copy, so a file whose copy is laid out wrongly differs there.
        relaid_within = judged_within(gm, [q for q, _ in pairs if q.qnode in relaid], judged_q)
        within += tuple(f"{q.name} ({q.layer}): judged within {', '.join(by)}: the artifact holds this {what}'s "
                        "values in another layout, and every path from it reaches those tensors"
                        for q, by, what in relaid_within)
        moved_in = {f"{q.name} ({q.layer}): " for q, _, _ in relaid_within}
        excluded = tuple(e for e in excluded if not any(e.startswith(m) for m in moved_in))
    excluded = tuple(missing) + excluded
    return DivergenceReport(str(path), fmt.name, steps, count(x), len(drifts), tuple(unmatched), tuple(drifts), first,
                            isolated, excluded if isolate else (), tuple(covered), changed_params, within)


# How far forward a tensor the artifact lacks is followed to the judged tensors it feeds (nodes):
# a LayerNorm's float arithmetic is a dozen nodes; a walk that has not ended by then is not a fused op.
WITHIN_MAX_NODES = 64


def judged_within(gm: Any, missing: list[QTensor], judged: dict[str, QTensor]) -> list[tuple[QTensor, list[str], str]]:
    """Simulation tensors the artifact has no int8 tensor for, each with the judged tensors (layer
    names) that every forward path from it reaches within WITHIN_MAX_NODES nodes. Isolation feeds a
    judged tensor's inputs from the artifact and recomputes the nodes in between, so a defect in
    what the file computes there shows at those tensors. A tensor with a path to the output (or
    further than the bound) that meets no judged tensor stays unverified."""
    nodes = {n.name: n for n in gm.graph.nodes}
    out = []
    for q in missing:
        start = nodes.get(q.qnode)
        if start is None:
            continue
        seen, frontier, hits, ok = {start.name}, list(start.users), {}, True
        while frontier and ok:
            n = frontier.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.name in judged:
                hits[n.name] = judged[n.name].layer or judged[n.name].name
                continue
            if n.op == "output" or len(seen) > WITHIN_MAX_NODES:
                ok = False
                continue
            frontier.extend(n.users)
        if ok and hits:
            out.append((q, list(dict.fromkeys(hits.values())), _what(start.args[0])))
    return out


def _what(src: Any) -> str:
    """What a quantize node's input is, in words: "requantization" when it is another quantized
    tensor re-rounded on a new grid, else the aten op's name (sub, expand_as, slice, add, ...)."""
    from edgeconv.quant.program import is_dq

    if is_dq(src):
        return "requantization of another int8 tensor"
    name = str(getattr(src, "target", "")).split(".")
    return f"{name[1] if len(name) > 1 and name[0] == 'aten' else name[0]} output"
