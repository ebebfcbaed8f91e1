"""ONNX targets, lowered with torch.onnx (dynamo) from the captured program; run in onnxruntime.

onnx-int8 is QDQ: the PT2E-converted program's weight quantization is constant-folded on a copy
first, so weights are stored as int8 initializers (not float weights quantized at run time) with
per-axis scales equal to PT2E's.

onnx-int8-u8 is the same QDQ file re-encoded U8U8 (`to_u8u8`): every int8 tensor q with zero point z
becomes uint8 q+128 with zero point z+128 — the same real values, scales and rounding, so the torch
simulation stays the reference. onnxruntime then fuses it into its u8u8 integer kernels, which on x86
without VNNI have no int16 saturation (its docs: "When and why do I need to try U8U8?", quantization
page of onnxruntime.ai). The session option `session.x64quantprecision=1` would do the same rewrite of
the weights at load time, but only where the deployer sets it, and in onnxruntime 1.32 it fails session
creation on the demo's onnx-int8 file on an (emulated) AVX2 host ("Attempt to replace the existing tensor").
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.exporters.base import (FLOAT_PASSES, FLOAT_TOLERANCE, INT8_PASSES, INT8_TOLERANCE, ExportInfo, Target,
                                     scales_note)
from edgeconv.registry import TARGETS
from edgeconv.results import FloatOps, WeightQuant

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph

WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def _write(program_or_module, args, path: Path) -> None:
    import logging

    import torch

    from edgeconv.exporters.lowering import lowering_errors

    # torch.onnx warns about every torchvision op it cannot register; edgeconv never uses them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    with lowering_errors("onnx"):
        torch.onnx.export(program_or_module, args, str(path), dynamo=True, external_data=False,
                          optimize=True, verbose=False)
    _strip_debug_metadata(path)


def _strip_debug_metadata(path: Path) -> None:
    """torch.onnx stores each node's Python stack trace and FX text (about half the file for a small
    net, and the exporting machine's paths): useful to the exporter's authors, not in a shipped model."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))


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
            if k >= 1 and n.op_type == "Clip" and (src is None or src.op_type == "Constant"):
                continue  # Clip's bounds
            if k == 2 and n.op_type in _BIAS_OPS and src is None:
                continue  # a float bias: the integer kernel takes it as int32 with scale s_in·s_w
            if n.op_type in _FUSED_ACTIVATIONS and src is not None and src.op_type in _BIAS_OPS + ("Add",):
                continue  # Conv → Relu/Clip: one fused integer kernel (QDQ node-unit fusion)
            found.append(f"{n.op_type} {n.name or n.output[0]}")
            break
    return FloatOps(len(found), tuple(found), 0, "ONNX nodes with a float input not from DequantizeLinear "
                    "(Q/DQ and constants excluded)")


class _Onnx(Target):
    suffix = ".onnx"
    runtime = "onnxruntime"

    def load(self, path: Path, threads: int = 1, kernels: str = "reference"):
        from edgeconv.exporters.runtimes import OnnxRunner

        return OnnxRunner(path, threads, kernels)

    def read_weights(self, path: Path) -> list[tuple[WeightQuant, np.ndarray | None]]:
        return read_weights(path)


@TARGETS.register("onnx")
class OnnxFp32(_Onnx):
    name = "onnx"
    passes = FLOAT_PASSES
    tolerance = FLOAT_TOLERANCE
    description = "ONNX fp32 (torch.onnx dynamo), checked in onnxruntime"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        _write(graph.program, graph.example_inputs, path)
        return ExportInfo()


@TARGETS.register("onnx-int8")
class OnnxInt8(_Onnx):
    name = "onnx-int8"
    passes = INT8_PASSES
    quantized = True
    host_kernels = True
    tolerance = INT8_TOLERANCE
    description = "ONNX QDQ int8 (per-channel weights), checked in onnxruntime"
    host_kernel_advice = ("onnxruntime's u8s8 kernels saturate int16 pair sums on x86 without VNNI: deploy "
                          "-t onnx-int8-u8 there (same values, u8u8 kernels)")

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        from torchao.quantization.pt2e.constant_fold import constant_fold
        from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

        gm = graph.module()
        constant_fold(gm, _quant_node_constraint)
        _write(gm, graph.example_inputs, path)
        found = [s for _, s in read_weights(path) if s is not None]
        return ExportInfo(scales_from=scales_note("QDQ ONNX", found, graph, read_activation_scales(path)),
                          float_ops=float_ops(path))


@TARGETS.register("onnx-int8-u8")
class OnnxInt8U8(OnnxInt8):
    name = "onnx-int8-u8"
    description = ("ONNX QDQ int8 re-encoded u8u8: no int16 saturation in onnxruntime's x86 kernels "
                   "without VNNI")
    host_kernel_advice = "u8u8 kernels do not saturate: report this onnxruntime build and CPU (edgeconv.json host)"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        info = super().export(graph, ctx, path)
        weights, activations, zero_points = to_u8u8(path, path, self.name)
        found = [s for _, s in read_weights(path) if s is not None]
        note = (f"re-encoded u8u8: {weights} int8 weight initializers and {activations} int8 activation "
                f"tensors q -> uint8 q+128, {zero_points} zero points z -> z+128; real values and scales unchanged")
        return ExportInfo(notes=info.notes + (note,),
                          scales_from=scales_note("QDQ ONNX (u8u8)", found, graph, read_activation_scales(path)),
                          float_ops=float_ops(path))


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


