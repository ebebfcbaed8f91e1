"""Every reading of an .onnx file: weights and their scales, activation scales, the ops that still
compute in float, the int8 activations for per-layer isolation, and the op list for the cost model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.costops import Op, OpClass, conv_class, elements, precision_of
from edgeconv.errors import UserError
from edgeconv.exporters.formats import QTensor, int_values, join_samples
from edgeconv.inputs import Batch, count, feed
from edgeconv.results import FloatOps, WeightQuant

WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
QDQ = {"QuantizeLinear", "DequantizeLinear"}


def open_model(path: Path) -> Any:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not model.graph.node:  # b"" parses as an empty model
        raise ValueError("it holds no graph")
    return model


def read_weights(path: Path) -> list[tuple[WeightQuant, np.ndarray | None]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        w = node.input[1]
        dq = producers.get(w)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            q = numpy_helper.to_array(inits[dq.input[0]])
            scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64).ravel()
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) if scale.size > 1 else None
            out.append((WeightQuant(node.op_type, dq.input[0], tuple(q.shape), q.dtype.name, scale.size, axis), scale))
        elif w in inits:
            a = numpy_helper.to_array(inits[w])
            out.append((WeightQuant(node.op_type, w, tuple(a.shape), a.dtype.name, 0, None), None))
    return out


def read_activation_scales(path: Path) -> list[float]:
    """Scales of the QuantizeLinear nodes: with weights folded to int8, these are the activations."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    out = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        name = node.input[1]
        if name in inits:
            out.append(float(numpy_helper.to_array(inits[name]).ravel()[0]))
        elif name in consts:
            out.append(float(numpy_helper.to_array(consts[name].attribute[0].t).ravel()[0]))
    return out


_BIAS_OPS = ("Conv", "Gemm", "ConvTranspose")
_FUSED_ACTIVATIONS = ("Relu", "Clip")
# Binary ops a ReLU/clamp after them is quantized with (calib.annotate FUSING): no tensor between them.
_FUSING_BINARY = ("Add", "Sub", "Mul")
# Ops whose inputs after the first are constant parameters of the op, not data: a stored float there
# (Resize's `scales` [1, 1, 2, 2], Pad's constant value 0.0) is how the op is written, and the op on
# a DequantizeLinear output with a QuantizeLinear after it is one QDQ unit (an int8 Resize/Pad).
_PARAMETERS = ("Clip", "Pow", "Resize", "Pad")


def float_ops(path: Path) -> FloatOps:
    """The nodes of a QDQ ONNX file that compute in float: any node (other than Q/DQ and
    constants) with a float input that does not come from a DequantizeLinear — a float initializer,
    a graph input or another op's float output."""
    import onnx

    model = onnx.load(str(path))
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 — types only sharpen the answer
        pass
    g = model.graph
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    elem = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    elem.update({i.name: i.data_type for i in g.initializer})
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            elem[n.output[0]] = n.attribute[0].t.data_type
    found = []
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        for k, name in enumerate(n.input):
            if not name or elem.get(name) not in floats:
                continue
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear":
                continue
            if k >= 1 and n.op_type in _PARAMETERS and (src is None or src.op_type == "Constant"):
                continue  # Clip's bounds, Pow's exponent, Resize's roi/scales, Pad's value: parameters, not data
            if k == 2 and n.op_type in _BIAS_OPS and src is None:
                continue  # a float bias: the integer kernel takes it as int32 with scale s_in·s_w
            if n.op_type in _FUSED_ACTIVATIONS and src is not None and src.op_type in _BIAS_OPS + _FUSING_BINARY:
                continue  # Conv/Add/Mul → Relu/Clip → Q: onnxruntime folds the clamp into the Q (one integer unit)
            found.append(f"{n.op_type} {n.name or n.output[0]}")
            break
    return FloatOps(len(found), tuple(found), 0, "ONNX nodes with a float input not from DequantizeLinear "
                    "(Q/DQ and constants excluded)")



