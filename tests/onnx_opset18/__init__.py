"""A format added the way a contributor would add one: this folder, plus one registration line
(its module name in `edgeconv.registrations.MODULES`; the tests add it there).

`onnx18-int8` writes the same QDQ program as `onnx-int8`, converted down to ONNX opset 18 (the
opset many deployed onnxruntime builds and NPU execution providers still pin), under its own
suffix `.onnx18` so that nothing can mistake it for the standard target's file. It names its
runtime family ("onnx") and its reader module; everything else — per-layer isolation, float-op
counting, host profiling, the cost model — comes from the code that asks `format_for(path)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.exporters.base import ExportInfo, scales_note
from edgeconv.exporters.onnx import OnnxFormat
from edgeconv.exporters.onnx.export import OnnxInt8
from edgeconv.registry import FORMATS, TARGETS

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph

OPSET = 18


class Onnx18Format(OnnxFormat):
    name = "onnx-opset18"
    suffixes = (".onnx18",)


FORMATS.add(Onnx18Format.name, Onnx18Format())


@TARGETS.register("onnx18-int8")
class Onnx18Int8(OnnxInt8):
    name = "onnx18-int8"
    format = FORMATS.get(Onnx18Format.name)
    description = f"ONNX QDQ int8 at opset {OPSET} (a test format)"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        import onnx
        import torch
        from torchao.quantization.pt2e.constant_fold import constant_fold
        from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

        gm = graph.module()
        constant_fold(gm, _quant_node_constraint)
        torch.onnx.export(gm, graph.example_inputs, str(path), dynamo=True, external_data=False,
                          opset_version=OPSET, optimize=True, verbose=False)
        opset = next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
        if opset != OPSET:
            raise AssertionError(f"asked torch.onnx for opset {OPSET}, it wrote {opset}")
        found = [s for _, s in self.format.read_weights(path) if s is not None]
        return ExportInfo(notes=(f"ONNX opset {opset}",),
                          scales_from=scales_note(f"QDQ ONNX opset {OPSET}", found, graph,
                                                  self.format.activation_scales(path)),
                          float_ops=self.format.float_ops(path))
