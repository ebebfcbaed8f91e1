"""The export flow: model → capture → passes (in each target's order, shared prefixes run once)
→ exporters → parity → edgeconv.json.

Artifacts are written into a private temp folder inside the output folder and moved into place
only when every target has exported, so a failed run leaves no half-written file behind.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv import __version__
from edgeconv.config import ExportOptions
from edgeconv.context import Context, Progress
from edgeconv.errors import StageFailure, UserError, in_stage
from edgeconv.host import host_info
from edgeconv.passes import reads
from edgeconv.passes.manager import PassCache, Step, run_passes
from edgeconv.prepare.prune import prune_stage
from edgeconv.registry import TARGETS
from edgeconv.results import Artifact, Manifest, StageRecord, atomic_write
from edgeconv.verify import ProgramRuns, torch_outputs_all, verify

if TYPE_CHECKING:
    from edgeconv.config import QuantConfig
    from edgeconv.quant.sensitivity import AnalysisResult, SensitivityReport
    from edgeconv.results import PruneReport
    from edgeconv.calib.data import DataSet
    from edgeconv.exporters.base import Target
    from edgeconv.quant.fallback import FallbackResult
    from edgeconv.graph import Graph
    from edgeconv.models import ModelSpec

MANIFEST = "edgeconv.json"
ANALYSIS = "analyze.json"
TOOLS = ("torch", "torchao", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "onnxscript",
         "numpy", "coremltools", "tensorflow-cpu")


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def resolve_targets(names: tuple[str, ...]) -> list["Target"]:
    from edgeconv import registrations

    registrations.load()
    if not names:
        raise UserError("no --target given; choose from: " + ", ".join(TARGETS.names()))
    targets = [TARGETS.get(n)() for n in dict.fromkeys(names)]
    sparse = [t.name for t in targets if "sparsify" in t.passes]
    int8 = [t.name for t in targets if t.quantized]
    if sparse and int8:
        raise UserError(f"{', '.join(sparse)} cannot be combined with int8 ({', '.join(int8)}): XNNPACK's sparse "
                        "path is float-only (any int8 tensor disables it), so there is no sparse int8 artifact; "
                        "export the sparse and the int8 targets in separate runs")
    return targets


def prepare_out_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".edgeconv-probe-")
        probe.close()
    except OSError as e:
        raise UserError(f"cannot write to output folder {path}: {e.strerror or e}; choose another with -o") from None
    return path


@reads("max_drop", "quant_config", "evaluator")
def before_quantize(graph: "Graph", ctx: Context, qat: "Graph | None" = None) -> tuple["Graph", tuple[str, ...]]:
    """The pipeline's own work right before the `quantize` pass: a QAT-trained program stands in
    for calibration; otherwise `--quant-config` or `--max-drop` chooses the layers quantize keeps in float."""
    if qat is not None and not graph.quantized:
        return dataclasses.replace(qat, history=graph.history), qat.history[-1].notes
    config = ctx.options.quant_config
    if config is not None and not graph.quantized:
        graph = dataclasses.replace(graph, float_op_types=config.float_op_types())
        if config.chooses_layers:
            return _replay_config(graph, config)
    return _choose_float_layers(graph, ctx)


def quantize_steps(qat: "Graph | None") -> dict[str, Step]:
    """The steps the pass manager runs before a pass, by that pass's name."""
    return {"quantize": functools.partial(before_quantize, qat=qat)}


def _replay_config(graph: "Graph", config: "QuantConfig") -> tuple["Graph", tuple[str, ...]]:
    """--quant-config: the float layers a config names (e.g. an earlier --max-drop's choice)."""
    from edgeconv.quant.fallback import float_nodes_for

    nodes = float_nodes_for(config, graph)
    return dataclasses.replace(graph, float_nodes=nodes), (
        f"--quant-config: kept in float: {', '.join(nodes) or 'none'}",)


