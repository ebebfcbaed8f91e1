"""TFLite targets, lowered with litert-torch straight from the captured program (no ONNX → TF
layout hop); run in ai-edge-litert.

tflite-int8 is full integer: litert-torch lowers edgeconv's PT2E-converted program
(`fold_quantize=False`, the form its static Q/DQ lowering accepts) with the same quantizer in
its QuantConfig — which only selects static lowering, it does not recalibrate — so the file's
scales are edgeconv's. Int8 input and output, weights int8 per-channel (CONV_2D axis 0,
DEPTHWISE_CONV_2D axis 3), int32 bias with scale s_in·s_w.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgeconv.exporters.base import (FLOAT_PASSES, INT8_PASSES, ExportInfo, Target, input_names, output_names,
                                     scales_note)
from edgeconv.exporters.tflite.read import float_ops, read_activation_scales, read_weights
from edgeconv.parity import FLOAT_TOLERANCE, INT8_TOLERANCE
from edgeconv.registry import FORMATS, TARGETS

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph

@contextlib.contextmanager
def _quiet_litert() -> Iterator[None]:
    """litert-torch prints a task tree on every conversion; edgeconv shows its own progress."""
    from litert_torch import progress

    was = progress.console.quiet
    progress.console.quiet = True
    try:
        yield
    finally:
        progress.console.quiet = was


def convert(module: Any, args: tuple, path: Path, quantizer: Any = None, target: str = "tflite",
            names: tuple[str, ...] = (), inputs: tuple[str, ...] = ()) -> None:
    import litert_torch
    import torch

    from edgeconv.calib.rewrites import unfold_fold_to_convs
    from edgeconv.exporters.lowering import lowering_errors, unfold_as_gather
    from edgeconv.exporters.tflite.lowering import (drop_expand, expand_after_permute, int8_div_in_float,
                                                    matmuls_transposed_between_reshapes, nearest_as_gather,
                                                    outer_products_as_mul, uniform_biases_unsplat)

    if quantizer is None and isinstance(module, torch.fx.GraphModule) and unfold_fold_to_convs(module):
        # litert-torch writes col2im as a scatter ai-edge-litert refuses (int8: rewritten before quantizing)
        module.recompile()
    unfold_as_gather(module)  # litert-torch's gather for unfold pads a rank-6 tensor (HaloAttn's windows)
    expand_after_permute(module)  # the converter folds a TRANSPOSE after BROADCAST_TO at the wrong shape
    drop_expand(module)  # litert-torch's BROADCAST_TO for expand_as is refused (fp32) or unloadable (int8)
    nearest_as_gather(module)  # litert-torch's RESIZE_NEAREST_NEIGHBOR is half-pixel ("nearest-exact")
    kwargs = {}
    if quantizer is None:  # converter passes that fail on float programs (int8: Q/DQ keeps the ops apart)
        outer_products_as_mul(module)  # mhlo-optimize misplaces a size-1 contracting dim
        matmuls_transposed_between_reshapes(module)  # tfl-optimize types a fused BATCH_MATMUL at rank 4
    else:
        int8_div_in_float(module)  # TFLite's int8 DIV saturates a numerator of -1 step to -128
        uniform_biases_unsplat(module)  # a splat bias is quantized with the first channel's scale throughout
        from litert_torch.quantize.quant_config import QuantConfig

        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    with _quiet_litert(), lowering_errors(target):
        model = litert_torch.convert(module, args, **kwargs)
        model.export(str(path))
    if names or inputs:  # litert-torch names them args_0, …, output_0, …: the model's names instead
        from edgeconv.exporters.tflite.flatbuffer import name_tensors

        name_tensors(path, names, inputs)


class _Tflite(Target):
    format = FORMATS.get("tflite")
    runtime = "ai-edge-litert"
    # Judged in the default engine (XNNPACK + builtin kernels); where the file is off its reference
    # there, the builtin kernels alone give a second opinion (TfliteRunner says why).
    second_kernels = "builtin"
    host_kernel_advice = ("the file computes as its reference in TFLite's builtin kernels; a phone runs XNNPACK's "
                          "arm64 kernels, not this host's: confirm on the device or on arm64-emulated before "
                          "deploying to a CPU like this one")


@TARGETS.register("tflite")
class TfliteFp32(_Tflite):
    name = "tflite"
    passes = FLOAT_PASSES
    tolerance = FLOAT_TOLERANCE
    description = "TFLite fp32 (litert-torch), checked in ai-edge-litert"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        convert(graph.module(), graph.example_inputs, path, target=self.name, names=output_names(graph, ctx),
                inputs=input_names(graph, ctx))
        return ExportInfo()


@TARGETS.register("tflite-int8")
class TfliteInt8(_Tflite):
    name = "tflite-int8"
    passes = INT8_PASSES
    quantized = True
    tolerance = INT8_TOLERANCE
    description = "TFLite full-integer int8 (per-channel weights), checked in ai-edge-litert"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        convert(graph.module(), graph.example_inputs, path, quantizer=graph.quantizer, target=self.name,
                names=output_names(graph, ctx), inputs=input_names(graph, ctx))
        found = [s for _, s in read_weights(path) if s is not None]
        return ExportInfo(scales_from=scales_note("litert-torch TFLite", found, graph, read_activation_scales(path)),
                          float_ops=float_ops(path))
