"""What a target is: a file format at a precision, with its pass list and parity tolerance.

A target declares as class attributes its file suffix, its ordered pass list, whether it is
quantized and its tolerances; the order of passes lives here, never in registration order.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from edgeconv.results import TensorSpec, WeightQuant

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Parity limits. Quantized targets are judged in output quantization steps against the
    torch quantized simulation (same scales), and by top-1 agreement / cosine against fp32."""

    vs_fp32_max_abs: float | None = None  # float targets: absolute error vs torch fp32
    vs_fp32_min_cosine: float = 0.99
    vs_sim_max_steps: float | None = None  # int8 targets: error vs torch quant sim, in output steps
    min_top1_agreement: float = 0.95


# The standard pass chains; a target's own tuple is the order, registration order never is.
FLOAT_PASSES = ("reparam-merge", "fold-conv-bn", "cleanup")
INT8_PASSES = ("reparam-merge", "fold-conv-bn", "check-quant", "quantize", "cleanup")

# Float artifacts must reproduce torch fp32 to float rounding.
FLOAT_TOLERANCE = Tolerance(vs_fp32_max_abs=1e-4, vs_fp32_min_cosine=0.99999, min_top1_agreement=0.99)
# Integer kernels requantize at every layer (rounding, fused activations), so an int8 artifact
# may differ from the torch simulation by a few output steps; against fp32 only the task matters.
INT8_TOLERANCE = Tolerance(vs_fp32_min_cosine=0.95, vs_sim_max_steps=3.0, min_top1_agreement=0.9)


class Runner(Protocol):
    """A loaded artifact in its real runtime: float NCHW in, float (dequantized) out."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    notes: tuple[str, ...] = ()
    scales_from: str = ""  # how the artifact was made to carry edgeconv's scales


class Target:
    name: ClassVar[str]
    suffix: ClassVar[str]
    passes: ClassVar[tuple[str, ...]]
    runtime: ClassVar[str]
    quantized: ClassVar[bool] = False
    tolerance: ClassVar[Tolerance] = Tolerance()
    description: ClassVar[str] = ""
    # What the float comparison is against: the user's model, or — for targets whose passes change
    # the function on purpose (pruning) — the torch program after those passes. The accuracy drop
    # from the user's model is reported either way.
    parity_reference: ClassVar[str] = "torch-fp32"

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        """Write the artifact to `path` (a temp name; the pipeline renames it when complete)."""
        raise NotImplementedError

    def load(self, path: Path, threads: int = 1) -> Runner:
        raise NotImplementedError

    def read_weights(self, path: Path) -> list[tuple[WeightQuant, "np.ndarray | None"]]:
        """Each conv/linear weight as stored in the file, with its scales when quantized."""
        return []

    def weights(self, path: Path) -> tuple[WeightQuant, ...]:
        """Read back how each conv/linear weight is stored (dtype, number of scales, axis)."""
        return tuple(w for w, _ in self.read_weights(path))


def scales_note(fmt: str, weights: list[np.ndarray], graph: "Graph", activations: list[float] = ()) -> str:
    """Say how many of an artifact's weight scale vectors and activation scales equal the ones
    edgeconv computed — read back from the file, not assumed."""
    ours_w = [np.asarray(q.scale) for k, q in graph.qparams.items() if q.axis is not None or _is_weight(k)]
    ours_a = np.asarray([q.scale[0] for k, q in graph.qparams.items() if q.axis is None and not _is_weight(k)])
    w_ok = sum(1 for s in weights if any(o.shape == s.shape and np.allclose(o, s, rtol=1e-6, atol=0) for o in ours_w))
    a_ok = sum(1 for s in activations if ours_a.size and np.isclose(ours_a, s, rtol=1e-6, atol=0).any())
    return (f"{fmt} lowered from edgeconv's own PT2E-converted program (one calibration shared by every "
            f"int8 target); read back: {w_ok}/{len(weights)} weight scale vectors equal edgeconv's, "
            f"{a_ok}/{len(activations)} activation scales equal edgeconv's")


def _is_weight(key: str) -> bool:
    return "weight" in key
