"""ONNX targets, lowered with torch.onnx (dynamo) from the captured program; run in onnxruntime.

onnx-int8 is QDQ: the PT2E-converted program's weight quantization is constant-folded on a copy
first, so weights are stored as int8 initializers (not float weights quantized at run time) with
per-axis scales equal to PT2E's.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeconv.exporters.base import (FLOAT_PASSES, FLOAT_TOLERANCE, INT8_PASSES, INT8_TOLERANCE, ExportInfo, Target,
                                     scales_note)
from edgeconv.registry import TARGETS
from edgeconv.results import WeightQuant

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


class _Onnx(Target):
    suffix = ".onnx"
    runtime = "onnxruntime"

    def load(self, path: Path, threads: int = 1):
        from edgeconv.exporters.runtimes import OnnxRunner

        return OnnxRunner(path, threads)

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
    tolerance = INT8_TOLERANCE
    description = "ONNX QDQ int8 (per-channel weights), checked in onnxruntime"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        from torchao.quantization.pt2e.constant_fold import constant_fold
        from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

        gm = graph.module()
        constant_fold(gm, _quant_node_constraint)
        _write(gm, graph.example_inputs, path)
        found = [s for _, s in read_weights(path) if s is not None]
        return ExportInfo(scales_from=scales_note("QDQ ONNX", found, graph, read_activation_scales(path)))
