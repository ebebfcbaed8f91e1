"""Sparse TFLite targets for XNNPACK's sparse inference: `tflite-sparse` (fp32), `tflite-sparse-fp16`.

Route (no tensorflow needed): litert-torch lowers the pruned program to a dense .tflite, then three
flatbuffer rewrites, each checked afterwards by `sparse_check.check_tflite`:

1. Explicit padding. The converter folds a symmetric zero pad into TF "SAME" for stride-1
   depthwise convs, and XNNPACK's sparse region rejects SAME. Each such conv becomes
   PAD(k//2 on H and W) → DEPTHWISE_CONV_2D(VALID), which XNNPACK fuses back into one conv
   with explicit padding (same arithmetic, so outputs stay equal).
       before:  x → DEPTHWISE_CONV_2D(SAME, stride 1)
       after:   x → PAD([[0,0],[1,1],[1,1],[0,0]]) → DEPTHWISE_CONV_2D(VALID, stride 1)
2. fp16 (tflite-sparse-fp16 only): conv/FC weights and biases stored as float16 behind DEQUANTIZE,
   the form TF's float16 post-training quantization writes.
3. Sparse encoding, the encoding `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` writes (its
   DenseToSparse pass, run by `tensorflow.lite.python.convert.mlir_sparsify` on the flatbuffer):
   every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight with ≥ 30 % zeros is stored in
   CSR form (all dims dense, last dim SPARSE_CSR, uint8/uint16/int32 index vectors by range) and
   read through a DENSIFY op. DENSIFY is XNNPACK's cue to try sparse inference.
       before:  W[Co,1,1,Ci] (dense buffer) → CONV_2D
       after:   W (nonzeros + segments + indices) → DENSIFY → CONV_2D
   tests/test_sparse_tf.py checks that this equals tensorflow 2.21's own output byte for byte
   (tensorflow is the `sparse` extra, needed only for that cross-check).

Float only: XNNPACK's sparse path is disabled by any int8 tensor, so a quantized graph is refused.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeconv.errors import UserError
from edgeconv.exporters.base import ExportInfo, input_names, output_names
from edgeconv.parity import FLOAT_TOLERANCE, FP16_TOLERANCE
from edgeconv.exporters.tflite.export import _Tflite
from edgeconv.registry import TARGETS

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph

MIN_ZEROS_TO_ENCODE = 0.3  # the converter's kMinSparsityLevel: below it a weight stays dense
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_F32, _F16, _I32 = 0, 1, 2  # schema TensorType values


@dataclasses.dataclass(frozen=True)
class LowerInfo:
    dense_bytes: int
    sparse_bytes: int
    explicit_pads: int
    encoded: tuple[str, ...]  # tensor names stored sparse behind DENSIFY

    def notes(self) -> tuple[str, ...]:
        cut = 1 - self.sparse_bytes / self.dense_bytes if self.dense_bytes else 0.0
        return (f"size: dense {self.dense_bytes} B -> sparse {self.sparse_bytes} B ({cut:.1%} smaller)",
                f"{len(self.encoded)} weight(s) DENSIFY-encoded; {self.explicit_pads} stride-1 SAME depthwise "
                "conv(s) rewritten to PAD + VALID")


def lower(module: Any, args: tuple, path: Path, *, fp16: bool = False, explicit_pad: bool = True,
          encode: bool = True, target: str = "tflite-sparse", names: tuple[str, ...] = (),
          inputs: tuple[str, ...] = ()) -> LowerInfo:
    """litert-torch → dense .tflite → (explicit padding, fp16, sparse encoding) → `path`."""
    return rewrite(convert_dense(module, args, target, names, inputs), path, fp16=fp16, explicit_pad=explicit_pad,
                   encode=encode)


def convert_dense(module: Any, args: tuple, target: str = "tflite-sparse", names: tuple[str, ...] = (),
                  inputs: tuple[str, ...] = ()) -> bytes:
    """The plain litert-torch conversion (the same call as the dense tflite target, output names
    and input names included: the rewrites below keep tensor and signature names, so they survive to `path`)."""
    from edgeconv.exporters.tflite.export import convert

    with tempfile.TemporaryDirectory(prefix="edgeconv-sparse-") as tmp:
        dense = Path(tmp) / "dense.tflite"
        convert(module, args, dense, target=target, names=names, inputs=inputs)
        return dense.read_bytes()


def rewrite(dense: bytes, path: Path, *, fp16: bool = False, explicit_pad: bool = True,
            encode: bool = True) -> LowerInfo:
    """Apply the rewrites to a dense .tflite and write the result to `path` atomically.

    `explicit_pad=False` or `encode=False` give the ineligible controls the checker must refuse
    (SAME padding; no DENSIFY) with otherwise identical weights.
    """
    from ai_edge_litert import schema_py_generated as schema

    from edgeconv.results import atomic_write

    model = schema.ModelT.InitFromPackedBuf(dense, 0)
    pads = explicit_padding(model) if explicit_pad else 0
    if fp16:
        weights_to_fp16(model)
    dense_bytes = len(pack(model))
    encoded = encode_sparse(model) if encode else ()
    data = pack(model)
    atomic_write(Path(path), data)
    return LowerInfo(dense_bytes, len(data), pads, encoded)


def dense_twin(sparse: Path, path: Path) -> int:
    """Write the dense twin of a sparse .tflite: every DENSIFY-encoded weight stored dense again and
    read directly, nothing else changed. The control for the engaged-path evidence on ARM (same
    weights; only the sparse path can make the outputs differ). Returns the DENSIFY ops removed.

        before:  W (nonzeros + segments + indices) → DENSIFY → CONV_2D
        after:   W[Co,1,1,Ci] (dense buffer) → CONV_2D
    """
    from edgeconv.exporters.tflite.flatbuffer import const_array, read_tflite
    from edgeconv.results import atomic_write

    model = read_tflite(sparse)
    sg = model.subgraphs[0]
    kinds = _kinds(model)
    swap: dict[int, int] = {}  # DENSIFY output -> its (now dense) input
    for op, kind in zip(sg.operators, kinds):
        if kind != "DENSIFY":
            continue
        src = op.inputs[0]
        t = sg.tensors[src]
        w = const_array(model, t)
        t.sparsity = None
        _own_buffer(model, t).data = np.frombuffer(np.ascontiguousarray(w).tobytes(), dtype=np.uint8).copy()
        swap[op.outputs[0]] = src
    sg.operators = [op for op, kind in zip(sg.operators, kinds) if kind != "DENSIFY"]
    for op in sg.operators:
        op.inputs = [swap.get(i, i) for i in op.inputs]
    atomic_write(Path(path), pack(model))
    return len(swap)


def pack(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --- flatbuffer editing -----------------------------------------------------------------------

def _opcode(model: Any, name: str, version: int = 1) -> int:
    """Index of the operator code for builtin `name`, added when the model has none."""
    from ai_edge_litert import schema_py_generated as schema

    code = getattr(schema.BuiltinOperator, name)
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            oc.version = max(oc.version, version)
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _add_tensor(model: Any, name: str, shape: list[int], ttype: int, data: bytes | None = None) -> int:
    from ai_edge_litert import schema_py_generated as schema

    t = schema.TensorT()
    t.name, t.shape, t.type = name.encode(), list(shape), ttype
    buf = schema.BufferT()
    if data is not None:
        buf.data = np.frombuffer(data, dtype=np.uint8).copy()
    model.buffers.append(buf)
    t.buffer = len(model.buffers) - 1
    sg = model.subgraphs[0]
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _new_op(opcode: int, inputs: list[int], outputs: list[int]) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, list(inputs), list(outputs)
    return op


def _kinds(model: Any) -> list[str]:
    """Builtin op names, in order; also makes every op's input/output list editable."""
    from edgeconv.exporters.tflite.flatbuffer import builtin, op_names

    for op in model.subgraphs[0].operators:
        op.inputs = [int(i) for i in op.inputs]
        op.outputs = [int(i) for i in op.outputs]
    names = op_names()
    return [builtin(model, op, names) for op in model.subgraphs[0].operators]


