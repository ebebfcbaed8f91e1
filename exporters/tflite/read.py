"""Every reading of a .tflite file: weights and their scales, activation scales, the ops that still
compute in float, the int8 activations for per-layer isolation, and the op list for the cost model.

The op-level view comes from ai-edge-litert's Interpreter (`_get_ops_details`, the only op list its
Python API gives); the flatbuffer itself is parsed in flatbuffer.py where a reading needs more.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.costops import Op, OpClass, conv_class, elements, precision_of
from edgeconv.errors import UserError
from edgeconv.exporters.formats import QTensor, int_values, join_samples
from edgeconv.inputs import Batch, count, feed
from edgeconv.exporters.tflite.runtime import quantize
from edgeconv.results import FloatOps, WeightQuant

WEIGHT_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0}


def interpreter(path: Path, **kwargs: Any) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), **kwargs)


def open_model(path: Path) -> None:
    interpreter(path, num_threads=1)


def sparse_report(path: Path) -> Any:
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    return check_tflite(path)


def read_weights(path: Path) -> list[tuple[WeightQuant, np.ndarray | None]]:
    it = interpreter(path)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():  # noqa: SLF001 — the only op-level view the Python API gives
        if op["op_name"] not in WEIGHT_OPS or len(op["inputs"]) < 2:
            continue
        t = tensors[int(op["inputs"][1])]
        qp = t.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), dtype=np.float64)
        n = int(scales.size)
        axis = int(qp.get("quantized_dimension", 0)) if n > 1 else None
        wq = WeightQuant(op["op_name"], t["name"], tuple(int(s) for s in t["shape"]), np.dtype(t["dtype"]).name, n, axis)
        out.append((wq, scales if n else None))
    return out


def read_activation_scales(path: Path) -> list[float]:
    """Scales of the int8 tensors that are not weights (inputs, outputs, intermediate activations)."""
    it = interpreter(path)
    weights = {int(op["inputs"][1]) for op in it._get_ops_details()  # noqa: SLF001
               if op["op_name"] in WEIGHT_OPS and len(op["inputs"]) > 1}
    out = []
    for t in it.get_tensor_details():
        scales = (t.get("quantization_parameters") or {}).get("scales", [])
        if np.dtype(t["dtype"]) == np.int8 and len(scales) == 1 and t["index"] not in weights:
            out.append(float(scales[0]))
    return out


# Ops whose int8 → int8 form only moves or rescales integers.
_INTEGER_MOVES = {"QUANTIZE"}


def float_ops(path: Path) -> FloatOps:
    """The ops of a .tflite that compute in float: DEQUANTIZE, QUANTIZE from float, and any op
    with a float32/float16 input or output (constants included: a float weight is a float op).
    QUANTIZE int8 → int8 is an integer requantization, counted apart."""
    it = interpreter(path)
    tensors = {t["index"]: t for t in it.get_tensor_details()}

    def is_float(i: int) -> bool:
        return i >= 0 and np.dtype(tensors[int(i)]["dtype"]).kind == "f"

    found, requant = [], 0
    for op in it._get_ops_details():  # noqa: SLF001
        name = op["op_name"]
        ins, outs = [int(i) for i in op["inputs"]], [int(i) for i in op["outputs"]]
        if name in _INTEGER_MOVES and not any(map(is_float, ins + outs)):
            requant += 1
            continue
        if name == "DELEGATE":
            continue
        if name in ("DEQUANTIZE", "QUANTIZE") or any(map(is_float, ins + outs)):
            out = tensors[outs[0]]["name"] if outs else ""
            found.append(f"{name} {out}")
    return FloatOps(len(found), tuple(found), requant, "TFLite ops with a float input/output, DEQUANTIZE, "
                    "QUANTIZE from float (read from the flatbuffer with ai-edge-litert)")



def delegated_nodes(path: Path) -> tuple[dict[int, int], list[str]]:
    """Which nodes the interpreter's default XNNPACK delegate took here: {node index: the DELEGATE
    node (0, 1, …) that replaced it}, and notes on anything the walk could not settle.

    The Python interpreter exposes no execution plan; after `allocate_tensors()` it lists the
    original nodes with one `DELEGATE` node per delegated partition appended, whose inputs and
    outputs are the partition's boundary tensors. Walking back from a DELEGATE node's outputs
    through producers, stopping at its inputs, reaches exactly the nodes it replaced (a partition's
    inputs are the tensors produced outside it). Built with the default resolver, single-threaded,
    exactly as parity runs the file."""
    it = interpreter(path, num_threads=1)
    it.allocate_tensors()
    details = it._get_ops_details()
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    notes: list[str] = []
    producer = {int(t): d["index"] for d in originals for t in d["outputs"]}
    owner: dict[int, int] = {}
    for k, d in enumerate(delegates):
        stop = {int(t) for t in d["inputs"]}
        frontier = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while frontier:
            t = frontier.pop()
            if t in stop or t not in producer:
                continue
            n = producer[t]
            if n in seen:
                continue
            seen.add(n)
            frontier.extend(int(x) for x in details[n]["inputs"] if int(x) >= 0)
        if not seen:
            notes.append(f"DELEGATE node {d['index']} reaches no original node")
        for n in seen:
            if n in owner:
                notes.append(f"node {n} claimed by two DELEGATE nodes")
            owner[n] = k
    return owner, notes


def op_view(path: Path) -> Any:
    from edgeconv.exporters.tflite.ops import read_ops

    return read_ops(path)


# --- int8 activations, for per-layer isolation -------------------------------------------------

def int8_tensors(path: Path, x: "Batch", kernels: str = "default") -> list[QTensor]:
    """Every int8 tensor an op writes, kept by the interpreter (`experimental_preserve_all_tensors`);
    every input of the net fed by its name (edgeconv.inputs); computed by `kernels` (TfliteRunner)."""
    from edgeconv.exporters.tflite.runtime import resolver

    with warnings.catch_warnings():  # "intended for debugging": reading intermediates is what this is
        warnings.simplefilter("ignore")
        it = interpreter(path, experimental_preserve_all_tensors=True, num_threads=1, **resolver(kernels))
    it.allocate_tensors()
    details = {d["index"]: d for d in it.get_tensor_details()}
    order: list[int] = []
    for op in it._get_ops_details():  # noqa: SLF001 — the only op-level view the Python API gives
        for t in op["outputs"]:
            d = details.get(int(t))
            if d is None or np.dtype(d["dtype"]) not in (np.int8, np.uint8):
                continue
            qp = d.get("quantization_parameters") or {}
            if len(qp.get("scales", [])) == 1 and int(t) not in order:
                order.append(int(t))
    from edgeconv.exporters.tflite.runtime import in_model_order

    ins = in_model_order(it, it.get_input_details(), inputs=True)
    rows: dict[int, list[np.ndarray]] = {t: [] for t in order}
    for i in range(count(x)):
        fed = feed([d["name"] for d in ins], x, i, i + 1)
        for d in ins:
            it.set_tensor(d["index"], quantize(fed[d["name"]], d))
        it.invoke()
        for t in order:
            rows[t].append(int_values(it.get_tensor(t)))
    out = []
    for t in order:
        qp = details[t]["quantization_parameters"]
        v = join_samples(rows[t])  # NHWC inside a litert-torch model, mostly: `_align` decides
        out.append(QTensor(details[t]["name"], float(qp["scales"][0]), int(qp["zero_points"][0]), v))
    return out



# --- the cost model's op list ------------------------------------------------------------------

# Shape-only ops are free; data movement, pools and the rest are priced by traffic.
FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
MOVE = {"CONCATENATION", "TRANSPOSE", "PAD", "PADV2", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "GATHER",
        "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}
POOL = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SUM", "REDUCE_MAX"}


def cost_ops(path: Path) -> tuple[list[Op], str]:
    try:
        it = interpreter(path)
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
        act_in = sum(elements(shape(i)) for i in ins if not const(i))
        weights = sum(elements(shape(i)) for i in ins if const(i) and kind not in MOVE | POOL)
        out = sum(elements(shape(i)) for i in op["outputs"])
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
    return ops, precision_of(dtypes)


