"""Verification: an artifact in its real runtime against the torch program it was lowered from.

The pipeline hands each written artifact here; this module loads it in its format's runtime,
runs the held-out samples, and returns the verdict (`edgeconv.parity` judges the numbers against
the target's tolerance). The torch side — the folded simulation, its outputs, its int8 tensors —
is computed once per pass-chain result and shared by every target that lowers it (`ProgramRuns`).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.context import Progress, one_thread
from edgeconv.errors import ParityFailure, in_stage
from edgeconv.results import StageRecord

if TYPE_CHECKING:
    from edgeconv.calib.data import DataSet
    from edgeconv.config import ExportOptions
    from edgeconv.context import Context
    from edgeconv.exporters.base import Target
    from edgeconv.exporters.formats import Runner
    from edgeconv.exporters.formats import QTensor
    from edgeconv.graph import Graph
    from edgeconv.inputs import Batch
    from edgeconv.parity import Tolerance
    from edgeconv.results import LayerIsolation, ParityReport

# Layer-by-layer isolation reads every int8 tensor of the artifact: a few samples tell a lowering
# error (a layer off on most inputs) from rounding; the end-to-end check uses all of them.
ISOLATION_SAMPLES = 4
# It keeps every int8 activation of each sample it runs, on both sides (a byte a value each): past
# the first, samples are taken while the simulation's int8 values stay within this. A net with
# large attention maps (timm HaloNet-H1 at 256²: 481 M int8 values a sample) is judged on one
# sample. Four of them, kept at four bytes a value with their differences at eight, took onnx-int8
# alone to 5.8 GB (and an allocation failure under an 8 GB limit); the six-target export was
# OOM-killed at 22 GB.
ISOLATION_MAX_VALUES = 256 * 2 ** 20


def isolation_samples(gm: Any) -> int:
    """How many held-out samples per-layer isolation runs for the folded simulation `gm`."""
    from edgeconv.quant.divergence import int8_values_per_sample

    return max(1, min(ISOLATION_SAMPLES, ISOLATION_MAX_VALUES // max(int8_values_per_sample(gm), 1)))


def torch_outputs(module: Any, x: "Batch", progress: Progress, what: str) -> np.ndarray:
    """The first output (see `torch_outputs_all`)."""
    return torch_outputs_all(module, x, progress, what)[0]


def torch_outputs_all(module: Any, x: "Batch", progress: Progress, what: str) -> list[np.ndarray]:
    """Every output, in the order forward returns them, one sample at a time, on one intra-op
    thread (`one_thread`). One at a time: the captured program has a static batch of 1, and a batch
    of 8 through the eager model is no faster here (memory-bound at 224x224) and not bit-identical
    (a batched linear is a GEMM, one sample a GEMV). `x`: every input of the net (edgeconv.inputs)."""
    import torch

    from edgeconv.inputs import count, torch_rows

    outs: list[list[np.ndarray]] = []
    with torch.no_grad(), one_thread(), progress.task(what, total=count(x)) as task:
        for i in range(count(x)):
            y = module(*torch_rows(x, i, i + 1))
            ys = list(y) if isinstance(y, (tuple, list)) else [y]
            outs.append([t.detach().float().numpy() for t in ys])
            task.advance()
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


@dataclasses.dataclass
class _Runs:
    folded: Any = None  # the program with its constants folded (quant.program.folded_simulation)
    outputs: list[np.ndarray] | None = None  # its outputs on the held-out samples, every one
    int8: "list[QTensor] | None" = None  # its int8 tensors on the isolation samples


class ProgramRuns:
    """What the torch side computes once per pass-chain result. The int8 targets share one
    quantized program (PassCache), so its simulation is folded and run once, not per target."""

    def __init__(self, fp32: tuple[np.ndarray, ...] = ()) -> None:
        self._runs: dict[int, tuple["Graph", _Runs]] = {}
        self.fp32 = fp32  # the user's model on the held-out samples, every output (the pipeline's)

    def _of(self, graph: "Graph") -> _Runs:
        hit = self._runs.get(id(graph))
        if hit is None or hit[0] is not graph:  # the graph is held, so its id cannot be reused
            hit = self._runs[id(graph)] = (graph, _Runs())
        return hit[1]

    def folded(self, graph: "Graph") -> Any:
        runs = self._of(graph)
        if runs.folded is None:
            from edgeconv.quant.program import folded_simulation

            runs.folded = folded_simulation(graph)
        return runs.folded

    def outputs(self, graph: "Graph", evalset: "DataSet", progress: Progress, what: str) -> np.ndarray:
        return self.outputs_all(graph, evalset, progress, what)[0]

    def outputs_all(self, graph: "Graph", evalset: "DataSet", progress: Progress, what: str) -> list[np.ndarray]:
        runs = self._of(graph)
        if runs.outputs is None:
            runs.outputs = torch_outputs_all(self.folded(graph), evalset.inputs, progress, what)
        return runs.outputs

    def int8_tensors(self, graph: "Graph", x: "Batch") -> "list[QTensor]":
        runs = self._of(graph)
        if runs.int8 is None:
            from edgeconv.quant.divergence import torch_tensors

            runs.int8 = torch_tensors(graph, x, self.folded(graph))
        return runs.int8


@dataclasses.dataclass(frozen=True)
class Verdict:
    report: "ParityReport"
    record: StageRecord  # the parity stage, for the artifact's history
    runner: "Runner | None"  # None: the runtime could not load the file (the report says unverified)


def verify(target: "Target", path: Path, graph: "Graph", ctx: "Context", evalset: "DataSet",
           ref_fp32: np.ndarray, runs: ProgramRuns) -> Verdict:
    """The artifact at `path`, written by `target` from `graph`, in its runtime on `evalset`."""
    from edgeconv import parity

    t0 = time.perf_counter()
    try:
        with in_stage("load in runtime", target.name, keep=(ParityFailure,)):
            runner = target.load(path)
    except ParityFailure as e:  # the runtime cannot compute this artifact here: unverified, never a pass
        runner, report = None, parity.unverified(getattr(e, "runtime", target.runtime), str(e), target.parity_reference)
    if runner is not None:
        with in_stage("parity", target.name):  # the inner stages name themselves more precisely
            report = _parity(target, runner, path, graph, ctx, evalset, ref_fp32, runs)
        if target.second_kernels and _off_its_reference(report, graph):
            with in_stage("parity: second opinion", target.name):
                runner, report = _second_opinion(target, runner, report, path, graph, ctx, evalset, ref_fp32, runs)
    return Verdict(report, StageRecord(f"parity:{target.name}", False, round(time.perf_counter() - t0, 3),
                                       _notes(report)), runner)


def _off_its_reference(report: "ParityReport", graph: "Graph") -> bool:
    """Whether the verdict failed on the file itself: against the simulation (end to end or a layer
    alone) for an int8 file, against torch fp32 for a float one — not only on the fp32 floors an int8
    model itself misses, which no engine changes."""
    if not report.passed and not graph.quantized:
        return True
    from edgeconv.parity import SIM

    sim = [d for d in report.diffs if d.reference == SIM]
    return any(not d.passed for d in sim) or (report.layers is not None and not report.layers.passed)


def _second_opinion(target: "Target", first: "Runner", report: "ParityReport", path: Path, graph: "Graph",
                    ctx: "Context", evalset: "DataSet", ref_fp32: np.ndarray,
                    runs: ProgramRuns) -> tuple["Runner", "ParityReport"]:
    """The file judged again in the runtime's other kernels (Target.second_kernels). Where it passes
    there, the verdict is that engine's and the first engine's deviation from it a named warning;
    otherwise the first engine's verdict stands."""
    from edgeconv import parity
    from edgeconv.quant.qparams import OUTPUT_KEY

    try:
        other = target.load(path, kernels=target.second_kernels)
    except ParityFailure:
        return first, report
    second = _parity(target, other, path, graph, ctx, evalset, ref_fp32, runs, target.second_kernels)
    if not second.passed:
        return first, report
    with one_thread():
        theirs, ours = first(evalset.batch), other(evalset.batch)
    args = (theirs, ours, first.engine, tolerance(target, ctx.options), graph.qparams.get(OUTPUT_KEY),
            target.host_kernel_advice)
    check = parity.host_kernels(*args)
    if check.deviates and graph.quantized:
        with one_thread():
            x = evalset.take(0, isolation_samples(runs.folded(graph))).batch
            part = _where_engines_part(target.format.int8_tensors(path, x),
                                       target.format.int8_tensors(path, x, target.second_kernels))
        check = parity.host_kernels(*args, where=part)
    return other, dataclasses.replace(second, host_kernels=check)


