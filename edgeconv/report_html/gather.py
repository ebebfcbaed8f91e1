"""Reading what a run left behind into plain rows for the charts and tables: no rendering here.

An output folder holds `edgeconv.json` (required) and whatever else was written beside it, each
recognised by its content, not its name:

- `analyze.json` (`export --analyze`, `analyze -o`): int8 sensitivity, weight and activation ranges;
- a divergence file (`edgeconv divergence ... -o OUT/divergence.json`): a list of DivergenceReport;
- latency reports (`edgeconv profile ... --save OUT/profile-*.json`): one LatencyReport each;
- gate results (`edgeconv gate ... --save FILE`).

A file that is not JSON, or is JSON of a known kind but incomplete, is an error naming it (a report
that silently leaves a section out would mislead); JSON of no known kind is listed and skipped.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable

from edgeconv.errors import UserError

MANIFEST = "edgeconv.json"


@dataclasses.dataclass(frozen=True)
class LayerRow:
    label: str  # module path where known, else the FX node
    node: str
    op: str
    err_only_quantized: float
    gain_if_float: float
    weight_spread: float
    weight_max_abs: float
    act_min: float
    act_max: float
    kept_float: bool


@dataclasses.dataclass(frozen=True)
class DriftLine:
    label: str  # the format; the file too where two lines share one (see `drift_lines`)
    file: str
    layers: tuple[str, ...]  # along depth (torch graph order)
    steps: tuple[float, ...]
    first: int | None  # index of the first tensor past the threshold
    threshold: float
    matched: int
    unmatched: int


@dataclasses.dataclass(frozen=True)
class LatencyRow:
    label: str  # the artifact's target, else its file
    device: str
    method: str  # measured-device | measured-host | predicted
    how: str  # the report's headline: "measured on this host", "predicted (…)"
    p50_ms: float
    p90_ms: float | None
    samples: tuple[float, ...] = ()
    runtime: str = ""
    threads: int | None = None
    sha256: str = ""
    slowest: tuple[tuple[str, str, float, str], ...] = ()  # (op, name, time, unit), slowest first
    source: str = ""


@dataclasses.dataclass(frozen=True)
class StageRow:
    stage: str
    seconds: float
    kind: str  # prepare | pass | export | parity | other
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class StripOp:
    label: str  # "CONV_2D #3 (name)"
    on_delegate: bool
    rule: str = ""  # the rule that left it to the CPU
    why: str = ""


@dataclasses.dataclass(frozen=True)
class DelegateStrip:
    """One artifact as one delegate runs it: every op in execution order, where it runs."""

    target: str
    delegate: str
    how: str  # "measured" | "predicted"
    title: str
    ops: tuple[StripOp, ...]
    partitions: int
    note: str = ""  # where the strip and the manifest's counts differ, or why there is no strip

    @property
    def cpu_ops(self) -> int:
        return sum(not o.on_delegate for o in self.ops)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything one report shows; a section is drawn when its field is set."""

    title: str
    manifest: Any = None  # edgeconv.results.Manifest
    sensitivity: Any = None  # edgeconv.quant.sensitivity.SensitivityReport
    fallback: dict[str, Any] | None = None
    layers: tuple[LayerRow, ...] = ()
    drift: tuple[DriftLine, ...] = ()
    latency: tuple[LatencyRow, ...] = ()
    stages: tuple[StageRow, ...] = ()
    strips: tuple[DelegateStrip, ...] = ()  # per artifact and delegate (the manifest's `delegates`)
    gate: dict[str, Any] | None = None  # a gate results document (edgeconv.gate.shard.results_doc)
    gate_files: tuple[str, ...] = ()  # the shard files a merged gate came from
    read: tuple[str, ...] = ()  # files read
    skipped: tuple[str, ...] = ()  # JSON files of no known kind


# --- reading files ------------------------------------------------------------------------------

def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a JSON file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({' '.join(str(e).split())}); re-create it") from None


def kind(data: Any) -> str | None:
    """What a JSON document is, by its content."""
    if isinstance(data, dict):
        if "artifacts" in data and "model_sha256" in data:
            return "manifest"
        if "sensitivity" in data or ("layers" in data and "err_all_quantized" in data):
            return "analysis"  # `analyze -o` (with the --max-drop result) or `export --analyze`
        if "edgeconv_gate_results" in data:
            return "gate"
        if "method" in data and "p50_ms" in data and "artifact_sha256" in data:
            return "latency"
    if isinstance(data, list) and data and all(isinstance(d, dict) and "threshold_steps" in d for d in data):
        return "divergence"
    return None


def _parse(path: Path, what: str, fn: Any) -> Any:
    try:
        return fn()
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path} looks like {what} but is incomplete ({type(e).__name__}: {e}); re-create it") from None


