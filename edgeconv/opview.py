"""A neutral view of a deployed file's operators: what delegate support tables test.

One `OpView` per operator in execution order, with its input and output tensors (dtype, shape,
whether the tensor is a constant, per-tensor or per-channel quantization, the values of small
constants such as axes and paddings) and its options under snake_case names. Format readers
(`devices/delegates/tflite_ops.py`, `onnx_ops.py`) produce it; the rule engine consumes it. It lives
in the core so that a reader can move beside its exporter without importing `devices`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from edgeconv.results import Record

SMALL_CONST = 16  # constants up to this many elements keep their values (axes, pads, perms, shapes)


@dataclasses.dataclass(frozen=True)
class TensorView(Record):
    index: int
    name: str
    dtype: str  # float32, float16, int8, uint8, int16, int32, int64, bool, ...
    shape: tuple[int, ...]
    const: bool  # stored in the file (weights, axes, shapes), not computed
    scale: tuple[float, ...] = ()  # one per tensor, or one per channel along quant_axis
    zero_point: tuple[int, ...] = ()
    quant_axis: int = 0
    values: tuple[float, ...] | None = None  # a small constant's values, flattened
    producer: str | None = None  # op type that computes it; None for graph inputs and constants
    consumers: tuple[str, ...] = ()  # op types that read it

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def quantized(self) -> bool:
        return bool(self.scale)


@dataclasses.dataclass(frozen=True)
class OpView(Record):
    index: int  # position in execution order
    op: str  # TFLite builtin name (CONV_2D) or ONNX op type (Conv; other domains as domain:Op)
    inputs: tuple[TensorView | None, ...]  # None: an optional input left out
    outputs: tuple[TensorView, ...]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = 1  # TFLite operator-code version; ONNX opset of the op's domain
    name: str = ""  # a readable tail of the first output's name

    def label(self) -> str:
        return f"{self.op} #{self.index}" + (f" ({self.name})" if self.name else "")

    @property
    def activations(self) -> tuple[TensorView, ...]:
        """Computed tensors the op touches: non-constant inputs and every output."""
        return tuple(t for t in self.inputs if t is not None and not t.const) + self.outputs