def _where_engines_part(first: "list[QTensor]", second: "list[QTensor]") -> str:
    """Where two engines' int8 tensors of one file part most: the tensor whose disagreement (in its
    own steps) jumps furthest past every earlier one's — a one-step rounding difference that later
    ops magnify comes before it, the engine that goes wrong is at it."""
    jump, at, run = 0, "", 0
    for a, b in zip(first, second):  # one file: the same tensors in the same order
        if a.name != b.name or a.values.shape != b.values.shape or not a.values.size:
            continue
        d = int(np.abs(a.values.astype(np.int64) - b.values).max())
        if d - run > jump:
            jump, at = d - run, f" (they part most at {a.name}: {d} steps, every tensor before it within {run})"
        run = max(run, d)
    return at


def _notes(report: "ParityReport") -> tuple[str, ...]:
    notes = tuple(f"vs {d.reference} in {report.runtime}: {'ok' if d.passed else 'FAILED ' + d.reason}"
                  + (f" [{'; '.join(d.checked)}]" if d.checked else "") for d in report.diffs)
    if report.host_kernels and report.host_kernels.deviates:
        notes += ("WARNING host kernels: " + report.host_kernels.message,)
    notes += tuple(f"WARNING {d.reference}: {d.warning}" for d in report.diffs if d.warning)
    if report.layers is not None:
        lay = report.layers
        notes += (f"each int8 layer in isolation ({lay.layers} layers, {lay.samples} samples): worst "
                  f"{lay.worst_steps:g} steps at {lay.worst_layer}"
                  + ("" if lay.passed else f" — FAILED (limit {lay.limit:g} step): {'; '.join(lay.over[:5])}"),)
        if lay.unmatched:
            notes += (f"UNVERIFIED in isolation: {lay.unmatched} of {lay.layers + lay.unmatched} int8 tensors "
                      f"(the end-to-end check still covers them): " + "; ".join(lay.excluded[:5])
                      + (f"; … (+{lay.unmatched - 5}, all in the manifest)" if lay.unmatched > 5 else ""),)
        if lay.within:
            notes += (f"judged within larger ops: {len(lay.within)} int8 tensors the file computes inside one op, "
                      "checked at the judged tensors they feed: " + "; ".join(lay.within[:3])
                      + (f"; … (+{len(lay.within) - 3}, all in the manifest)" if len(lay.within) > 3 else ""),)
    return notes