def gather(folder: str | Path, extra: Iterable[str | Path] = ()) -> Inputs:
    """The inputs of a report on an `edgeconv export` output folder (plus files named explicitly)."""
    from edgeconv.results import Manifest

    d = Path(folder)
    if not d.exists():
        raise UserError(f"{d} does not exist; pass the folder `edgeconv export -o FOLDER` wrote")
    if not d.is_dir():
        raise UserError(f"{d} is not a folder; pass the folder `edgeconv export -o FOLDER` wrote")
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{d} holds no {MANIFEST}; pass the folder `edgeconv export -o FOLDER` wrote")
    mdata = _json(mpath)
    if kind(mdata) != "manifest":
        raise UserError(f"{mpath} is not an edgeconv manifest (no artifacts / model_sha256); re-export")
    manifest = _parse(mpath, "an edgeconv manifest", lambda: Manifest.from_dict(mdata))
    found: dict[str, list[tuple[Path, Any]]] = {}
    skipped = []
    paths = sorted(p for p in d.glob("*.json") if p.name != MANIFEST and p.is_file())
    for p in [*paths, *(Path(x) for x in extra)]:
        data = _json(p)
        k = kind(data)
        if k is None or k == "manifest":
            skipped.append(str(p))
            continue
        found.setdefault(k, []).append((p, data))
    inp = build(manifest, found, [str(mpath), *(str(p) for v in found.values() for p, _ in v)], skipped)
    return dataclasses.replace(inp, strips=delegate_strips(manifest, d))


def delegate_strips(manifest: Any, folder: Path) -> tuple[DelegateStrip, ...]:
    """Per artifact, each delegate the manifest records, op by op: the file beside the manifest read
    again with the same table (predicted) or the same runtime (XNNPACK on this host, measured). A
    file whose bytes changed since the export gets no strip, and says so."""
    from edgeconv.devices import delegates
    from edgeconv.errors import UserError as Bad
    from edgeconv.models import file_sha256

    out = []
    for a in manifest.artifacts:
        path = folder / a.path
        plans = [p for p in a.delegates if p.how in ("measured", "predicted")]
        if not plans:
            continue
        if not path.exists() or file_sha256(path) != a.sha256:
            why = "is missing" if not path.exists() else "has changed since the export (sha256 differs)"
            out += [DelegateStrip(a.target, p.delegate, p.how, p.title, (), p.partitions,
                                  f"no strip: {a.path} {why}") for p in plans]
            continue
        for p in plans:
            try:
                v = delegates.measure(path, p.delegate) if p.how == "measured" else delegates.check(path, p.delegate)
                ops = delegates.read_ops(path, _format_of(path))
            except Bad as e:
                out.append(DelegateStrip(a.target, p.delegate, p.how, p.title, (), p.partitions, f"no strip: {e}"))
                continue
            why = {f.index: f for f in v.fallbacks}
            if v.kind == "measured":  # the runtime says where; the table says why, where it agrees
                table = {f.index: f for f in delegates.check(path, p.delegate).fallbacks}
                why = {i: dataclasses.replace(table[i], why=f"{table[i].why} (measured on this host: kept on the CPU)")
                       if i in table else f for i, f in why.items()}
            taken = set(v.delegated)
            strip = tuple(StripOp(o.label(), o.index in taken, why[o.index].rule if o.index in why else "",
                                  why[o.index].why if o.index in why else "") for o in ops)
            note = ""
            if (len(v.partitions), v.cpu_ops) != (p.partitions, p.cpu_ops):
                note = (f"read again: {len(v.partitions)} partition(s), {v.cpu_ops} CPU op(s); the manifest "
                        f"recorded {p.partitions} and {p.cpu_ops}")
            out.append(DelegateStrip(a.target, p.delegate, v.kind, p.title, strip, len(v.partitions), note))
    return tuple(out)


def _format_of(path: Path) -> str:
    from edgeconv.exporters.formats import format_for

    return format_for(path).name


def build(manifest: Any, found: dict[str, list[tuple[Path, Any]]], read: Iterable[str] = (),
          skipped: Iterable[str] = ()) -> Inputs:
    """Rows for every section from already-parsed documents."""
    from edgeconv.quant.divergence import DivergenceReport
    from edgeconv.quant.sensitivity import SensitivityReport
    from edgeconv.results import LatencyReport

    from edgeconv.gate.shard import load_results

    float_names: set[str] = set()
    if manifest is not None:
        for a in manifest.artifacts:
            float_names |= set(a.float_layers)
    sens = fallback = None
    layers: tuple[LayerRow, ...] = ()
    if "analysis" in found:
        p, data = found["analysis"][-1]
        fallback = data.get("fallback")
        if fallback is not None and not isinstance(fallback, dict):
            raise UserError(f"{p}: fallback is not an object; re-create it")
        float_names |= set((fallback or {}).get("float_nodes", ())) | set((fallback or {}).get("float_modules", ()))
        sens = _parse(p, "a sensitivity analysis", lambda: SensitivityReport.from_dict(data.get("sensitivity", data)))
        layers = _parse(p, "a sensitivity analysis", lambda: layer_rows(sens, float_names))
    drift: list[DriftLine] = []
    for p, data in found.get("divergence", []):
        drift += _parse(p, "divergence reports", lambda: drift_lines([DivergenceReport.from_dict(r) for r in data]))
    if len({d.label for d in drift}) < len(drift):  # two files with one format each: name the files
        drift = [dataclasses.replace(d, label=f"{d.label} {d.file}") for d in drift]
    latency = [_parse(p, "a latency report", lambda: latency_row(LatencyReport.from_dict(data), manifest, p.name))
               for p, data in found.get("latency", [])]
    gate = None
    if "gate" in found:
        p, gate = found["gate"][-1]
        load_results(p)  # validates it (one line naming the file when it is incomplete)
    return Inputs(
        title=manifest.model if manifest is not None else "edgeconv gate",
        manifest=manifest, sensitivity=sens, fallback=fallback, layers=layers, drift=tuple(drift),
        latency=tuple(latency), stages=_parse(Path(MANIFEST), "a manifest", lambda: stage_rows(manifest.stages))
        if manifest is not None else (), gate=gate, read=tuple(read), skipped=tuple(skipped))


