"""Will XNNPACK run this model on its sparse (CHW) path? Checked on the torch graph and on a .tflite.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.errors import UserError
from edgeconv.results import Record

if TYPE_CHECKING:
    import torch

    from edgeconv.graph import Graph

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


def _judge(source: str, subject: str, findings: list[Finding], layers: list[LayerSparsity],
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


# --- the torch graph ------------------------------------------------------------------------

_GRAPH_ELEMENTWISE = {"add", "add_", "mul", "mul_", "relu", "relu_", "relu6", "hardtanh", "hardtanh_",
                      "clamp", "sigmoid", "hardswish", "hardswish_", "leaky_relu", "elu", "abs", "neg",
                      "batch_norm", "_native_batch_norm_legit_no_training", "getitem", "dropout",
                      "clone", "alias", "detach", "contiguous", "sym_size"}


def check_module(module: "torch.nn.Module", example_inputs: tuple, subject: str = "") -> SparseReport:
    from edgeconv.graph import capture

    return sparse_path_check(capture(module, example_inputs), subject or type(module).__name__)


def sparse_path_check(graph: "Graph", subject: str = "model") -> SparseReport:
    """Walk the captured program from the stem conv to the global pool."""
    from edgeconv.passes.fx import CONV_OPS, const, op_name

    gm = graph.module()
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    findings: list[Finding] = []
    convs = [n for n in nodes if n.target in CONV_OPS]
    if not convs:
        return _judge("graph", subject, [Finding("stem", subject, "the model has no conv")], [], [])
    stem = convs[0]
    why = _graph_stem(stem, const(gm, stem.args[1]), _pad_before(stem))
    if why:
        findings.append(Finding("stem", stem.name, why))
    start = nodes.index(stem)
    end = next((i for i in range(start + 1, len(nodes)) if _is_global_pool(nodes[i])), None)
    if end is None:
        findings.append(Finding("no-global-pool", subject, "no global average pool ends the region"))
        end = len(nodes)
    if graph.quantized or any("quantize" in op_name(n) for n in nodes[start:end]):
        findings.append(Finding("int8", subject, "the graph is int8-quantized; the sparse path is float only"))
    layers, weights = [], []
    for n in nodes[start + 1:end]:
        name = op_name(n).split(".")[0]  # add.Tensor -> add
        if _pad_into_conv(n):
            continue  # folded into the conv's padding, as the converter and XNNPACK do
        if n.target in CONV_OPS:
            w = const(gm, n.args[1])
            why = _graph_conv(n, w, _pad_before(n))
            if why:
                padding = "depthwise with padding" in why  # the converter writes it as TF SAME: a note
                findings.append(Finding("padding" if "padding" in why else "unsupported-op", n.name,
                                        why + ("; " + SAME_NOTE if padding else ""), blocking=not padding))
            elif w is not None and tuple(w.shape[2:]) == (1, 1):
                w2 = w.detach().float().reshape(w.shape[0], -1).numpy()
                weights.append(w2)
                layers.append(LayerSparsity(n.name, tuple(w.shape), float((w2 == 0).mean()), block_size(w2)))
        elif name not in _GRAPH_ELEMENTWISE and "quantize" not in name:
            findings.append(Finding("unsupported-op", n.name, f"{name} cannot run in XNNPACK's CHW layout"))
    return _judge("graph", subject, findings, layers, weights)


def _conv_params(node: Any) -> tuple[tuple[int, int], Any, tuple[int, int], int]:
    from edgeconv.passes.fx import aten

    a = list(node.args) + [None] * 9
    if node.target == aten.convolution.default:
        return _pair(a[3] or 1), a[4] if a[4] is not None else 0, _pair(a[5] or 1), int(a[8] or 1)
    return (_pair(a[3] if a[3] is not None else 1), a[4] if a[4] is not None else 0,
            _pair(a[5] if a[5] is not None else 1), int(a[6] if a[6] is not None else 1))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


_PAD_OPS = ("constant_pad_nd", "pad")


def _pad_before(conv: Any) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of a zero pad whose only user is `conv` (0s when there is none)."""
    from edgeconv.passes.fx import op_name

    src = conv.args[0]
    if getattr(src, "op", None) == "call_function" and op_name(src).split(".")[0] in _PAD_OPS and len(src.users) == 1:
        p = list(src.args[1]) + [0] * 4
        value = src.args[2] if len(src.args) > 2 else src.kwargs.get("value", 0)
        if not value and len(src.args[1]) <= 4:
            return int(p[0]), int(p[1]), int(p[2]), int(p[3])
    return (0, 0, 0, 0)