def tolerance(target: "Target", options: "ExportOptions") -> "Tolerance":
    """The target's tolerance with the fp32 floors the user set explicitly (--min-cosine, --min-top1)."""
    tol = target.tolerance
    if options.min_cosine is not None:
        tol = dataclasses.replace(tol, vs_fp32_min_cosine=options.min_cosine)
    if options.min_top1 is not None:
        tol = dataclasses.replace(tol, min_top1_agreement=options.min_top1)
    return tol


def _parity(target: "Target", runner: "Runner", path: Path, graph: "Graph", ctx: "Context", evalset: "DataSet",
            ref_fp32: np.ndarray, runs: ProgramRuns, kernels: str = "reference") -> "ParityReport":
    """The verdict from the artifact's reference kernels; for targets whose host has faster kernels
    that may compute something else (onnxruntime's fused integer kernels), those too, as a warning."""
    from edgeconv import parity
    from edgeconv.quant.qparams import OUTPUT_KEY

    progress = ctx.progress
    tol = tolerance(target, ctx.options)
    source = ref_fp32
    with in_stage("parity: torch reference program", target.name):
        if target.parity_reference == "torch-int8-weights":
            from edgeconv.quant.program import weight_int8_simulation

            ref_fp32 = torch_outputs(weight_int8_simulation(graph), evalset.inputs, progress,
                                     "torch with int8-rounded weights")
        if target.parity_reference == "torch-after-passes":
            ref_fp32 = runs.outputs(graph, evalset, progress, "torch reference after passes")
        ref_sim = runs.outputs(graph, evalset, progress, "torch quantized simulation") if graph.quantized else None
    out_quant = graph.qparams.get(OUTPUT_KEY)
    with progress.task(f"parity {target.name} in {runner.engine}"), one_thread(), \
            in_stage(f"parity: run in {runner.engine}", target.name):
        # a runner without run_all (a format plugin written before several outputs) gives its first
        outs = runner.run_all(evalset.batch) if hasattr(runner, "run_all") else [runner(evalset.batch)]
    out = outs[0]
    layers = None
    if graph.quantized and tol.layer_max_steps is not None:
        with one_thread():  # per-sample torch and runtime work, like the rest of parity
            layers = layers_in_isolation(target, path, graph, evalset, progress, runs, kernels)
    if layers is not None and layers.passed and not layers.unmatched:
        # Every int8 layer verified alone: what the end-to-end error exceeds is rounding flips
        # cascading through the net, so its allowance may follow the simulation's own error. With
        # any layer unverified, the absolute ceiling holds, however weak the calibration.
        tol = dataclasses.replace(tol, vs_sim_max_rel_l2=None, vs_sim_same_quality=parity.INT8_SAME_QUALITY)
    ref_fp16 = None
    if target.half_precision:
        # torch's CPU kernels round each op's output to fp16, as an fp16 runtime does
        ref_fp16 = torch_outputs(_in_dtype(graph.module(), "float16"), evalset.inputs, progress,
                                 "torch reference in fp16")
        tol = _fp16_floors(tol, ref_fp16, ref_fp32, ctx.options)
    with in_stage("parity: compare", target.name):
        report = parity.check(out, runner.engine, evalset.y, tol, ref_fp32, ref_sim, out_quant, target.parity_reference)
    if not report.diffs[0].passed and not graph.quantized and not target.half_precision \
            and target.parity_reference == "torch-fp32":
        # Only a failing float verdict asks how far fp32 itself is from exact: the floors only ever
        # come down to it, so on a passing net the fp64 run would change nothing.
        with in_stage("parity: fp32's own rounding", target.name):
            report, tol = _at_fp32_own_rounding(report, out, graph, ctx, evalset, ref_fp32, tol, runner.engine)
    report = dataclasses.replace(report, layers=layers)
    with in_stage("parity: outputs by kind", target.name):
        report = _by_kind(report, outs, runner, graph, ctx, evalset, ref_fp32, runs, tol)
    if ref_fp16 is not None:
        own = 1 - parity.cosine(ref_fp16, ref_fp32)  # what fp16 itself costs this net
        self_tol = dataclasses.replace(parity.FP16_SELF_TOLERANCE, vs_fp32_min_cosine=min(
            parity.FP16_SELF_TOLERANCE.vs_fp32_min_cosine, 1 - parity.FP16_SELF_SHARE * own))
        fp16 = parity.diff(out, ref_fp16, "torch-fp16", self_tol)
        report = dataclasses.replace(report, diffs=report.diffs + (fp16,))
    if target.parity_reference == "torch-after-passes":
        from edgeconv.config import SPARSE_MAX_DROP

        max_drop = ctx.options.max_drop if ctx.options.max_drop is not None else SPARSE_MAX_DROP
        report = dataclasses.replace(report, diffs=report.diffs + (parity.source_drop(out, source, evalset.y, max_drop),))
    if target.host_kernels:
        with in_stage("parity: fast host kernels", target.name):
            fast = target.load(path, kernels="fast")
            with progress.task(f"host kernels {target.name} in {fast.engine}"), one_thread():
                fast_out = fast(evalset.batch)
        check = parity.host_kernels(fast_out, out, fast.engine, tol, out_quant, target.host_kernel_advice)
        report = dataclasses.replace(report, host_kernels=check)
    if graph.quantized:
        report = _full_integer(report, target, path, ctx.options)
    return _input_names(report, runner, graph, ctx)