def layer_rows(sens: Any, float_names: set[str]) -> tuple[LayerRow, ...]:
    def f(v: Any) -> float:
        return float("nan") if v is None else float(v)

    return tuple(LayerRow(label=r.module or r.node, node=r.node, op=r.op, err_only_quantized=f(r.err_only_quantized),
                          gain_if_float=f(r.gain_if_float), weight_spread=f(r.weight_range_spread),
                          weight_max_abs=f(r.weight_max_abs), act_min=f(r.act_min), act_max=f(r.act_max),
                          kept_float=r.node in float_names or bool(r.module and r.module in float_names))
                 for r in sens.layers)


def drift_lines(reports: list[Any]) -> list[DriftLine]:
    lines = [drift_line(r) for r in reports]
    formats = [d.label for d in lines]
    return [dataclasses.replace(d, label=f"{d.label} {d.file}") if formats.count(d.label) > 1 else d for d in lines]


def drift_line(r: Any) -> DriftLine:
    tensors = list(r.tensors)
    names = [t.layer or t.tensor for t in tensors]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # a layer can own several tensors (an add after a conv): keep them apart on the axis
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    first = None
    if r.first_divergent is not None:
        first = next((i for i, t in enumerate(tensors) if t.tensor == r.first_divergent.tensor), None)
    return DriftLine(label=r.format, file=Path(r.artifact).name, layers=tuple(unique),
                     steps=tuple(float(t.max_steps) for t in tensors), first=first,
                     threshold=float(r.threshold_steps), matched=r.matched, unmatched=len(r.unmatched))


def latency_row(r: Any, manifest: Any, source: str = "") -> LatencyRow:
    from edgeconv.devices.profile import headline

    label = source
    if manifest is not None:
        label = next((a.target for a in manifest.artifacts if a.sha256 == r.artifact_sha256), source)

    def avg(op: dict[str, Any]) -> float:
        v = op.get("avg", op.get("ms"))
        try:
            return float(v)
        except (TypeError, ValueError):
            return -1.0

    ops = sorted(r.per_op, key=avg, reverse=True)[:10]
    slowest = tuple((str(op.get("op", op.get("class", ""))), str(op.get("name", "")), avg(op), str(op.get("unit", "ms")))
                    for op in ops if avg(op) >= 0)
    p90 = r.p90_ms if r.p90_ms is not None and math.isfinite(r.p90_ms) else None
    return LatencyRow(label=label, device=r.device, method=r.method, how=headline(r), p50_ms=float(r.p50_ms),
                      p90_ms=p90, samples=tuple(r.samples_ms) if r.method != "predicted" else (),
                      runtime=r.runtime, threads=r.threads, sha256=r.artifact_sha256, slowest=slowest, source=source)


def stage_kind(stage: str) -> str:
    if stage.startswith("export:"):
        return "export"
    if stage.startswith("parity:"):
        return "parity"
    if stage in ("prepare", "capture", "load", "calibrate", "qat"):
        return "prepare"
    return "pass"


def stage_rows(stages: Iterable[Any]) -> tuple[StageRow, ...]:
    return tuple(StageRow(s.stage, float(s.seconds or 0.0), stage_kind(s.stage), tuple(s.notes)) for s in stages)


# --- the gate ------------------------------------------------------------------------------------

def gate_inputs(doc: dict[str, Any], shard_files: Iterable[str] = ()) -> Inputs:
    """A report on a gate run (or merged shards): its results document, latency rows from what it measured."""
    from edgeconv.gate.budgets import Measured

    rows = []
    measured = [Measured.from_dict(m) for m in doc.get("measured", {}).values()]
    one_model = len({m.model for m in measured}) == 1
    for mm in measured:
        if mm.p50_ms is None:
            continue
        rows.append(LatencyRow(label=mm.target if one_model else f"{mm.model} / {mm.target}", device=mm.device + (f" @ {mm.delegate}" if mm.delegate else ""),
                               method=mm.method, how=mm.basis, p50_ms=float(mm.p50_ms),
                               p90_ms=mm.p90_ms if mm.p90_ms is not None and math.isfinite(mm.p90_ms) else None,
                               sha256=mm.artifact_sha256))
    return Inputs(title="edgeconv gate", gate=doc, latency=tuple(rows), gate_files=tuple(shard_files))
