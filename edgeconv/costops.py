"""The cost model's unit of work: one fused op with its MACs and traffic.

Core data: every artifact format lists its file's ops in these terms (`Format.cost_ops`), and the
cost model in edgeconv.devices.costmodel prices them; neither needs the other's code.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Iterable


class OpClass(enum.Enum):
    CONV1X1 = "conv1x1"
    DEPTHWISE = "depthwise"
    CONV = "conv"  # dense or grouped k×k (k > 1)
    FC = "fc"
    POOL = "pool"
    ELEMENTWISE = "elementwise"  # add, mul, standalone activations, norms
    MOVE = "move"  # concat, channel shuffle, reshape: data movement, often free on an NPU


OP_CLASSES: tuple[OpClass, ...] = tuple(OpClass)


@dataclasses.dataclass(frozen=True)
class Op:
    """One fused op. `macs` counts multiply-accumulates (FLOPs = 2·macs); for ops without
    MACs it counts element operations. Element counts are per inference (batch 1)."""

    name: str
    cls: OpClass
    macs: int
    weights: int  # parameter elements read
    act_in: int  # activation elements read (all inputs)
    act_out: int  # activation elements written

    def bytes(self, bytes_per_element: float) -> float:
        return (self.weights + self.act_in + self.act_out) * bytes_per_element

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "class": self.cls.value, "macs": self.macs,
                "weights": self.weights, "act_in": self.act_in, "act_out": self.act_out}


def conv_class(k: tuple[int, int], groups: int, cin: int, cout: int) -> OpClass:
    if groups > 1 and groups == cin and cout % cin == 0:
        return OpClass.DEPTHWISE
    if k == (1, 1):
        return OpClass.CONV1X1
    return OpClass.CONV


def elements(shape: Iterable[int]) -> int:
    """Element count of a shape, unknown (0 or -1) dimensions counted as 1."""
    return int(math.prod(max(int(d), 1) for d in shape))


def precision_of(weight_dtypes: set[str]) -> str:
    """"int8", "fp16" or "fp32": what a file stores its weights as."""
    if weight_dtypes & {"int8", "uint8", "int4"}:
        return "int8"
    if weight_dtypes & {"float16"}:
        return "fp16"
    return "fp32"
