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
from typing import TYPE_CHECKING

from edgeconv.exporters.base import (FLOAT_PASSES, INT8_PASSES, ExportInfo, Target, input_names, output_names,
                                     scales_note)
from edgeconv.exporters.onnx.read import float_ops, read_activation_scales, read_weights
from edgeconv.exporters.onnx.u8u8 import to_u8u8
from edgeconv.parity import FLOAT_TOLERANCE, INT8_TOLERANCE
from edgeconv.registry import FORMATS, TARGETS

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph


def _write(program_or_module, args, path: Path, names: tuple[str, ...] = (), inputs: tuple[str, ...] = ()) -> None:
    import logging

    import torch

    from edgeconv.exporters.lowering import lowering_errors

    # torch.onnx warns about every torchvision op it cannot register; edgeconv never uses them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    with lowering_errors("onnx"):
        torch.onnx.export(program_or_module, args, str(path), dynamo=True, external_data=False,
                          optimize=True, verbose=False, output_names=list(names) or None,
                          input_names=list(inputs) or None)
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


class _Onnx(Target):
    format = FORMATS.get("onnx")
    runtime = "onnxruntime"


@TARGETS.register("onnx")
class OnnxFp32(_Onnx):
    name = "onnx"
    passes = FLOAT_PASSES
    tolerance = FLOAT_TOLERANCE
    description = "ONNX fp32 (torch.onnx dynamo), checked in onnxruntime"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        from edgeconv.calib.rewrites import sdpa_to_primitives

        # Fused attention as MatMul/Softmax, which torch.onnx writes anyway (before opset 23): its own
        # translation takes 4-D query/key/value only (timm NesT, Hiera attend on 5-D blocks), and its
        # decomposition of the op gives strides that break a later view (timm MaxViT).
        gm, program = graph.module(), graph.program
        if sdpa_to_primitives(gm):
            gm.recompile()
            program = gm
        _write(program, graph.example_inputs, path, output_names(graph, ctx), input_names(graph, ctx))
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

        from edgeconv.exporters.lowering import unfold_as_gather
        from edgeconv.exporters.onnx.lowering import global_pool_as_mean, index_as_gather, linear_on_rows, rsqrt_as_pow

        gm = graph.module()
        constant_fold(gm, _quant_node_constraint)
        # torch.onnx writes Tensor.unfold as Gather then Transpose between one DequantizeLinear and one
        # QuantizeLinear: the Transpose read the Gather's float output (HaloNet-H1: 38 float Transposes,
        # two per HaloAttn). As one gather per unfold with a Q/DQ pair after each relayout, every op is a unit.
        unfold_as_gather(gm)
        linear_on_rows(gm)  # N-D linear: Gemm on rows, fed by DequantizeLinear (not MatMul + float Add)
        rsqrt_as_pow(gm)  # one Pow, not Reciprocal(Sqrt(x)) with a float tensor between
        global_pool_as_mean(gm)  # one ReduceMean, not ReduceMean + Reshape + Gather on a permuted map
        index_as_gather(gm)  # one Gather, not Transpose + GatherND + Transpose
        _write(gm, graph.example_inputs, path, output_names(graph, ctx), input_names(graph, ctx))
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
