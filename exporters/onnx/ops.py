"""The nodes of an .onnx file as a neutral op list (`edgeconv.opview.OpView`).

Shapes and element types come from ONNX shape inference (symbolic or unknown dims read as -1).
Constant nodes are folded into constants, as ONNX Runtime does before any execution provider sees
the graph, so they are not ops. Attributes become options under their ONNX names. In a QDQ graph
two derived options help rules about quantized kernels: `qdq_input_types` (for each input fed by a
DequantizeLinear, the integer type it dequantizes; None otherwise) and `qdq_output_types` (for each
output read only by QuantizeLinear nodes, the integer type they produce).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.errors import UserError
from edgeconv.opview import SMALL_CONST, OpView, TensorView


def read_ops(path: Path | str) -> tuple[OpView, ...]:
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    try:
        model = onnx.load(str(p))  # weights in a .data file beside it are read too (rules test their values)
    except Exception as e:  # protobuf raises its own DecodeError for anything that is not a model
        raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort: the declared value_info is still there
        pass
    g = model.graph
    opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    info: dict[str, tuple[str, tuple[int, ...]]] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        info[vi.name] = (helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "?", dims)
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
            continue
        nodes.append(n)
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    index = {name: k for k, name in enumerate(dict.fromkeys(
        [i.name for i in g.input] + list(consts) + [o for n in nodes for o in list(n.input) + list(n.output) if o]))}

    def op_name(n: Any) -> str:
        return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"

    def tensor(name: str) -> TensorView:
        if name in consts:
            arr = consts[name]
            values = tuple(float(v) for v in arr.reshape(-1)) if arr.size <= SMALL_CONST and arr.dtype.kind in "biuf" else None
            dtype, shape, const = arr.dtype.name, tuple(int(s) for s in arr.shape), True
        else:
            dtype, shape = info.get(name, ("?", ()))
            values, const = None, False
        return TensorView(index.get(name, -1), name, dtype, shape, const, values=values,
                          producer=op_name(producer[name]) if name in producer else None,
                          consumers=tuple(op_name(c) for c in consumers.get(name, ())))

    def qdq_in(name: str) -> str | None:
        n = producer.get(name)
        if n is None or n.op_type != "DequantizeLinear" or not n.input:
            return None
        return tensor(n.input[0]).dtype

    def qdq_out(name: str) -> str | None:
        uses = consumers.get(name, [])
        if not uses or any(u.op_type != "QuantizeLinear" for u in uses):
            return None
        return tensor(uses[0].output[0]).dtype

    out = []
    for k, n in enumerate(nodes):
        opts: dict[str, Any] = {a.name: _attr(a) for a in n.attribute}
        opts["qdq_input_types"] = [qdq_in(i) if i else None for i in n.input]
        opts["qdq_output_types"] = [qdq_out(o) if o else None for o in n.output]
        ins = tuple(tensor(i) if i else None for i in n.input)
        outs = tuple(tensor(o) for o in n.output if o)
        out.append(OpView(k, op_name(n), ins, outs, opts, int(opset.get(n.domain or "ai.onnx", 0)),
                          (n.name or (n.output[0] if n.output else ""))[-60:]))
    return tuple(out)


def _attr(a: Any) -> Any:
    from onnx import helper

    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (list, tuple)):
        return [x.decode(errors="replace") if isinstance(x, bytes) else x for x in v if isinstance(x, (int, float, bytes, str))]
    return v if isinstance(v, (int, float, str)) else None