def _input_names(report: "ParityReport", runner: "Runner", graph: "Graph", ctx: "Context") -> "ParityReport":
    """A net with named inputs (several, or declared): the file must name them so, in forward's
    order — the runners pair the data's arrays with the file's inputs in that order, by name."""
    from edgeconv.exporters.base import input_names
    from edgeconv.results import OutputDiff

    want = input_names(graph, ctx)
    if not want:
        return report
    got = tuple(s.name for s in runner.inputs)
    ok = got == want
    nan = float("nan")
    diff = OutputDiff("input-names", nan, nan, None, nan, None, ok,
                      "" if ok else f"the file's inputs are {', '.join(got)}, the model's {', '.join(want)}",
                      checked=(f"inputs {', '.join(want)} in this order",))
    return dataclasses.replace(report, diffs=report.diffs + (diff,))


def _at_fp32_own_rounding(report: "ParityReport", out: np.ndarray, graph: "Graph", ctx: "Context",
                          evalset: "DataSet", ref_fp32: np.ndarray, tol: "Tolerance",
                          engine: str) -> tuple["ParityReport", "Tolerance"]:
    """A float artifact judged again with the fp32 floors at what fp32 rounding itself costs this net
    (parity.fp32_own_floors), said in the fp32 diff's warning; unchanged where that is inside the
    floors or the program does not run in fp64 (a dtype fixed inside it)."""
    from edgeconv import parity

    try:
        ref_fp64 = torch_outputs(_in_dtype(graph.module(), "float64"), evalset.inputs, ctx.progress,
                                 "torch reference in fp64")
    except Exception:  # noqa: BLE001 — a program that pins fp32 somewhere: no yardstick, the verdict stands
        return report, tol
    lowered, why = parity.fp32_own_floors(tol, ref_fp32, ref_fp64, keep_cosine=ctx.options.min_cosine is not None,
                                          keep_top1=ctx.options.min_top1 is not None)
    if not why:
        return report, tol
    again = parity.check(out, engine, evalset.y, lowered, ref_fp32, None, None, "torch-fp32") \
        if lowered is not tol else report
    first = dataclasses.replace(again.diffs[0], warning=why)
    return dataclasses.replace(again, diffs=(first,) + again.diffs[1:], layers=report.layers), lowered