def _own_buffer(model: Any, t: Any) -> Any:
    """The tensor's buffer, copied first if another tensor shares it (deduplicated constants)."""
    from ai_edge_litert import schema_py_generated as schema

    sg = model.subgraphs[0]
    if sum(1 for x in sg.tensors if x.buffer == t.buffer) > 1:
        buf = schema.BufferT()
        buf.data = np.array(model.buffers[t.buffer].data, dtype=np.uint8)
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    return model.buffers[t.buffer]


def explicit_padding(model: Any) -> int:
    """Rewrite each stride-1 SAME depthwise conv with an odd kernel into PAD + VALID."""
    from ai_edge_litert import schema_py_generated as schema

    sg = model.subgraphs[0]
    kinds = _kinds(model)
    out, count = [], 0
    for op, kind in zip(list(sg.operators), kinds):
        o = op.builtinOptions
        if kind == "DEPTHWISE_CONV_2D" and o.padding == schema.Padding.SAME and (o.strideH, o.strideW) == (1, 1) \
                and (o.dilationHFactor, o.dilationWFactor) == (1, 1):
            x, w = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
            kh, kw = int(w.shape[1]), int(w.shape[2])
            if kh % 2 and kw % 2 and len(x.shape) == 4:
                ph, pw = kh // 2, kw // 2
                pads = np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], dtype=np.int32)
                p = _add_tensor(model, f"{x.name.decode(errors='replace')}/explicit_pad", [4, 2], _I32, pads.tobytes())
                shape = [int(x.shape[0]), int(x.shape[1]) + 2 * ph, int(x.shape[2]) + 2 * pw, int(x.shape[3])]
                y = _add_tensor(model, f"{x.name.decode(errors='replace')}/padded", shape, x.type)
                out.append(_new_op(_opcode(model, "PAD"), [op.inputs[0], p], [y]))
                op.inputs[0] = y
                o.padding = schema.Padding.VALID
                count += 1
        out.append(op)
    sg.operators = out
    return count