def _pad_into_conv(node: Any) -> bool:
    from edgeconv.passes.fx import CONV_OPS

    users = list(getattr(node, "users", ()))
    return len(users) == 1 and users[0].target in CONV_OPS and _pad_before(users[0]) != (0, 0, 0, 0)


def _pads(padding: Any, extra: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Effective (top, bottom, left, right) padding of a conv with an explicit pad folded in."""
    ph, pw = _pair(padding)
    left, right, top, bottom = extra
    return ph + top, ph + bottom, pw + left, pw + right


def _graph_stem(node: Any, w: Any, extra: tuple[int, int, int, int]) -> str | None:
    stride, padding, _, groups = _conv_params(node)
    if w is None or w.dim() != 4:
        return "the first conv has no constant 4-D weight"
    k, cin = tuple(w.shape[2:]), int(w.shape[1]) * groups
    pads = None if isinstance(padding, str) else _pads(padding, extra)
    if k != (3, 3) or stride != (2, 2) or cin != 3 or pads != (1, 1, 1, 1):
        return (f"the first conv is {k[0]}x{k[1]} stride {stride[0]} on {cin} channels with padding "
                f"{padding if pads is None else pads} (top, bottom, left, right); XNNPACK's sparse region must "
                "start at a 3x3 stride-2 conv on 3 channels with padding 1 on every side")
    return None


def _graph_conv(node: Any, w: Any, extra: tuple[int, int, int, int] = (0, 0, 0, 0)) -> str | None:
    stride, padding, dilation, groups = _conv_params(node)
    if w is None or w.dim() != 4:
        return "conv without a constant 4-D weight"
    k, cout, cin = tuple(w.shape[2:]), int(w.shape[0]), int(w.shape[1]) * groups
    if isinstance(padding, str):
        return f"padding={padding!r} becomes TF SAME padding, which the sparse region rejects; use padding={k[0] // 2}"
    pads = _pads(padding, extra)
    pad = (pads[0], pads[2]) if pads[0] == pads[1] and pads[2] == pads[3] else pads
    if k == (1, 1) and groups == 1:
        if stride != (1, 1) or pad != (0, 0):
            return f"1x1 conv with stride {stride} and padding {pad}; only stride 1 without padding is sparse"
        return None
    if groups == cin == cout and k in ((3, 3), (5, 5)) and dilation == (1, 1) and stride[0] == stride[1] in (1, 2):
        if pad != (k[0] // 2, k[1] // 2):
            return f"{k[0]}x{k[1]} depthwise with padding {pad}; the sparse region needs {k[0] // 2} on every side"
        return None
    return (f"{k[0]}x{k[1]} conv (groups {groups}, stride {stride}, dilation {dilation}) cannot run in CHW "
            "layout; only 1x1 and 3x3/5x5 depthwise convs can")


def _is_global_pool(node: Any) -> bool:
    from edgeconv.passes.fx import op_name

    name = op_name(node)
    if name == "adaptive_avg_pool2d":
        return tuple(_pair(node.args[1])) == (1, 1)
    if name in ("mean", "mean.dim"):
        dims = node.args[1] if len(node.args) > 1 else None
        return isinstance(dims, (list, tuple)) and sorted(d % 4 for d in dims) == [2, 3]
    return False


# --- the .tflite ------------------------------------------------------------------------------

def read_tflite(path: Path | str) -> Any:
    """The flatbuffer as the schema's object API (`ModelT`); a UserError if it is not a .tflite."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier); give a .tflite file or a "
                        "model reference (package.module:factory or a .pt2 file)")
    try:
        return schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # a truncated or corrupt flatbuffer fails anywhere inside the parser
        raise UserError(f"{path} is a damaged TFLite file ({type(e).__name__}); re-export it") from None


