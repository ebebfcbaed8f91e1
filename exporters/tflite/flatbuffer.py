"""A .tflite flatbuffer as the schema's object API: what the readings and rewrites that need more
than the interpreter's op list (sparse storage, builtin options, buffers) parse."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.errors import UserError


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


def name_tensors(path: Path | str, outputs: tuple[str, ...] = (), inputs: tuple[str, ...] = ()) -> None:
    """Give the model's outputs (inputs) these names, in the subgraph's output (input) order: the
    tensors and the signature's keys (what `get_signature_runner` takes and returns), so a .tflite
    names them as the .onnx and .mlpackage of the same model do (litert-torch writes args_0, …,
    output_0, …). An empty tuple leaves that side's names as they are."""
    import flatbuffers

    from edgeconv.results import atomic_write

    model = read_tflite(path)
    graph = model.subgraphs[0]
    for side, names, sig_side in (("output", outputs, "outputs"), ("input", inputs, "inputs")):
        if not names:
            continue
        tensors = graph.outputs if side == "output" else graph.inputs
        if len(tensors) != len(names):
            raise ValueError(f"{len(names)} {side} names for {len(tensors)} {side}s")
        by_tensor = {int(t): n for t, n in zip(tensors, names, strict=True)}
        for t, n in by_tensor.items():
            graph.tensors[t].name = n.encode()
        for sig in model.signatureDefs or ():
            for o in getattr(sig, sig_side) or ():
                if int(o.tensorIndex) in by_tensor:
                    o.name = by_tensor[int(o.tensorIndex)].encode()
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    atomic_write(Path(path), bytes(builder.Output()))