def _choose_float_layers(graph: "Graph", ctx: "Context") -> tuple["Graph", tuple[str, ...]]:
    """--max-drop: rank layers by int8 sensitivity and keep the fewest most sensitive in float.
    Chosen on the calibration samples, so the held-out parity stays an independent check."""
    # Nothing to choose when already chosen or quantized (export() refuses --max-drop with QAT).
    if ctx.options.max_drop is None or graph.float_nodes or graph.quantized:
        return graph, ()
    inner = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, max_drop=None))
    with ctx.progress.task("choosing layers to keep in float (--max-drop)"):
        graph, fb, _ = apply_max_drop(graph, inner, ctx.calib, ctx.options.max_drop, ctx.options.evaluator or None)
    kept = ", ".join(m or n for n, m in zip(fb.float_nodes, fb.float_modules)) or "none needed"
    if fb.float_readers:
        kept += f" (and, reading their float outputs, {', '.join(fb.float_readers)})"
    return graph, (f"--max-drop {fb.max_drop:g} ({fb.metric}, on the calibration samples): float "
                   f"{fb.float_score:.4g}, all int8 {fb.int8_score:.4g}, final {fb.final_score:.4g}; kept in float: {kept}",)


def apply_max_drop(graph: "Graph", ctx: Any, data: "DataSet", max_drop: float,
                   evaluator: str | None = None) -> tuple["Graph", FallbackResult, "SensitivityReport"]:
    """For `export --max-drop`: quantize a copy of `graph` (the graph just before the quantize pass),
    rank its layers, choose the float ones; returns `graph` with `float_nodes` set (unquantized: the
    pipeline's quantize pass then runs with `keep_float`), the choice and the ranking."""
    from edgeconv.quant.sensitivity import analyze
    from edgeconv.quant.fallback import choose_float_nodes, with_float_nodes

    if graph.quantized:
        raise ValueError("apply_max_drop wants the graph before the quantize pass")
    quantized = run_passes(graph, ctx, ("quantize",))
    report = analyze(quantized, data.x, getattr(ctx.model, "name", "model"))
    result = choose_float_nodes(quantized, data, report, max_drop, evaluator)
    return with_float_nodes(graph, result), result, report