def op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def builtin(model: Any, op: Any, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def tensor_name(t: Any) -> str:
    """A readable tail of a tensor name: the converter joins every fused source with ';'."""
    name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")
    part = max(name.split(";"), key=len)
    return "/".join(part.split("/")[-2:])[-80:]


def const_array(model: Any, t: Any) -> np.ndarray | None:
    """A constant tensor's values (dense shape), decoding sparse storage; None for activations."""
    buf = model.buffers[t.buffer]
    if buf.data is None or len(buf.data) == 0:
        return None
    dtype = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}.get(t.type)
    if dtype is None:
        return None
    raw = np.frombuffer(bytes(buf.data), dtype=dtype)
    if t.sparsity is not None:
        return densify(raw, tuple(int(s) for s in t.shape), t.sparsity)
    return raw.reshape(tuple(int(s) for s in t.shape)) if t.shape is not None else raw


def densify(values: np.ndarray, shape: tuple[int, ...], sp: Any) -> np.ndarray:
    """Decode TFLite sparse storage (traversal order, block map, DENSE/SPARSE_CSR levels), as the
    runtime's FormatConverter::SparseToDense does."""
    order = [int(i) for i in sp.traversalOrder]
    bmap = [int(i) for i in (sp.blockMap if sp.blockMap is not None else [])]
    n = len(shape)
    levels = sp.dimMetadata
    size = {order[k]: (int(levels[k].denseSize) if levels[k].format == 0 else None) for k in range(len(order))}
    block = {bmap[j]: size[n + j] for j in range(len(bmap))}
    out = np.zeros(shape, dtype=values.dtype)
    coord = [0] * len(order)

    def walk(level: int, pos: int) -> None:
        if level == len(order):
            idx = tuple(coord[i] * block.get(i, 1) + (coord[n + bmap.index(i)] if i in block else 0) for i in range(n))
            out[idx] = values[pos]
            return
        md, d = levels[level], order[level]
        if md.format == 0:  # DENSE
            for i in range(int(md.denseSize)):
                coord[d] = i
                walk(level + 1, pos * int(md.denseSize) + i)
        else:  # SPARSE_CSR
            seg, ind = md.arraySegments.values, md.arrayIndices.values
            for k in range(int(seg[pos]), int(seg[pos + 1])):
                coord[d] = int(ind[k])
                walk(level + 1, k)

    walk(0, 0)
    return out


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
        return _judge("tflite", subject, findings + [Finding("stem", subject, "the model has no CONV_2D")], [], [])
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
    return _judge("tflite", subject, findings, layers, weights, densify_ops)


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


# --- either -----------------------------------------------------------------------------------

def check_path(ref: str, sparsity: float | None = None, input_shape: tuple[int, ...] | None = None) -> SparseReport:
    """`edgeconv check-sparse`: a .tflite is read as is; anything else is loaded as a model
    (package.module:factory or .pt2), optionally pruned first with the sparsify pass."""
    p = Path(ref)
    if p.suffix == ".tflite" or (p.is_file() and _head(p)[4:8] == b"TFL3"):
        if not p.is_file():
            raise UserError(f"{ref} does not exist")
        if sparsity is not None:
            raise UserError("--sparsity prunes a model before checking it; a .tflite is checked as it is")
        return check_tflite(p)
    if p.exists() and p.suffix != ".pt2":
        raise UserError(f"{ref} is not a model: give a .tflite file, a .pt2 file or package.module:factory")
    from edgeconv.graph import capture
    from edgeconv.models import load_model

    opts = None
    if sparsity is not None:
        from edgeconv.passes.sparsify import SparseOptions

        opts = SparseOptions(sparsity)  # validated before the model is loaded
    spec = load_model(ref, input_shape=input_shape)
    graph = capture(spec.module, spec.example_inputs)
    if opts is not None:
        from edgeconv.passes.sparsify import prune

        graph = prune(graph, opts).graph
    return sparse_path_check(graph, spec.name)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)
