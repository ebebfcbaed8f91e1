"""Will XNNPACK run this model on its sparse (CHW) path? The rules, and the check of a .tflite.

XNNPACK's sparse inference is all-or-nothing per region, and nothing tells you when it silently
runs dense. Its conditions (XNNPACK `xnn_subgraph_rewrite_for_nchw`, Elsen et al. 2019):

- the region starts at a 3×3 stride-2 conv on 3 input channels with padding 1 on every side;
- inside it: only 1×1 convs (stride 1, no padding), 3×3/5×5 depthwise convs with stride 1 or 2
  and explicit padding k//2 (TF "SAME" padding is rejected), elementwise ops and activations;
- it ends at a global average pool;
- float only: any int8 tensor in the region disables it;
- more than 2/3 of the region's 1×1 conv weights are zero;
- the .tflite asks for it with DENSIFY ops on constant sparse weights.

Each failing condition becomes a `Finding` naming the node. Block size per 1×1 conv follows
XNNPACK's rule: 4 output channels when the non-zero 4×1 blocks are ≥ 90 % filled, else 2, else 1.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.exporters.tflite.flatbuffer import builtin, const_array, op_names, read_tflite, tensor_name
from edgeconv.results import Record

MIN_ZEROS = 2 / 3
# Seen on emulated arm64 with ai-edge-litert 2.3.0: a depthwise conv with TF SAME padding (stride
# 1 or 2) inside the region does not stop the sparse path (outputs differ in the low bits from the
# dense twin, as for explicit padding). XNNPACK's documented region rejects SAME, so it stays a
# note: the tflite-sparse exporter writes explicit padding anyway.
SAME_NOTE = ("TF SAME padding on a depthwise conv: accepted by ai-edge-litert 2.3.0's XNNPACK (seen on "
             "emulated arm64) but outside XNNPACK's documented sparse region; explicit padding is portable")


@dataclasses.dataclass(frozen=True)
class Finding(Record):
    condition: str  # stem | unsupported-op | padding | int8 | no-global-pool | sparsity | no-densify
    node: str
    reason: str
    blocking: bool = True  # False: a portability note that does not stop this runtime's sparse path


@dataclasses.dataclass(frozen=True)
class LayerSparsity(Record):
    node: str
    shape: tuple[int, ...]
    zeros: float
    block: int  # output-channel block XNNPACK will pick: 4, 2 or 1
    densify: bool = False  # weight stored sparse behind a DENSIFY op (.tflite only)


@dataclasses.dataclass(frozen=True)
class SparseReport(Record):
    source: str  # "graph" or "tflite"
    subject: str
    eligible: bool
    findings: tuple[Finding, ...]
    layers: tuple[LayerSparsity, ...]
    zeros_1x1: float
    densify_ops: int = 0

    def lines(self) -> list[str]:
        head = (f"{self.subject}: {'ELIGIBLE' if self.eligible else 'NOT ELIGIBLE'} for XNNPACK sparse "
                f"inference ({self.source}); 1x1 conv weights zero: {self.zeros_1x1:.1%}")
        if self.source == "tflite":
            head += f"; DENSIFY ops: {self.densify_ops}"
        out = [head]
        out += [f"  - [{f.condition}] {f.node}: {f.reason}" for f in self.findings if f.blocking]
        out += [f"  note [{f.condition}] {f.node}: {f.reason}" for f in self.findings if not f.blocking]
        if self.eligible:
            blocks: dict[int, int] = {}
            for layer in self.layers:
                blocks[layer.block] = blocks.get(layer.block, 0) + 1
            out.append("  block sizes XNNPACK will pick: " +
                       ", ".join(f"{n} layer(s) in {b}x1 blocks" for b, n in sorted(blocks.items(), reverse=True)))
        return out

    def notes(self) -> tuple[str, ...]:
        return tuple(self.lines())


def block_size(w2d: np.ndarray) -> int:
    """XNNPACK's choice for a [C_out, C_in] weight: 4 if the non-zero 4×1 blocks are ≥ 90 % filled,
    else 2 if the 2×1 blocks are, else 1 (same arithmetic as its convolution-nchw setup)."""
    nz = w2d != 0
    for b in (4, 2):
        rows = (nz.shape[0] // b) * b
        if rows == 0:
            continue
        blk = nz[:rows].reshape(rows // b, b, -1)
        nonzero_blocks = int(blk.any(1).sum())
        if nonzero_blocks and int(blk.sum()) * 10 >= nonzero_blocks * b * 9:
            return b
    return 1


def judge(source: str, subject: str, findings: list[Finding], layers: list[LayerSparsity],
           weights: list[np.ndarray], densify_ops: int = 0) -> SparseReport:
    total = sum(w.size for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights) / total if total else 0.0
    if not weights:
        findings.append(Finding("sparsity", subject, "no 1x1 conv in the region: nothing can run sparse"))
    elif zeros <= MIN_ZEROS:
        findings.append(Finding("sparsity", subject, f"only {zeros:.1%} of the 1x1 conv weights are zero; "
                                "XNNPACK needs more than 66.7% (prune with the sparsify pass)"))
    eligible = not any(f.blocking for f in findings)
    return SparseReport(source, subject, eligible, tuple(findings), tuple(layers), zeros, densify_ops)


# --- the .tflite ------------------------------------------------------------------------------

_TFL_ELEMENTWISE = {"ADD", "MUL", "SUB", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC",
                    "HARD_SWISH", "LEAKY_RELU", "ELU", "ABS", "NEG", "SQUARE"}
_INT_TYPES = {3: "uint8", 9: "int8", 7: "int16"}  # quantized activations (schema TensorType)


class _TfliteGraph:
    """The first subgraph of a .tflite with the lookups the sparse-path rules need."""

    def __init__(self, path: Path | str) -> None:
        self.model = read_tflite(path)
        names = op_names()
        self.sg = self.model.subgraphs[0]
        self.ops = self.sg.operators
        self.kinds = [builtin(self.model, op, names) for op in self.ops]
        self.producer = {o: i for i, op in enumerate(self.ops) for o in op.outputs}
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                self.consumers.setdefault(int(t), []).append(i)

    def const(self, tensor: int) -> np.ndarray | None:
        return const_array(self.model, self.sg.tensors[tensor])

    def weight_source(self, op: Any) -> tuple[np.ndarray | None, bool]:
        """The constant weight of a conv, looking through DEQUANTIZE (fp16) and DENSIFY."""
        t, dens = int(op.inputs[1]), False
        while t in self.producer and self.kinds[self.producer[t]] in ("DENSIFY", "DEQUANTIZE"):
            dens |= self.kinds[self.producer[t]] == "DENSIFY"
            t = int(self.ops[self.producer[t]].inputs[0])
        return self.const(t), dens

    def is_weight_path(self, i: int) -> bool:
        src = int(self.ops[i].inputs[0])
        return (self.kinds[i] in ("DENSIFY", "DEQUANTIZE") and self.const(src) is not None) or (
            self.kinds[i] == "DEQUANTIZE" and src in self.producer and self.kinds[self.producer[src]] == "DENSIFY")

    def out_name(self, i: int) -> str:
        return f"{self.kinds[i]} #{i} ({tensor_name(self.sg.tensors[int(self.ops[i].outputs[0])])})"

    def pad_of(self, i: int) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) of a PAD op that feeds op i, if it is a zero pad on H and W only."""
        src = int(self.ops[i].inputs[0])
        if src not in self.producer or self.kinds[self.producer[src]] != "PAD":
            return None
        p = self.const(int(self.ops[self.producer[src]].inputs[1]))
        if p is None or p.shape != (4, 2) or p[0].any() or p[3].any():
            return None
        return int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1])