def split_data(spec: "ModelSpec", options: ExportOptions, need_calib: bool) -> tuple["DataSet | None", "DataSet"]:
    """Calibration takes the first samples, evaluation the ones after: never the same inputs."""
    from edgeconv.calib.sources import load_data
    from edgeconv.inputs import resolve_names

    names = resolve_names(spec.input_names, spec.module, len(spec.example_inputs), tuple(o.name for o in spec.outputs))
    data = load_data(options.calib, spec.input_shape, model_mean=spec.mean, model_std=spec.std,
                     count=options.quant.samples + options.eval_samples, seed=options.seed,
                     bundled=spec.data, more_shapes=spec.more_shapes, names=names)
    # All the calibration samples asked for when the data holds them and the held-out ones too;
    # with less data, at most half calibrate, so the parity check keeps inputs it never saw.
    enough = len(data) >= options.quant.samples + options.eval_samples
    n_cal = (options.quant.samples if enough else min(options.quant.samples, len(data) // 2)) if need_calib else 0
    if need_calib and n_cal == 0:
        raise UserError(f"calibration data {data.source} has {len(data)} sample(s); give at least 2 "
                        "(half calibrate, half check parity)")
    calib = data.take(0, n_cal) if need_calib else None
    return calib, data.take(n_cal, n_cal + options.eval_samples)


@reads("seed")
def prepare_eager(spec: "ModelSpec", calib_x: "np.ndarray | None" = None, seed: int = 0) -> tuple["ModelSpec", StageRecord]:
    """The one eager step before capture: eval mode and the blocks' own reparameterization
    methods (fuse / reparameterize / switch_to_deploy / merge_dilated_branches), on a copy,
    checked on seeded random inputs and on calibration inputs when there are some."""
    from edgeconv.prepare.reparam.protocol import reparameterize_model

    t0 = time.perf_counter()
    module, report = reparameterize_model(spec.module, spec.example_inputs, calib_inputs=calib_x, seed=seed)
    notes = report.calls or ("no block with a reparameterization method",)
    if report.calls:
        notes += (report.summary(),)
    return dataclasses.replace(spec, module=module), StageRecord("prepare", report.changed, round(time.perf_counter() - t0, 3), notes)


@reads("qat.epochs", "qat.train_data", "qat.lr", "quant.weights", "seed")
def qat_stage(spec: "ModelSpec", options: ExportOptions, progress: Progress) -> "Graph":
    """Quantization-aware training in place of calibration, part of the prepare stage: it trains
    the eager model (BN in Tune-mode form under the fake-quant, which a captured, already folded
    program cannot give), then captures and converts it. The int8 chain takes the result at
    `quantize` (see `quantize_steps`)."""
    from edgeconv.config import Granularity
    from edgeconv.quant import qat

    if options.qat.train_data:
        data = qat.load_train_data(options.qat.train_data, spec)
    elif spec.train_data is not None:
        data = spec.train_data()
    else:
        raise UserError(f"--qat-epochs needs training data: {spec.name} bundles none; pass --train-data "
                        "package.module:function returning a labelled DataSet or (x, y) arrays")
    per_channel = options.quant.weights is Granularity.PER_CHANNEL
    with progress.task(f"QAT, {options.qat.epochs} epoch(s) on {len(data)} samples"):
        trained = qat.train_qat(spec, data, options.qat.epochs, per_channel=per_channel, lr=options.qat.lr,
                                 seed=options.seed)
    notes = (f"QAT instead of calibration: weights int8 {options.quant.weights.value}, scales learned",) + tuple(
        n for s in trained.history for n in s.notes)
    return trained.record(StageRecord("qat", True, 0.0, notes))


def capture_prepared(spec: "ModelSpec", progress: Progress, calib_x: "np.ndarray | None" = None,
                     seed: int = 0) -> tuple["ModelSpec", "Graph"]:
    """prepare() then torch.export capture, with both stage records on the graph."""
    from edgeconv.graph import capture

    with in_stage("prepare"):
        prepared, prep_rec = prepare_eager(spec, calib_x, seed)
    t0 = time.perf_counter()
    with progress.task("capturing with torch.export"), in_stage("capture (torch.export)"):
        root = capture(prepared.module, prepared.example_inputs)
    return prepared, root.record(prep_rec).record(StageRecord(
        "capture", True, round(time.perf_counter() - t0, 3), (f"torch.export, input {list(spec.input_shape)}",)))


def quantized_graph(spec: "ModelSpec", options: ExportOptions, progress: Progress | None = None,
                    upto: str = "quantize") -> tuple["Graph", Context, "DataSet"]:
    """The int8 program every int8 target lowers (the standard chain up to `upto`), its context and
    the held-out evaluation data — for analysis tools that work on the quantized program."""
    from edgeconv import registrations
    from edgeconv.exporters.base import INT8_PASSES

    registrations.load()
    progress = progress or Progress(False)
    calib, evalset = split_data(spec, options, need_calib=True)
    prepared, root = capture_prepared(spec, progress, calib.x if calib is not None else None, options.seed)
    ctx = Context(options=options, model=prepared, calib=calib, progress=progress)
    chain = INT8_PASSES[:INT8_PASSES.index(upto) + 1]
    return run_passes(root, ctx, chain, quantize_steps(None)), ctx, evalset


@dataclasses.dataclass(frozen=True)
class Programs:
    """Everything the targets' programs come from."""

    ctx: Context  # its options are the run's, after --sparsity a,b,c chose a level
    cache: PassCache  # the pass chains, each prefix run once from the captured root
    evalset: "DataSet"  # held-out samples (never calibration)
    ref_fp32: np.ndarray  # torch fp32 outputs on them (the first output)
    pruning: "PruneReport | None" = None
    refs_fp32: tuple[np.ndarray, ...] = ()  # every output, in the model's order


def programs(spec: "ModelSpec", options: ExportOptions, targets: list["Target"], progress: Progress) -> Programs:
    """As export builds them: the data split, prepare and capture, pruning while fine-tuning and QAT
    when asked, the fp32 reference on the held-out samples, and the pass-chain cache. Deterministic
    for the same model, options and data, so `edgeconv check` rebuilds what export built."""
    calib, evalset = split_data(spec, options, any(t.quantized for t in targets))
    # float-only runs have no calibration split: check the reparameterization on the held-out inputs
    real = calib if calib is not None else evalset
    prepared, root = capture_prepared(spec, progress, real.x, options.seed)
    with in_stage("prune", keep=(UserError,)):  # --prune-epochs
        prepared, root, options, pruning = prune_stage(prepared, root, options, evalset, progress)
    ctx = Context(options=options, model=prepared, calib=calib, progress=progress)
    with in_stage("qat", keep=(UserError,)):
        qat = qat_stage(prepared, options, progress) if options.qat.epochs else None
    with in_stage("torch fp32 reference"):
        refs = torch_outputs_all(spec.module, evalset.inputs, progress, "torch fp32 reference")
    return Programs(ctx, PassCache(root, ctx, quantize_steps(qat)), evalset, refs[0], pruning, tuple(refs))


def export(spec: "ModelSpec", options: ExportOptions, progress: Progress | None = None) -> Manifest:
    progress = progress or Progress(False)
    targets = resolve_targets(options.targets)
    if not any(t.quantized for t in targets):
        pruned = any(t.parity_reference == "torch-after-passes" for t in targets)  # --max-drop bounds pruning too
        for flag, asked in (("--qat-epochs", options.qat.epochs),
                            ("--max-drop", options.max_drop is not None and not pruned),
                            ("--analyze", options.analyze)):
            if asked:
                raise UserError(f"{flag} works on the int8 program, but no int8 target was asked for; "
                                "add e.g. -t tflite-int8")
    if len(spec.example_inputs) > 1:
        _refuse_single_input_tools(spec, options)
    if options.qat.epochs and options.max_drop is not None:
        raise UserError("--max-drop chooses float layers for post-training calibration; it cannot be "
                        "combined with --qat-epochs (QAT learns the scales instead) — drop one of them")
    if options.quant_config is not None and options.quant_config.chooses_layers \
            and (options.max_drop is not None or options.qat.epochs):
        raise UserError("--quant-config already says which layers are float; drop "
                        + ("--max-drop" if options.max_drop is not None else "--qat-epochs"))
    out_dir = prepare_out_dir(options.out_path)
    try:
        built = programs(spec, options, targets, progress)
    except StageFailure as e:  # nothing exported: the manifest says so for every target
        e.manifest = _manifest(spec, options, (), tuple(_failed(t, e) for t in targets), {})
        atomic_write(out_dir / MANIFEST, e.manifest.to_json())
        raise
    ctx, cache, evalset, ref_fp32 = built.ctx, built.cache, built.evalset, built.ref_fp32
    options, calib, root = ctx.options, ctx.calib, cache.get(())

    work = Path(tempfile.mkdtemp(prefix=".edgeconv-tmp-", dir=out_dir))
    runs = ProgramRuns(built.refs_fp32)  # torch outputs (and int8 tensors) per pass-chain result, shared by its targets
    try:
        artifacts = [_one_or_failed(t, cache, ctx, evalset, ref_fp32, work, runs) for t in targets]
        if options.analyze and not any(a.failure for a in artifacts if a.target in _int8_names(targets)):
            with in_stage("analyze"):
                _analyze(targets, cache, evalset, spec.name, work, progress)
        final = []
        for a in artifacts:  # each target that exported moves into place; a failed one has no file
            if a.failure:
                final.append(a)
                continue
            dest = out_dir / Path(a.path).name
            if dest.is_dir():  # a folder artifact (.mlpackage) from an earlier run: os.replace cannot overwrite it
                shutil.rmtree(dest)
            os.replace(a.path, dest)
            final.append(dataclasses.replace(a, path=dest.name))
        if (work / ANALYSIS).is_file():
            os.replace(work / ANALYSIS, out_dir / ANALYSIS)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    stages = tuple(dict.fromkeys(s for a in final for s in a.stages)) or root.history
    calibration = {"source": calib.source if calib else None, "samples": len(calib) if calib else 0,
                   "real": calib.real if calib else None, "eval_source": evalset.source,
                   "eval_samples": len(evalset), "eval_real": evalset.real}
    try:
        quant_config = _quant_config(targets, cache)
    except (StageFailure, UserError):  # the int8 chain itself failed: its targets already say why
        quant_config = None
    manifest = _manifest(spec, options, stages, tuple(final), calibration, reference_accuracy=_acc(ref_fp32, evalset),
                         quant_config=quant_config, pruning=built.pruning)
    atomic_write(out_dir / MANIFEST, manifest.to_json())
    failed = [a.failure for a in final if a.failure]
    if failed:
        more = f" (and {len(failed) - 1} more target(s); all in {out_dir / MANIFEST})" if len(failed) > 1 else ""
        e = StageFailure.from_line(failed[0] + more)
        e.manifest = manifest
        raise e
    return manifest


def _refuse_single_input_tools(spec: "ModelSpec", options: ExportOptions) -> None:
    """The tools that train or rank layers on the data (QAT, pruning while fine-tuning, a list of
    sparsity levels, --max-drop, --analyze) feed one input; a net with several is refused with the
    fix, never trained or ranked on its first input alone."""
    asked = [flag for flag, on in (("--qat-epochs", options.qat.epochs), ("--prune-epochs", options.prune.epochs),
                                   ("--sparsity with several levels", options.sparse.levels),
                                   ("--max-drop", options.max_drop is not None), ("--analyze", options.analyze)) if on]
    if asked:
        raise UserError(f"{asked[0]} works on one-input nets; {_inputs_text(spec)}: export it without {asked[0]}")


def _inputs_text(spec: "ModelSpec") -> str:
    from edgeconv.inputs import resolve_names

    names = resolve_names(spec.input_names, spec.module, len(spec.example_inputs))
    return f"{spec.name} takes {len(names)} inputs ({', '.join(names)})"


def _manifest(spec: "ModelSpec", options: ExportOptions, stages: tuple[StageRecord, ...],
              artifacts: tuple[Artifact, ...], calibration: dict[str, Any], **extra: Any) -> Manifest:
    return Manifest(edgeconv_version=__version__, model=spec.name, model_sha256=spec.sha256,
                    options=options.to_dict(), calibration=calibration, stages=stages, artifacts=artifacts,
                    tool_versions=tool_versions(), host=host_info(), model_ref=spec.reference(), **extra)


def _int8_names(targets: list["Target"]) -> set[str]:
    return {t.name for t in targets if t.quantized}


def _failed(target: "Target", e: StageFailure) -> Artifact:
    """A target that could not be exported or checked: no file, parity unverified with the reason."""
    from edgeconv import parity

    line = str(e)  # a shared stage (capture …) names no target: every target failed with it
    return Artifact(target=target.name, path="", sha256="", size_bytes=0, inputs=(), outputs=(),
                    parity=parity.unverified(target.runtime, line, target.parity_reference), failure=line)


def _one_or_failed(target: "Target", cache: PassCache, ctx: Context, evalset: "DataSet", ref_fp32: np.ndarray,
                   work: Path, runs: ProgramRuns) -> Artifact:
    """`_one`, or — whatever fails inside its passes, converter, runtime or parity run — the failed
    target with one line naming the stage and the op; the other targets go on."""
    try:
        with in_stage("passes", target.name, keep=(UserError,)):  # bad input stays exit 2
            graph = cache.get(target.passes)
        return _one(target, graph, ctx, evalset, ref_fp32, work, runs)
    except StageFailure as e:
        return _failed(target, e)


def _quant_config(targets: list["Target"], cache: PassCache) -> dict[str, Any] | None:
    """The layer choice the int8 artifacts carry, as a replayable QuantConfig (None: no int8 target)."""
    from edgeconv.quant.fallback import config_for

    chain = next((t.passes for t in targets if t.quantized), None)
    if chain is None:
        return None
    graph = cache.get(chain[:chain.index("quantize")])  # layer names are read on the float program
    quantized = cache.get(chain[:chain.index("quantize") + 1])
    return config_for(graph, quantized.float_nodes, quantized.float_op_types).to_file()


def _analyze(targets: list["Target"], cache: PassCache, evalset: "DataSet", name: str, work: Path,
             progress: Progress) -> None:
    """`--analyze`: per-layer int8 sensitivity of the quantized program the int8 targets share."""
    from edgeconv.quant.sensitivity import analyze

    chain = next(t.passes for t in targets if t.quantized)  # export() checked there is one
    with progress.task("analyzing per-layer int8 sensitivity"):
        report = analyze(cache.get(chain), evalset.x[:64], name)
    atomic_write(work / ANALYSIS, report.to_json())


def _acc(out: np.ndarray, data: "DataSet") -> float | None:
    from edgeconv.parity import accuracy

    return accuracy(out, data.y)


def _one(target: "Target", graph: "Graph", ctx: Context, evalset: "DataSet", ref_fp32: np.ndarray,
         work: Path, runs: ProgramRuns) -> Artifact:
    """Export one target into `work`, then verify it in its runtime."""
    from edgeconv.devices.delegates import plans
    from edgeconv.models import artifact_size, file_sha256

    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in ctx.model.name).strip("-") or "model"
    path = work / f"{stem}-{target.name}{target.suffix}"
    t0 = time.perf_counter()
    # A converter's UserError ("cannot lower op X") is a failure of this target, not bad input.
    with ctx.progress.task(f"converting {target.name}"), in_stage("convert", target.name):
        info = target.export(graph, ctx, path)
    export_rec = StageRecord(f"export:{target.name}", True, round(time.perf_counter() - t0, 3),
                             info.notes + ((info.scales_from,) if info.scales_from else ()))
    verdict = verify(target, path, graph, ctx, evalset, ref_fp32, runs)  # names its own stages
    runner = verdict.runner
    with ctx.progress.task(f"delegate partitions of {target.name}"), in_stage("delegate tables", target.name):
        delegates = plans(path)
    with in_stage("read back weights", target.name):
        weights = target.weights(path)
    return Artifact(
        target=target.name, path=str(path), sha256=file_sha256(path), size_bytes=artifact_size(path),
        inputs=runner.inputs if runner else (), outputs=runner.outputs if runner else (), parity=verdict.report,
        stages=graph.history + (export_rec, verdict.record), weights=weights,
        scales_from=info.scales_from, float_layers=graph.float_nodes, float_ops=info.float_ops, delegates=delegates,
    )


def analyze_model(spec: Any, options: Any, max_drop: float | None = None, evaluator: str | None = None,
                  progress: Any = None) -> AnalysisResult:
    """Capture, fold, quantize (one calibration), rank layers, and with max_drop choose float layers."""
    from edgeconv.quant.sensitivity import AnalysisResult, analyze
    from edgeconv.quant.fallback import choose_float_nodes, load_evaluator

    if len(spec.example_inputs) > 1:  # the sensitivity ranking feeds one input
        raise UserError(f"edgeconv analyze works on one-input nets; {_inputs_text(spec)}")
    if evaluator:
        load_evaluator(evaluator)  # a bad reference fails before any work
    progress = progress or Progress(False)
    graph, ctx, evalset = quantized_graph(spec, options, progress)
    calib = ctx.calib
    with progress.task("sensitivity per layer"):
        report = analyze(graph, evalset.x, spec.name)
    fallback = None
    if max_drop is not None:
        with progress.task("choosing float layers"):
            fallback = choose_float_nodes(graph, evalset, report, max_drop, evaluator)
    return AnalysisResult(report, fallback, {"source": calib.source, "samples": len(calib),
                                             "eval_samples": len(evalset), "method": options.quant.method.value,
                                             "weights": options.quant.weights.value})


# The pipeline's own steps around the passes, with the options each reads (`edgeconv list` shows
# them beside the passes': together, every option that can change an artifact).
STEPS = {"prepare": prepare_eager,
         "prune (prepare stage)": reads("prune.epochs", "prune.train_data", "sparse.sparsity", "sparse.levels",
                                        "sparse.block", "max_drop", "seed")(prune_stage),
         "qat (prepare stage)": qat_stage, "before quantize": before_quantize}
