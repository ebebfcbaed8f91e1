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

import numpy as np

from edgeconv.exporters.base import (FLOAT_PASSES, FLOAT_TOLERANCE, INT8_PASSES, INT8_TOLERANCE, ExportInfo, Target,
                                     scales_note)
from edgeconv.registry import TARGETS
from edgeconv.results import FloatOps, WeightQuant

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph

WEIGHT_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0}


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


def convert(module: Any, args: tuple, path: Path, quantizer: Any = None, target: str = "tflite") -> None:
    import litert_torch

    from edgeconv.exporters.lowering import drop_expand, int8_div_in_float, lowering_errors, nearest_as_gather

    drop_expand(module)  # litert-torch's BROADCAST_TO for expand_as is refused (fp32) or unloadable (int8)
    nearest_as_gather(module)  # litert-torch's RESIZE_NEAREST_NEIGHBOR is half-pixel ("nearest-exact")
    kwargs = {}
    if quantizer is not None:
        int8_div_in_float(module)  # TFLite's int8 DIV saturates a numerator of -1 step to -128
        from litert_torch.quantize.quant_config import QuantConfig

        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    with _quiet_litert(), lowering_errors(target):
        model = litert_torch.convert(module, args, **kwargs)
        model.export(str(path))


def read_weights(path: Path) -> list[tuple[WeightQuant, np.ndarray | None]]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
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
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
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
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
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


class _Tflite(Target):
    suffix = ".tflite"
    runtime = "ai-edge-litert"

    def load(self, path: Path, threads: int = 1, kernels: str = "reference"):
        from edgeconv.errors import ParityFailure
        from edgeconv.exporters.runtimes import TfliteRunner

        try:
            return TfliteRunner(path, threads)
        except (RuntimeError, ValueError) as e:
            # The converter wrote a file the runtime cannot prepare (e.g. a BROADCAST_TO whose
            # shapes it rejects): a failed artifact, said in one line, never a traceback.
            line = " ".join(str(e).split())[:300]
            err = ParityFailure(f"{self.name}: ai-edge-litert cannot load the converted file: {line}")
            err.runtime = TfliteRunner.engine  # type: ignore[attr-defined]
            raise err from None

    def read_weights(self, path: Path) -> list[tuple[WeightQuant, np.ndarray | None]]:
        return read_weights(path)


@TARGETS.register("tflite")
class TfliteFp32(_Tflite):
    name = "tflite"
    passes = FLOAT_PASSES
    tolerance = FLOAT_TOLERANCE
    description = "TFLite fp32 (litert-torch), checked in ai-edge-litert"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        convert(graph.module(), graph.example_inputs, path, target=self.name)
        return ExportInfo()


@TARGETS.register("tflite-int8")
class TfliteInt8(_Tflite):
    name = "tflite-int8"
    passes = INT8_PASSES
    quantized = True
    tolerance = INT8_TOLERANCE
    description = "TFLite full-integer int8 (per-channel weights), checked in ai-edge-litert"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        convert(graph.module(), graph.example_inputs, path, quantizer=graph.quantizer, target=self.name)
        found = [s for _, s in read_weights(path) if s is not None]
        return ExportInfo(scales_from=scales_note("litert-torch TFLite", found, graph, read_activation_scales(path)),
                          float_ops=float_ops(path))
