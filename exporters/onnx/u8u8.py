"""onnx-int8-u8: a QDQ int8 ONNX file re-encoded as uint8, losslessly (see `to_u8u8`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def to_u8u8(src: Path, dst: Path, target: str = "onnx-int8-u8") -> tuple[int, int, int]:
    """Re-encode a QDQ int8 ONNX file as uint8, losslessly: int8 q with zero point z -> uint8 q+128
    with zero point z+128 (QuantizeLinear rounds and saturates identically, shifted by 128).

    Every int8 zero point must belong to QuantizeLinear/DequantizeLinear only; every int8 tensor they
    touch must be a weight initializer read only by those DequantizeLinears, or a QuantizeLinear output
    read only by DequantizeLinears — anything else (an op on int8 data, an int8 graph output) is refused,
    naming the tensor. Returns how many weight initializers, activation tensors (QuantizeLinear
    outputs) and zero points were converted."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(src))
    _own_zero_points(model.graph)
    g = _QdqGraph(model.graph, target)
    zps = g.int8_zero_points()
    converted = {k for k, n in enumerate(g.nodes) if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                 and len(n.input) > 2 and n.input[2] in zps}
    weights, q_outputs = g.int8_tensors(zps, converted)
    for name in weights | zps:
        g.set_const(name, (g.const_array(name).astype(np.int16) + 128).astype(np.uint8))
    for k in converted:  # opset >= 21: an explicit output type must follow the zero point
        for a in g.nodes[k].attribute:
            if a.name == "output_dtype" and a.i == TensorProto.INT8:
                a.i = TensorProto.UINT8
    for vi in model.graph.value_info:
        if vi.name in q_outputs and vi.type.tensor_type.elem_type == TensorProto.INT8:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return len(weights), len(q_outputs), len(zps)


def _own_zero_points(g: Any) -> None:
    """Give Q/DQ their own copy of a zero-point initializer that other ops read too (the exporter
    shares equal constants: an int8 0 may also be, say, a Where's operand), so shifting the Q/DQ
    copy to uint8 leaves the other readers' value alone."""
    from onnx import numpy_helper

    inits = {i.name: i for i in g.initializer}
    readers: dict[str, set[str]] = {}
    for n in g.node:
        for pos, i in enumerate(n.input):
            readers.setdefault(i, set()).add("qdq" if n.op_type in ("QuantizeLinear", "DequantizeLinear") and pos == 2
                                             else "other")
    for name, kinds in readers.items():
        if name in inits and kinds == {"qdq", "other"}:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]), f"{name}__qdq_zero_point")
            g.initializer.append(copy)
            for n in g.node:
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] == name:
                    n.input[2] = copy.name


class _QdqGraph:
    """A QDQ ONNX graph's constants and readers, for the u8u8 re-encoding and its refusals."""

    def __init__(self, g: Any, target: str) -> None:
        self.nodes = list(g.node)
        self.inits = {i.name: i for i in g.initializer}
        self.consts = {n.output[0]: n for n in self.nodes if n.op_type == "Constant"}
        self.consumers: dict[str, list[int]] = {}  # tensor -> indices of the nodes reading it
        for k, n in enumerate(self.nodes):
            for i in n.input:
                self.consumers.setdefault(i, []).append(k)
        self.graph_outputs = {o.name for o in g.output}
        self.target = target

    def refuse(self, what: str) -> Exception:
        from edgeconv.errors import UserError

        return UserError(f"{self.target}: cannot re-encode {what} as uint8; use -t onnx-int8")

    def const_array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.consts:
            attr = next((a for a in self.consts[name].attribute if a.name == "value"), None)
            return None if attr is None else numpy_helper.to_array(attr.t)
        return None

    def set_const(self, name: str, arr: np.ndarray) -> None:
        from onnx import numpy_helper

        if name in self.inits:
            self.inits[name].CopyFrom(numpy_helper.from_array(arr, name))
        else:
            attr = next(a for a in self.consts[name].attribute if a.name == "value")
            attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))

    def int8_zero_points(self) -> set[str]:
        """The int8 zero points of every Q/DQ; each must be a constant read by Q/DQ only."""
        from onnx import TensorProto

        zps: set[str] = set()
        for n in self.nodes:
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            if len(n.input) > 2 and n.input[2]:
                zp = self.const_array(n.input[2])
                if zp is None:
                    raise self.refuse(f"the non-constant zero point {n.input[2]!r} of {n.name or n.op_type}")
                if zp.dtype == np.int8:
                    zps.add(n.input[2])
            elif (n.op_type == "DequantizeLinear" and n.input[0] in self.inits
                  and self.inits[n.input[0]].data_type == TensorProto.INT8):
                raise self.refuse(f"{n.input[0]!r} (int8 without a zero point)")
        qdq = {k for k, n in enumerate(self.nodes) if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
        for z in zps:
            if any(k not in qdq or list(self.nodes[k].input).index(z) != 2 for k in self.consumers.get(z, [])):
                raise self.refuse(f"the zero point {z!r} (read by an op other than Q/DQ)")
        return zps

    def int8_tensors(self, zps: set[str], converted: set[int]) -> tuple[set[str], set[str]]:
        """(weight initializers, QuantizeLinear outputs) the re-encoding shifts; refuses any int8
        tensor something other than a DequantizeLinear reads."""
        dq = {k for k in converted if self.nodes[k].op_type == "DequantizeLinear"}
        q_outputs = {self.nodes[k].output[0] for k in converted - dq}
        for out in q_outputs:
            if out in self.graph_outputs or any(k not in dq for k in self.consumers.get(out, [])):
                raise self.refuse(f"the int8 tensor {out!r} (read by an op other than DequantizeLinear)")
        weights: set[str] = set()
        for k in dq:
            x = self.nodes[k].input[0]
            if x in q_outputs:
                continue
            arr = self.const_array(x)
            if arr is None or arr.dtype != np.int8 or x not in self.inits:
                raise self.refuse(f"the int8 tensor {x!r} (neither a weight initializer nor a QuantizeLinear output)")
            if any(c not in dq for c in self.consumers.get(x, [])):
                raise self.refuse(f"the weight {x!r} (read by an op other than DequantizeLinear)")
            weights.add(x)
        return weights, q_outputs