def weights_to_fp16(model: Any) -> int:
    """Store conv/FC float32 weights and biases as float16 read through DEQUANTIZE."""
    sg = model.subgraphs[0]
    kinds = _kinds(model)
    out, done, count = [], {}, 0
    for op, kind in zip(list(sg.operators), kinds):
        if kind in WEIGHT_OPS:
            for slot in (1, 2):
                if slot >= len(op.inputs) or op.inputs[slot] < 0:
                    continue
                src = int(op.inputs[slot])
                t = sg.tensors[src]
                buf = model.buffers[t.buffer]
                if t.type != _F32 or buf.data is None or len(buf.data) == 0:
                    continue
                if src not in done:
                    half = np.frombuffer(bytes(buf.data), dtype=np.float32).astype(np.float16)
                    h = _add_tensor(model, f"{t.name.decode(errors='replace')}/fp16", list(t.shape), _F16, half.tobytes())
                    deq = _add_tensor(model, t.name.decode(errors="replace"), list(t.shape), _F32)
                    out.append(_new_op(_opcode(model, "DEQUANTIZE", 3), [h], [deq]))
                    done[src] = deq
                    count += 1
                op.inputs[slot] = done[src]
        out.append(op)
    sg.operators = out
    _drop_unused_buffers(model)
    return count


def encode_sparse(model: Any) -> tuple[str, ...]:
    """CSR-encode every conv/FC weight with ≥ 30 % zeros and read it through DENSIFY."""
    sg = model.subgraphs[0]
    kinds = _kinds(model)
    producer = {int(o): i for i, op in enumerate(sg.operators) for o in op.outputs}
    insert: dict[int, Any] = {}  # op index -> DENSIFY op to put before it
    done: dict[int, int] = {}  # sparse tensor -> its DENSIFY output, for weights used twice
    encoded = []
    for i, (op, kind) in enumerate(zip(sg.operators, kinds)):
        if kind not in WEIGHT_OPS or len(op.inputs) < 2:
            continue
        user, slot = op, 1
        src = int(op.inputs[1])
        if src in producer and kinds[producer[src]] == "DEQUANTIZE":  # fp16: DENSIFY goes before it
            user, slot, i = sg.operators[producer[src]], 0, producer[src]
            src = int(user.inputs[0])
        if src in done:
            user.inputs[slot] = done[src]
            continue
        t = sg.tensors[src]
        buf = model.buffers[t.buffer]
        if t.sparsity is not None or buf.data is None or len(buf.data) == 0 or t.type not in (_F32, _F16):
            continue
        w = np.frombuffer(bytes(buf.data), dtype=np.float32 if t.type == _F32 else np.float16)
        if (w == 0).mean() < MIN_ZEROS_TO_ENCODE:
            continue
        dense_out = _add_tensor(model, t.name.decode(errors="replace") + "/densified", list(t.shape), t.type)
        t.sparsity, values = csr_sparsity(w.reshape([int(s) for s in t.shape]))
        _own_buffer(model, t).data = np.frombuffer(values.tobytes(), dtype=np.uint8).copy()
        user.inputs[slot] = done[src] = dense_out
        insert[i] = _new_op(_opcode(model, "DENSIFY"), [src], [dense_out])
        encoded.append(t.name.decode(errors="replace"))
    ops = []
    for i, op in enumerate(sg.operators):
        if i in insert:
            ops.append(insert[i])
        ops.append(op)
    sg.operators = ops
    return tuple(encoded)


