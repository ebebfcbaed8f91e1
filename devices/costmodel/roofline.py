"""Per-op roofline, plus one fixed per-inference overhead (delegate invocation, I/O copies):

    t_op = max(MACs / θ_c[class], weight_bytes / θ_w + activation_bytes / θ_a) + t_launch

θ_c = η_c · P is the effective multiply-accumulate rate of an op class, θ_w = η_m · BW the rate
weights stream from DRAM. Activations get their own rate θ_a because an NPU keeps most feature
maps in on-chip memory (with one shared memory rate the NPU int8 fit-set median error was
12.4 %, not 7.3 %). Only the products η·P are identifiable from latencies, so the fit estimates θ
directly; η = θ / P for a device whose peak P is published.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from edgeconv.costops import Op, OpClass

# Bytes per element as the runtime moves tensors. perf.yaml "float" runs on the NPU/GPU in fp16.
BYTES_PER_ELEMENT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}


@dataclasses.dataclass(frozen=True)
class Constants:
    """Effective rates for one device × compute unit × precision."""

    macs_per_s: dict[str, float]  # per OpClass value
    bytes_per_s: float  # weights (streamed from DRAM)
    act_bytes_per_s: float  # activations (an NPU keeps many in on-chip memory: a faster path)
    launch_s: float
    fixed_s: float
    bytes_per_element: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Constants":
        return cls(dict(d["macs_per_s"]), float(d["bytes_per_s"]), float(d["act_bytes_per_s"]),
                   float(d["launch_s"]), float(d["fixed_s"]), float(d["bytes_per_element"]))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def op_seconds(op: Op, c: Constants) -> tuple[float, str]:
    """Seconds for one op and which roof bounds it ("compute" or "memory")."""
    work = max(op.macs, 1)
    t_c = work / c.macs_per_s[op.cls.value]
    t_m = c.bytes_per_element * (op.weights / c.bytes_per_s + (op.act_in + op.act_out) / c.act_bytes_per_s)
    return (max(t_c, t_m) + c.launch_s, "compute" if t_c >= t_m else "memory")


def model_seconds(ops: Sequence[Op], c: Constants) -> float:
    return c.fixed_s + sum(op_seconds(o, c)[0] for o in ops)


__all__ = ["BYTES_PER_ELEMENT", "Constants", "OpClass", "model_seconds", "op_seconds"]