def check_tflite(path: Path | str) -> SparseReport:
    g = _TfliteGraph(path)
    subject = Path(path).name
    findings: list[Finding] = []
    densify_ops = g.kinds.count("DENSIFY")
    if not densify_ops:
        findings.append(Finding("no-densify", subject, "no DENSIFY-encoded sparse weights: XNNPACK is never "
                                "asked for sparse inference (export with the tflite-sparse target)"))
    convs = [i for i, k in enumerate(g.kinds) if k == "CONV_2D"]
    if not convs:
        return judge("tflite", subject, findings + [Finding("stem", subject, "the model has no CONV_2D")], [], [])
    stem = convs[0]
    why = _tfl_stem(g.model, g.ops[stem], g.pad_of(stem), g.weight_source(g.ops[stem])[0])
    if why:
        findings.append(Finding("stem", g.out_name(stem), why))
    end = next((i for i in range(stem + 1, len(g.ops)) if g.kinds[i] == "MEAN" and _spatial_mean(g.model, g.ops[i])), None)
    if end is None:
        findings.append(Finding("no-global-pool", subject, "no global average pool (MEAN over H, W) ends the region"))
        end = len(g.ops)
    layers: list[LayerSparsity] = []
    weights: list[np.ndarray] = []
    for i in range(stem + 1, end):
        if not g.is_weight_path(i):
            findings += _region_op(g, i, layers, weights)
    return judge("tflite", subject, findings, layers, weights, densify_ops)