def _in_dtype(module: Any, dtype: str) -> Any:
    """The program with its parameters and input in `dtype` (a copy: its own stay fp32)."""
    import copy

    import torch

    kind = getattr(torch, dtype)
    moved = copy.deepcopy(module).to(kind)
    return lambda *xs: moved(*(x.to(kind) for x in xs))


def _fp16_floors(tol: "Tolerance", ref_fp16: np.ndarray, ref_fp32: np.ndarray,
                 options: "ExportOptions") -> "Tolerance":
    """An fp16 artifact's fp32 floors, lowered to what the model computed in fp16 gives (less
    FP16_FLOOR_SLACK) where that is below them: a deep net can lose more to fp16 than the default
    floor allows, and that is the model's, not the artifact's (the torch-fp16 diff judges the
    artifact). Floors the user set explicitly stay as set."""
    from edgeconv import parity

    if options.min_cosine is None and tol.vs_fp32_min_cosine is not None:
        own = parity.cosine(ref_fp16, ref_fp32) - parity.FP16_FLOOR_SLACK
        tol = dataclasses.replace(tol, vs_fp32_min_cosine=min(tol.vs_fp32_min_cosine, own))
    t16, t32 = parity.top1(ref_fp16), parity.top1(ref_fp32)
    if options.min_top1 is None and tol.min_top1_agreement is not None and t16 is not None:
        own = float((t16 == t32).mean()) - 0.02
        tol = dataclasses.replace(tol, min_top1_agreement=min(tol.min_top1_agreement, own))
    return tol


