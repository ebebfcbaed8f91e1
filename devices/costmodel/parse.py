"""Read an exported artifact (.tflite or .onnx) into the cost model's op list.

The walk mirrors what a mobile runtime executes: an activation directly after a conv, FC or add
is fused into it (TFLite already fuses them in the file; in ONNX we fold Relu/Clip ourselves),
quantize/dequantize pairs around weights are constants, and shape-only ops (Reshape, Squeeze,
Flatten …) are free. Each op records its MACs, weight elements and activation traffic.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from edgeconv.devices.costmodel.ops import Op, OpClass, conv_class
from edgeconv.errors import UserError

FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity",
        "Shape", "Constant", "ConstantOfShape", "Cast", "Dropout", "Gather"}
MOVE = {"CONCATENATION", "TRANSPOSE", "PAD", "PADV2", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "GATHER",
        "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "Concat", "Transpose", "Pad", "Split", "Slice",
        "DepthToSpace", "SpaceToDepth", "Resize", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}
POOL = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "MaxPool", "AveragePool",
        "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
FUSABLE_ACT = {"Relu", "Clip", "LeakyRelu"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}


def _n(shape: Iterable[int]) -> int:
    return int(math.prod(max(int(d), 1) for d in shape))


def load_ops(path: Path | str) -> tuple[list[Op], str]:
    """(ops, precision) of an artifact; precision is "int8", "fp16" or "fp32" as stored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"artifact {path} does not exist")
    if path.suffix == ".tflite":
        return _tflite_ops(path)
    if path.suffix == ".onnx":
        return _onnx_ops(path)
    raise UserError(f"{path.name}: the cost model reads .tflite and .onnx artifacts, not {path.suffix or 'this file'}")


# --- TFLite ------------------------------------------------------------------------------------

