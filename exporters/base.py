"""What a target is: a file format at a precision, with its pass list and parity tolerance.

A target declares as class attributes its format (exporters/<format>/), its ordered pass list, whether it is
quantized and its tolerances; the order of passes lives here, never in registration order.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgeconv.exporters.formats import Format, Runner
from edgeconv.results import FloatOps, WeightQuant

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph
    from edgeconv.parity import Tolerance


# The standard pass chains; a target's own tuple is the order, registration order never is.
# - reparam-merge first: merging parallel branches into one conv must see the BNs still separate
#   per branch (each branch's BN folds into its own kernel before the sum).
# - fold-conv-bn next: every later pass (and the quantizer) should see one conv, not conv + BN —
#   quantizing an unfolded BN would give it its own int8 grid.
# - check-quant before quantize: it judges the folded float weights (per-tensor int8 harm per
#   layer) and warns before calibration spends its time; it never changes the graph.
# - quantize: calibration once; the pipeline's steps run right before it (--max-drop, a QAT
#   program, --quant-config: see edgeconv.pipeline.quantize_steps).
# - cleanup last: the earlier passes and PT2E conversion leave clones, aliases and dead nodes;
#   removing them once at the end keeps each exporter's input minimal.
FLOAT_PASSES = ("reparam-merge", "fold-conv-bn", "cleanup")
INT8_PASSES = ("reparam-merge", "fold-conv-bn", "check-quant", "quantize", "cleanup")

@dataclasses.dataclass(frozen=True)
class ExportInfo:
    notes: tuple[str, ...] = ()
    scales_from: str = ""  # how the artifact was made to carry edgeconv's scales
    float_ops: FloatOps | None = None  # int8 targets: what the file still computes in float, read back

    def __post_init__(self) -> None:
        # The count also goes into the export stage's notes, so it reaches the manifest through
        # every path that records notes.
        if self.float_ops is not None:
            object.__setattr__(self, "notes", self.notes + (float_ops_note(self.float_ops),))


def float_ops_note(f: FloatOps) -> str:
    """One line: how many ops still run in float, and the first few of them."""
    if f.count == 0:
        head = "full integer: 0 float ops"
    else:
        shown = ", ".join(f.ops[:8]) + (f", … (+{f.count - 8})" if f.count > 8 else "")
        head = f"NOT full integer: {f.count} float op(s): {shown}"
    return head + (f"; {f.requantize} int8→int8 requantize op(s)" if f.requantize else "")


class Target:
    name: ClassVar[str]
    format: ClassVar["Format"]  # the file format it writes: runs, reads and checks its files
    passes: ClassVar[tuple[str, ...]]
    runtime: ClassVar[str]
    quantized: ClassVar[bool] = False
    tolerance: ClassVar["Tolerance"]
    description: ClassVar[str] = ""
    # What the float comparison is against: the user's model, or — for targets whose passes change
    # the function on purpose (pruning) — the torch program after those passes. The accuracy drop
    # from the user's model is reported either way.
    parity_reference: ClassVar[str] = "torch-fp32"
    # True where the runtime has fast host kernels that may compute the artifact differently from
    # its reference semantics (ONNX int8: onnxruntime's fused integer kernels; u8s8 saturates on x86
    # without VNNI). Such targets are judged on load(kernels="reference"); "fast" is what deploys.
    host_kernels: ClassVar[bool] = False
    # True where the artifact computes in fp16: it is also judged against the same program run in
    # torch fp16, and its fp32 floors never ask more than fp16 itself gives (verify._fp16_floors).
    half_precision: ClassVar[bool] = False
    host_kernel_advice: ClassVar[str] = ""  # what to deploy instead when the fast kernels deviate
    # The runtime's other kernels that re-judge a file its first engine finds off its reference
    # (the simulation, layer by layer or end to end; never for the fp32 floors alone): one file
    # computed right by one engine and not by the other is that engine's doing, not the file's.
    # Passing there, the verdict is theirs, and the first engine's deviation a named warning.
    second_kernels: ClassVar[str] = ""

    suffix: ClassVar[str]  # what its files are called: its format's first suffix (set below)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "format" in cls.__dict__:
            cls.suffix = cls.format.suffixes[0]

    def export(self, graph: "Graph", ctx: "Context", path: Path) -> ExportInfo:
        """Write the artifact to `path` (a temp name; the pipeline renames it when complete)."""
        raise NotImplementedError

    def load(self, path: Path, threads: int = 1, kernels: str = "reference") -> Runner:
        """The artifact in its runtime. kernels: "reference" (what the file means) or "fast" (the
        host's optimized kernels); formats without a distinct fast path ignore it."""
        return self.format.runner(path, threads, kernels)

    def weights(self, path: Path) -> tuple[WeightQuant, ...]:
        """Read back how each conv/linear weight is stored (dtype, number of scales, axis)."""
        return tuple(w for w, _ in self.format.read_weights(path))


def output_names(graph: "Graph", ctx: "Context") -> tuple[str, ...]:
    """What every format names the outputs (edgeconv.outputs.output_names): the model's declared
    names, else output_0, output_1, … for several; () keeps the converter's name for a single one."""
    from edgeconv.outputs import output_names as names

    count = len(graph.program.graph_signature.user_outputs)
    declared = getattr(getattr(ctx, "model", None), "outputs", ()) or ()  # ctx may be None outside the pipeline
    return names(tuple(declared), count)


def input_names(graph: "Graph", ctx: "Context") -> tuple[str, ...]:
    """What every format names the inputs, in forward's order (edgeconv.inputs.resolve_names): the
    model's declared names, else forward's parameter names for several; () keeps the converter's
    name for a single one."""
    from edgeconv.inputs import resolve_names

    model = getattr(ctx, "model", None)  # ctx may be None outside the pipeline
    if model is None:
        return ()
    return resolve_names(getattr(model, "input_names", ()), model.module, len(graph.example_inputs),
                         tuple(o.name for o in getattr(model, "outputs", ()) or ()))


def scales_matched(weights: list[np.ndarray], activations: list[float], graph: "Graph") -> tuple[int, int]:
    """(weight scale vectors, activation scales) of a file that equal ones edgeconv computed for
    `graph` — read back from the file, not assumed."""
    ours_w = [np.asarray(q.scale) for k, q in graph.qparams.items() if q.axis is not None or _is_weight(k)]
    ours_a = np.asarray([q.scale[0] for k, q in graph.qparams.items() if q.axis is None and not _is_weight(k)])
    from edgeconv.quant.qparams import SCALE_RTOL

    w_ok = sum(1 for s in weights if any(o.shape == s.shape and np.allclose(o, s, rtol=SCALE_RTOL, atol=0)
                                         for o in ours_w))
    a_ok = sum(1 for s in activations if ours_a.size and np.isclose(ours_a, s, rtol=SCALE_RTOL, atol=0).any())
    return w_ok, a_ok


def scales_note(fmt: str, weights: list[np.ndarray], graph: "Graph", activations: list[float] = ()) -> str:
    """Say how many of an artifact's weight scale vectors and activation scales equal edgeconv's."""
    w_ok, a_ok = scales_matched(weights, list(activations), graph)
    return (f"{fmt} lowered from edgeconv's own PT2E-converted program (one calibration shared by every "
            f"int8 target); read back: {w_ok}/{len(weights)} weight scale vectors equal edgeconv's, "
            f"{a_ok}/{len(activations)} activation scales equal edgeconv's")


def _is_weight(key: str) -> bool:
    return "weight" in key