def _by_kind(report: "ParityReport", outs: list[np.ndarray], runner: "Runner", graph: "Graph", ctx: "Context",
             evalset: "DataSet", ref_fp32: np.ndarray, runs: ProgramRuns, tol: "Tolerance") -> "ParityReport":
    """Every output judged by its kind's task metric (edgeconv.outputs), and the outputs after the
    first by the numeric criteria too (the first one's are the report's own diffs)."""
    from edgeconv import parity

    refs = list(runs.fp32) if len(runs.fp32) == len(outs) else [ref_fp32]
    if len(refs) != len(outs):  # the artifact has outputs the torch reference lacks: say so, never pass
        return dataclasses.replace(report, diffs=report.diffs + (parity.unverified(
            runner.engine, f"the artifact has {len(outs)} outputs, the model {len(refs)}").diffs[0],))
    if refs[0] is not ref_fp32:  # a target judged against another reference (after passes, int8 weights)
        refs[0] = ref_fp32
    sims = (runs.outputs_all(graph, evalset, ctx.progress, "torch quantized simulation")
            if graph.quantized else None)
    precision = "int8" if graph.quantized else ("fp16" if tol.vs_fp32_max_rel is None else "float")
    names = [o.name for o in runner.outputs] if len(runner.outputs) == len(outs) else [f"output_{i}" for i in range(len(outs))]
    from edgeconv.quant.qparams import output_key

    quants = [graph.qparams.get(output_key(i)) for i in range(len(outs))]
    diffs, checks = parity.by_kind(outs, refs, sims, names, tuple(getattr(ctx.model, "outputs", ()) or ()),
                                   precision, tol, report.diffs[0].reference if report.diffs else "torch-fp32", quants)
    return dataclasses.replace(report, diffs=report.diffs + diffs, outputs=checks)


def _full_integer(report: "ParityReport", target: "Target", path: Path, options: "ExportOptions") -> "ParityReport":
    """`--float-ops error`: an int8 artifact with any float op fails, each op named (read from the file)."""
    from edgeconv.config import FloatOpsPolicy
    from edgeconv.results import OutputDiff

    if options.float_ops is not FloatOpsPolicy.ERROR:
        return report
    found = target.format.float_ops(path)
    nan = float("nan")
    reason = "" if not found.count else (f"--float-ops error: {found.count} float op(s): " + "; ".join(found.ops[:20])
                                         + (f"; … (+{found.count - 20})" if found.count > 20 else ""))
    diff = OutputDiff("full-integer", nan, nan, None, nan, None, not found.count, reason,
                      checked=(f"no float op ({found.how})",))
    return dataclasses.replace(report, diffs=report.diffs + (diff,))


def layers_in_isolation(target: "Target", path: Path, graph: "Graph", evalset: "DataSet", progress: Progress,
                        runs: ProgramRuns, kernels: str = "reference") -> "LayerIsolation":
    """Each int8 layer of the artifact fed its own int8 inputs. A format that cannot read its int8
    tensors, or any other reason the check cannot run, is a failed check said in one line — never
    a silent pass."""
    from edgeconv import parity
    from edgeconv.quant.divergence import divergence
    from edgeconv.results import LayerIsolation

    from edgeconv.inputs import count

    # every input: the int8 program and the file are fed all
    x = evalset.take(0, isolation_samples(runs.folded(graph))).batch
    n = count(x)
    with progress.task(f"each int8 layer of {target.name} in isolation"):
        try:
            rep = divergence(graph, path, x, isolate=True, ours=runs.int8_tensors(graph, x), gm=runs.folded(graph),
                             theirs=target.format.int8_tensors(path, x, kernels))
        except Exception as e:
            why = f"the per-layer check could not run: {type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
            return LayerIsolation(n, 0, 0, target.tolerance.layer_max_steps or 0.0, "", float("nan"), (why,), False)
    return parity.layers_in_isolation(rep.isolated or (), rep.excluded, n, target.tolerance, len(rep.covered),
                                      rep.rescaled, rep.within)