def _tflite_ops(path: Path) -> tuple[list[Op], str]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError("ai-edge-litert is not installed; pip install ai-edge-litert==2.3.0") from None
    try:
        it = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a readable .tflite model: {str(e).splitlines()[0]}") from None
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    details = it._get_ops_details()  # the only public-ish view of the op graph in ai-edge-litert
    produced = {o for op in details for o in op["outputs"]}
    graph_inputs = {t["index"] for t in it.get_input_details()}

    def const(i: int) -> bool:
        return i >= 0 and i not in produced and i not in graph_inputs

    def shape(i: int) -> list[int]:
        return [int(d) for d in tensors[i]["shape"]]

    ops: list[Op] = []
    dtypes: set[str] = set()
    for op in details:
        kind = op["op_name"]
        ins = [i for i in op["inputs"] if i >= 0]
        act_in = sum(_n(shape(i)) for i in ins if not const(i))
        weights = sum(_n(shape(i)) for i in ins if const(i) and kind not in MOVE | POOL)
        out = sum(_n(shape(i)) for i in op["outputs"])
        name = f"{kind.lower()}_{op['index']}"
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = shape(ins[1])
            dtypes.add(tensors[ins[1]]["dtype"].__name__)
            if kind == "CONV_2D":  # [O, kh, kw, I/g]
                cin = shape(ins[0])[-1]
                g = max(cin // w[3], 1)
                macs = out * w[1] * w[2] * w[3]
                cls = conv_class((w[1], w[2]), g, cin, w[0])
            else:  # [1, kh, kw, C·M]
                macs, cls = out * w[1] * w[2], OpClass.DEPTHWISE
            ops.append(Op(name, cls, macs, weights, act_in, out))
        elif kind in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            w = shape(ins[1])
            dtypes.add(tensors[ins[1]]["dtype"].__name__)
            ops.append(Op(name, OpClass.FC, out * w[-1], weights, act_in, out))
        elif kind in FREE or (kind == "DEQUANTIZE" and all(const(i) for i in ins)):
            continue  # shape-only, or a constant weight the delegate decodes once at load
        elif kind in MOVE:
            ops.append(Op(name, OpClass.MOVE, 0, 0, act_in, out))
        elif kind in POOL:
            ops.append(Op(name, OpClass.POOL, max(act_in, out), 0, act_in, out))
        else:
            ops.append(Op(name, OpClass.ELEMENTWISE, out, weights, act_in, out))
    return ops, _precision(dtypes)


def _precision(weight_dtypes: set[str]) -> str:
    if weight_dtypes & {"int8", "uint8", "int4"}:
        return "int8"
    if weight_dtypes & {"float16"}:
        return "fp16"
    return "fp32"


# --- ONNX --------------------------------------------------------------------------------------

def _onnx_ops(path: Path) -> tuple[list[Op], str]:
    import onnx

    try:
        model = onnx.load(str(path))
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # onnx raises several unrelated types for a bad file
        raise UserError(f"{path} is not a readable .onnx model: {str(e).splitlines()[0][:160]}") from None
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    init = {t.name: t for t in g.initializer}
    for t in init.values():
        shapes[t.name] = list(t.dims)
    for node in g.node:  # dynamo-exported weights may be Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)
                    init[node.output[0]] = a.t
    producer = {o: n for n in g.node for o in n.output}
    dtypes: set[str] = set()

    def source(name: str) -> Any:
        """The node producing `name`, looking through Q/DQ pairs (a quantized graph's glue)."""
        n = producer.get(name)
        while n is not None and n.op_type in QDQ:
            n = producer.get(n.input[0])
        return n

    def is_const(name: str) -> bool:
        n = producer.get(name)
        while n is not None and n.op_type in QDQ:
            name = n.input[0]
            n = producer.get(name)
        return name in init

    def weight(name: str) -> list[int]:
        n = producer.get(name)
        while n is not None and n.op_type in QDQ:
            if n.op_type == "DequantizeLinear":
                dtypes.add(onnx.helper.tensor_dtype_to_np_dtype(
                    init[n.input[0]].data_type).name if n.input[0] in init else "int8")
            name = n.input[0]
            n = producer.get(name)
        if name in init:
            dtypes.add(onnx.helper.tensor_dtype_to_np_dtype(init[name].data_type).name)
        return shapes.get(name, [])

    ops: list[Op] = []
    for i, node in enumerate(g.node):
        kind = node.op_type
        if kind in FREE or kind in QDQ:
            continue
        name = f"{kind.lower()}_{i}"
        ins = [x for x in node.input if x]
        acts = [x for x in ins if not is_const(x)]
        act_in = sum(_n(shapes.get(x, [])) for x in acts)
        out = sum(_n(shapes.get(o, [])) for o in node.output)
        if kind == "Conv":
            w = weight(ins[1])
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            cin = shapes.get(ins[0], [1, w[1] * groups])[1]
            wn = _n(w) + (w[0] if len(ins) > 2 else 0)
            ops.append(Op(name, conv_class((w[2], w[3]), groups, cin, w[0]), out * w[1] * w[2] * w[3],
                          wn, act_in, out))
        elif kind in ("Gemm", "MatMul") and len(ins) > 1 and is_const(ins[1]):
            w = weight(ins[1])
            k = w[0] if kind == "MatMul" or not any(a.name == "transB" and a.i for a in node.attribute) else w[1]
            ops.append(Op(name, OpClass.FC, out * k, _n(w) + (out if len(ins) > 2 else 0), act_in, out))
        elif kind in FUSABLE_ACT and (src := source(ins[0])) is not None and \
                src.op_type in ("Conv", "Gemm", "MatMul", "Add"):
            continue  # fused into the op before it, as every mobile runtime does
        elif kind in MOVE:
            ops.append(Op(name, OpClass.MOVE, 0, 0, act_in, out))
        elif kind in POOL:
            ops.append(Op(name, OpClass.POOL, max(act_in, out), 0, act_in, out))
        else:
            wts = sum(_n(shapes.get(x, [])) for x in ins if is_const(x))
            ops.append(Op(name, OpClass.ELEMENTWISE, out, wts, act_in, out))
    quantized = any(n.op_type in QDQ for n in g.node)
    return ops, "int8" if quantized else _precision(dtypes)