def op_view(path: Path) -> Any:
    from edgeconv.exporters.onnx.ops import read_ops

    return read_ops(path)


# --- int8 activations, for per-layer isolation -------------------------------------------------

def int8_tensors(path: Path, x: "Batch") -> list[QTensor]:
    """Every activation QuantizeLinear output, added as an extra graph output and read in onnxruntime
    (every input of the net fed by its name: edgeconv.inputs)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    qnodes = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts
              and np.asarray(consts.get(n.input[1], np.zeros(2))).size == 1]
    by_input: dict[str, list[Any]] = {}  # once: per quantize op it made reading a program quadratic
    for n in g.node:
        for i in n.input:
            by_input.setdefault(i, []).append(n)
    fused = {n.output[0] for n in qnodes if _fused(n, g, consts, by_input)}
    keep = [n for n in qnodes if n.output[0] not in fused]
    existing = {o.name for o in g.output}
    for n in keep:
        if n.output[0] not in existing:
            zp = consts.get(n.input[2]) if len(n.input) > 2 else None
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(zp).dtype) if zp is not None else onnx.TensorProto.UINT8
            g.output.append(onnx.helper.make_tensor_value_info(n.output[0], elem, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # No graph optimisation: fusing QDQ pairs into QLinear ops would remove the tensors we read.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    names = [n.output[0] for n in keep]
    rows = [sess.run(names, feed(in_names, x, i, i + 1)) for i in range(count(x))]
    out = []
    for j, n in enumerate(keep):
        zp = consts.get(n.input[2]) if len(n.input) > 2 else np.uint8(0)
        # uint8 (onnx-int8-u8: q+128 with zero point z+128) compared in the int8 domain it encodes
        shift = 128 if np.asarray(zp).dtype == np.uint8 else 0
        values = join_samples([int_values(r[j], shift) for r in rows])
        for r in rows:  # each runtime array let go once stored: the whole set is every activation
            r[j] = None
        out.append(QTensor(n.input[0], float(np.asarray(consts[n.input[1]]).ravel()[0]),
                           int(np.asarray(zp).ravel()[0]) - shift, values))
    return out


def _fused(q: Any, g: Any, consts: dict, by_input: dict[str, list[Any]]) -> bool:
    """q quantizes a pre-activation that only fused activations read (conv → q → dq → relu → q with
    the same params). A q whose value leaves the graph (its dequantize is an output) is not: the
    output layer is judged like every other. `by_input`: each tensor's reading nodes."""
    dqs = by_input.get(q.output[0], [])
    if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
        return False
    outputs = {o.name for o in g.output}
    if any(d.output[0] in outputs or not by_input.get(d.output[0]) for d in dqs):
        return False
    for d in dqs:
        for u in by_input.get(d.output[0], []):
            if u.op_type not in ("Relu", "Clip"):
                return False
            nxt = [w for w in by_input.get(u.output[0], []) if w.op_type == "QuantizeLinear"]
            if len(nxt) != 1 or not _same_params(nxt[0], q, consts):
                return False
    return True


def _same_params(a: Any, b: Any, consts: dict) -> bool:
    def params(n: Any) -> tuple:
        return tuple(np.asarray(consts.get(i, np.nan)).ravel().tolist() for i in n.input[1:3])
    return params(a) == params(b)



# --- the cost model's op list ------------------------------------------------------------------

# Shape-only ops are free; data movement, pools and the rest are priced by traffic.
FREE = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Constant", "ConstantOfShape", "Cast",
        "Dropout", "Gather"}
MOVE = {"Concat", "Transpose", "Pad", "Split", "Slice", "DepthToSpace", "SpaceToDepth", "Resize"}
POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
FUSABLE_ACT = {"Relu", "Clip", "LeakyRelu"}