def _region_op(g: _TfliteGraph, i: int, layers: list[LayerSparsity], weights: list[np.ndarray]) -> list[Finding]:
    """What stops op i (between the stem and the global pool) from running on the sparse path; a
    pointwise conv that can goes into `layers`/`weights` for the sparsity figures."""
    k, op, sg = g.kinds[i], g.ops[i], g.sg
    ints = [_INT_TYPES[sg.tensors[int(t)].type] for t in list(op.inputs[:1]) + list(op.outputs)
            if int(t) >= 0 and sg.tensors[int(t)].type in _INT_TYPES and k != "PAD"]
    if ints or k in ("QUANTIZE", "DEQUANTIZE"):
        return [Finding("int8", g.out_name(i), f"{ints[0] if ints else 'quantized'} tensor in the "
                        "region; the sparse path is float only")]
    if k == "CONV_2D":
        w, dens = g.weight_source(op)
        why = _tfl_pointwise(op, w)
        if why:
            return [Finding("unsupported-op", g.out_name(i), why)]
        w2 = w.reshape(w.shape[0], -1).astype(np.float32)
        weights.append(w2)
        layers.append(LayerSparsity(g.out_name(i), tuple(w.shape), float((w2 == 0).mean()), block_size(w2), dens))
        return []
    if k == "DEPTHWISE_CONV_2D":
        why = _tfl_depthwise(op, g.pad_of(i), g.weight_source(op)[0])
        if not why:
            return []
        same = why.startswith(SAME_NOTE[:20])
        return [Finding("padding" if "padding" in why else "unsupported-op", g.out_name(i), why, blocking=not same)]
    if k == "PAD":
        users = g.consumers.get(int(op.outputs[0]), [])
        if len(users) == 1 and g.kinds[users[0]] == "DEPTHWISE_CONV_2D":
            return []
        return [Finding("unsupported-op", g.out_name(i), "PAD that XNNPACK cannot fuse into a depthwise conv")]
    if k not in _TFL_ELEMENTWISE:
        return [Finding("unsupported-op", g.out_name(i), f"{k} cannot run in XNNPACK's CHW layout")]
    return []


def _spatial_mean(model: Any, op: Any) -> bool:
    axes = const_array(model, model.subgraphs[0].tensors[int(op.inputs[1])])
    return axes is not None and sorted(int(a) % 4 for a in axes.reshape(-1)) == [1, 2]


def _tfl_stem(model: Any, op: Any, pad: tuple[int, int, int, int] | None, w: np.ndarray | None) -> str | None:
    o = op.builtinOptions
    if w is None or w.ndim != 4:
        return "the first conv has no constant weight"
    k, cin = tuple(w.shape[1:3]), int(w.shape[3])
    explicit = o.padding == 1 and pad == (1, 1, 1, 1)  # VALID after a fusable PAD of 1
    if k != (3, 3) or (o.strideH, o.strideW) != (2, 2) or cin != 3 or not explicit:
        how = "TF SAME" if o.padding == 0 else f"explicit {pad}" if pad else "not a PAD of 1 on every side"
        return (f"the first conv is {k[0]}x{k[1]} stride {o.strideH} on {cin} channels with padding {how}; the "
                "region must start at a 3x3 stride-2 conv on 3 channels with explicit padding 1")
    return None


def _tfl_pointwise(op: Any, w: np.ndarray | None) -> str | None:
    o = op.builtinOptions
    if w is None or w.ndim != 4:
        return "CONV_2D without a constant weight"
    if tuple(w.shape[1:3]) != (1, 1):
        return f"{w.shape[1]}x{w.shape[2]} CONV_2D inside the region; only 1x1 convs can run in CHW layout"
    if (o.strideH, o.strideW) != (1, 1) or (o.dilationHFactor, o.dilationWFactor) != (1, 1):
        return f"1x1 CONV_2D with stride {o.strideH}; only stride 1 is sparse"
    return None


def _tfl_depthwise(op: Any, pad: tuple[int, int, int, int] | None, w: np.ndarray | None) -> str | None:
    o = op.builtinOptions
    k = tuple(w.shape[1:3]) if w is not None and w.ndim == 4 else None
    if k not in ((3, 3), (5, 5)) or (o.strideH, o.strideW) not in ((1, 1), (2, 2)) \
            or (o.dilationHFactor, o.dilationWFactor) != (1, 1):
        return f"depthwise {k} stride {o.strideH}; only 3x3/5x5 with stride 1 or 2 can run in CHW layout"
    if o.padding == 0:
        return SAME_NOTE
    want = (k[0] // 2,) * 2 + (k[1] // 2,) * 2
    if pad != want:
        return f"explicit padding {pad or (0, 0, 0, 0)}; the sparse region needs {want}"
    return None