def csr_sparsity(w: np.ndarray) -> tuple[Any, np.ndarray]:
    """SparsityParameters for `w` with every dim dense but the last (SPARSE_CSR), and the nonzeros.

    Identity traversal order and no blocks: what the converter writes for float conv weights.
    """
    from ai_edge_litert import schema_py_generated as schema

    rows = w.reshape(-1, w.shape[-1])
    nz = rows != 0
    segments = np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int64)
    indices = np.nonzero(nz)[1]
    sp = schema.SparsityParametersT()
    sp.traversalOrder = list(range(w.ndim))
    sp.blockMap = []
    levels = []
    for d in w.shape[:-1]:
        md = schema.DimensionMetadataT()
        md.format, md.denseSize = schema.DimensionType.DENSE, int(d)
        levels.append(md)
    md = schema.DimensionMetadataT()
    md.format = schema.DimensionType.SPARSE_CSR
    md.arraySegmentsType, md.arraySegments = _index_vector(segments)
    md.arrayIndicesType, md.arrayIndices = _index_vector(indices)
    levels.append(md)
    sp.dimMetadata = levels
    return sp, rows[nz]


def _index_vector(v: np.ndarray) -> tuple[int, Any]:
    """The narrowest SparseIndexVector that holds `v` (the converter picks by value range too)."""
    from ai_edge_litert import schema_py_generated as schema

    top = int(v.max()) if v.size else 0
    if top <= np.iinfo(np.uint8).max:
        vec, kind, dtype = schema.Uint8VectorT(), schema.SparseIndexVector.Uint8Vector, np.uint8
    elif top <= np.iinfo(np.uint16).max:
        vec, kind, dtype = schema.Uint16VectorT(), schema.SparseIndexVector.Uint16Vector, np.uint16
    else:
        vec, kind, dtype = schema.Int32VectorT(), schema.SparseIndexVector.Int32Vector, np.int32
    vec.values = v.astype(dtype)
    return kind, vec


def _drop_unused_buffers(model: Any) -> None:
    """Free the data of constants no op reads any more (the fp32 weights replaced by fp16)."""
    sg = model.subgraphs[0]
    live = {int(t) for op in sg.operators for t in list(op.inputs) + list(op.outputs)}
    live |= {int(t) for t in list(sg.inputs) + list(sg.outputs)}
    keep = {sg.tensors[i].buffer for i in live if i >= 0}
    for i, t in enumerate(sg.tensors):
        if i not in live and t.buffer not in keep:
            model.buffers[t.buffer].data = None


# --- the targets ------------------------------------------------------------------------------

def float_only_refusal(graph: "Graph", target: str) -> str | None:
    if graph.quantized:
        return (f"{target} is float-only: XNNPACK's sparse path is disabled by any int8 tensor; drop int8 "
                "quantization for this target, or export tflite-int8 separately")
    return None


class _SparseTflite(_Tflite):
    passes: ClassVar[tuple[str, ...]] = ("reparam-merge", "fold-conv-bn", "sparsify", "cleanup")
    fp16: ClassVar[bool] = False
    # The pruned program is a different function from the dense model: parity compares against
    # the torch program after the passes (pruned), not the user's dense model.
    parity_reference: ClassVar[str] = "torch-after-passes"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        from edgeconv.exporters.tflite.sparse_check import check_tflite

        why = float_only_refusal(graph, self.name)
        if why:
            raise UserError(why)
        info = lower(graph.module(), graph.example_inputs, path, fp16=self.fp16, target=self.name,
                     names=output_names(graph, ctx), inputs=input_names(graph, ctx))
        report = check_tflite(path)
        return ExportInfo(notes=info.notes() + report.notes())


@TARGETS.register("tflite-sparse")
class TfliteSparse(_SparseTflite):
    name = "tflite-sparse"
    # On x86 XNNPACK densifies the weights and runs dense: the same function as the pruned torch model.
    tolerance = FLOAT_TOLERANCE
    description = "TFLite fp32 with DENSIFY-encoded block-sparse 1x1 weights for XNNPACK sparse inference"


@TARGETS.register("tflite-sparse-fp16")
class TfliteSparseFp16(_SparseTflite):
    name = "tflite-sparse-fp16"
    fp16 = True
    tolerance = FP16_TOLERANCE
    description = "TFLite with float16 block-sparse weights (DENSIFY → DEQUANTIZE) for XNNPACK sparse inference"