class _CostGraph:
    """An ONNX graph with the lookups the cost walk needs: shapes (after shape inference),
    constants, producers, and the stored dtype of each weight, looking through Q/DQ pairs."""

    def __init__(self, model: Any) -> None:
        import onnx

        self.g = g = model.graph
        self.shapes: dict[str, list[int]] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
        self.init = {t.name: t for t in g.initializer}
        for t in self.init.values():
            self.shapes[t.name] = list(t.dims)
        for node in g.node:  # dynamo-exported weights may be Constant nodes
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.shapes[node.output[0]] = list(a.t.dims)
                        self.init[node.output[0]] = a.t
        self.producer = {o: n for n in g.node for o in n.output}
        self.dtypes: set[str] = set()
        self._np_dtype = lambda t: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name

    def source(self, name: str) -> Any:
        """The node producing `name`, looking through Q/DQ pairs (a quantized graph's glue)."""
        n = self.producer.get(name)
        while n is not None and n.op_type in QDQ:
            n = self.producer.get(n.input[0])
        return n

    def _behind_qdq(self, name: str) -> str:
        n = self.producer.get(name)
        while n is not None and n.op_type in QDQ:
            if n.op_type == "DequantizeLinear":
                src = self.init.get(n.input[0])
                self.dtypes.add(self._np_dtype(src) if src is not None else "int8")
            name = n.input[0]
            n = self.producer.get(name)
        return name

    def is_const(self, name: str) -> bool:
        n = self.producer.get(name)
        while n is not None and n.op_type in QDQ:
            name = n.input[0]
            n = self.producer.get(name)
        return name in self.init

    def weight(self, name: str) -> list[int]:
        """A weight's shape; records the dtype it is stored in."""
        name = self._behind_qdq(name)
        if name in self.init:
            self.dtypes.add(self._np_dtype(self.init[name]))
        return self.shapes.get(name, [])

    def size(self, name: str) -> int:
        return elements(self.shapes.get(name, []))


def cost_ops(path: Path) -> tuple[list[Op], str]:
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as e:  # onnx raises several unrelated types for a bad file
        raise UserError(f"{path} is not a readable .onnx model: {str(e).splitlines()[0][:160]}") from None
    cg = _CostGraph(model)
    ops = [op for i, node in enumerate(cg.g.node) if (op := _cost_op(cg, i, node)) is not None]
    quantized = any(n.op_type in QDQ for n in cg.g.node)
    return ops, "int8" if quantized else precision_of(cg.dtypes)


def _cost_op(cg: _CostGraph, i: int, node: Any) -> Op | None:
    """The node as the op a mobile runtime runs, or None (free, or fused into the op before it)."""
    kind = node.op_type
    if kind in FREE or kind in QDQ:
        return None
    name = f"{kind.lower()}_{i}"
    ins = [x for x in node.input if x]
    act_in = sum(cg.size(x) for x in ins if not cg.is_const(x))
    out = sum(cg.size(o) for o in node.output)
    if kind == "Conv":
        w = cg.weight(ins[1])
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        cin = cg.shapes.get(ins[0], [1, w[1] * groups])[1]
        wn = elements(w) + (w[0] if len(ins) > 2 else 0)
        return Op(name, conv_class((w[2], w[3]), groups, cin, w[0]), out * w[1] * w[2] * w[3], wn, act_in, out)
    if kind in ("Gemm", "MatMul") and len(ins) > 1 and cg.is_const(ins[1]):
        w = cg.weight(ins[1])
        k = w[0] if kind == "MatMul" or not any(a.name == "transB" and a.i for a in node.attribute) else w[1]
        return Op(name, OpClass.FC, out * k, elements(w) + (out if len(ins) > 2 else 0), act_in, out)
    if kind in FUSABLE_ACT and (src := cg.source(ins[0])) is not None and \
            src.op_type in ("Conv", "Gemm", "MatMul", "Add"):
        return None  # fused into the op before it, as every mobile runtime does
    if kind in MOVE:
        return Op(name, OpClass.MOVE, 0, 0, act_in, out)
    if kind in POOL:
        return Op(name, OpClass.POOL, max(act_in, out), 0, act_in, out)
    wts = sum(cg.size(x) for x in ins if cg.is_const(x))
    return Op(name, OpClass.ELEMENTWISE, out, wts, act_in, out)
