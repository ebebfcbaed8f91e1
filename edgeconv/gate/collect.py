"""Running the exports and profiles a budgets file asks for: the only part of the gate with side effects."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.errors import UserError
from edgeconv.gate.budgets import Budget, Budgets, Measured

if TYPE_CHECKING:
    from edgeconv.context import Progress
    from edgeconv.results import Artifact

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def collect(budgets: Budgets, progress: Progress | None = None) -> dict[str, Measured]:
    """Export every model once (all its budgeted targets), then profile each budgeted device."""
    from edgeconv.config import ExportOptions, PruneOptions, QuantOptions
    from edgeconv.devices.base import Delegate, ProfileOptions
    from edgeconv.devices.profile import headline, profile
    from edgeconv.models import load_model
    from edgeconv.pipeline import resolve_targets
    from edgeconv.prepare.prune import sparse_targets

    s = budgets.settings
    quant_config = None
    if s.quant_config:
        from edgeconv.quant.fallback import read_quant_config

        qc = Path(s.quant_config)
        quant_config = read_quant_config(str(qc if qc.is_absolute() else Path(budgets.path).parent / qc))
    by_model: dict[str, list[Budget]] = {}
    out: dict[str, Measured] = {}
    for b in budgets.entries:
        if b.artifact is not None:  # a file built elsewhere: its check verdict, no export
            out[b.key] = checked_artifact(b, budgets, progress)
        else:
            by_model.setdefault(b.model, []).append(b)
    for model, entries in by_model.items():
        targets = tuple(dict.fromkeys(b.target for b in entries))
        resolve_targets(targets)
        out_dir = Path(s.out_dir) / _slug(model)
        prune = PruneOptions(epochs=s.prune_epochs if sparse_targets(targets) else 0)
        export_options = ExportOptions(targets=targets, out_dir=str(out_dir), eval_samples=s.eval_samples,
                                       quant=QuantOptions(samples=s.calib_samples), quant_config=quant_config,
                                       prune=prune)
        manifest = _export_all(load_model(model), export_options, progress)
        arts = {a.target: a for a in manifest.artifacts}
        for b in entries:
            a = arts[b.target]
            if a.failure:  # this target's export failed; the model's other targets are measured
                out[b.key] = Measured(model=b.model, target=b.target, device=b.device, artifact_sha256="",
                                      size_bytes=0, delegate=b.delegate or "", failure=a.failure)
                continue
            p50 = p90 = None
            method = basis = ""
            if b.needs_latency:
                options = ProfileOptions(threads=s.threads, runs=s.runs, warmup=s.warmup,
                                         delegate=Delegate(b.delegate) if b.delegate else None)
                rep = profile(str(out_dir / a.path), b.device, options, require_measured=s.require_measured,
                              progress=progress)
                if rep.artifact_sha256 and rep.artifact_sha256 != a.sha256:
                    raise UserError(f"{b.key}: the profiled bytes are not the exported artifact")
                p50, p90, method, basis = rep.p50_ms, rep.p90_ms, rep.method, headline(rep)
            parts = cpu = None
            dbasis = ""
            if b.needs_delegate_check:
                parts, cpu, dbasis = _delegate_counts(out_dir / a.path, b)
            spars = drop = None
            snote = ""
            if b.needs_sparse_check:
                spars, drop, snote = _sparse_figures(out_dir / a.path, a, manifest.reference_accuracy)
            ref = a.parity.reference_accuracy if a.parity else None
            failed = _failed(a.parity) if a.parity else []
            note = "; ".join(failed) if failed else (
                f"matches {', '.join(d.reference for d in a.parity.diffs)} in {a.parity.runtime}"
                + (" and every int8 layer in isolation" if a.parity.layers is not None else "") if a.parity else "")
            out[b.key] = Measured(model=b.model, target=b.target, device=b.device, artifact_sha256=a.sha256,
                                  size_bytes=a.size_bytes, accuracy=a.parity.accuracy if a.parity else None,
                                  reference_accuracy=ref if ref is not None else manifest.reference_accuracy,
                                  p50_ms=p50, p90_ms=p90, method=method, basis=basis,
                                  parity_failures=len(failed) if a.parity else None, parity_note=note,
                                  delegate=b.delegate or "", partitions=parts, cpu_ops=cpu, delegate_basis=dbasis,
                                  float_ops=a.float_ops.count if a.float_ops else None,
                                  float_ops_note=_float_note(a.float_ops),
                                  check_failures=(len(failed) if a.parity else None) if b.check else None,
                                  check_note=f"the export's verdict (what `edgeconv check` gives on these bytes, "
                                             f"sha256 {a.sha256[:12]}): {note}" if b.check else "",
                                  sparsity=spars, source_drop=drop, sparse_note=snote)
    return out


def _export_all(spec, options, progress):
    """Every target of one model exported, whichever fail: a stage failure (one target's converter, or
    capture for all of them) still leaves the manifest, each failed target in it with its one line,
    so the gate judges every target of every model instead of stopping at the first that failed."""
    from edgeconv.errors import StageFailure
    from edgeconv.pipeline import export

    try:
        return export(spec, options, progress)
    except StageFailure as e:
        if e.manifest is None:  # failed before any manifest: nothing to judge target by target
            raise
        return e.manifest


def _failed(parity) -> list[str]:
    """Each failed criterion of a parity verdict: an output comparison, or the int8 layers in isolation."""
    out = [f"vs {d.reference}: {d.reason}" for d in parity.diffs if not d.passed]
    lay = parity.layers
    if lay is not None and not lay.passed:
        out.append("int8 layers in isolation: " + "; ".join(lay.over[:3]))
    return out


def checked_artifact(b: Budget, budgets: Budgets, progress: Progress | None) -> Measured:
    """A budget on a file built elsewhere: `edgeconv check` run on it, or its saved verdict read."""
    from edgeconv.models import file_sha256

    path = Path(b.artifact)
    if not path.exists():
        raise UserError(f"{b.key}: artifact {path} does not exist; build it before the gate runs, or fix the "
                        "path in the budgets file")
    sha = file_sha256(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    if isinstance(b.check, str):
        failures, note = _saved_verdict(Path(b.check), b.target, sha)
    else:
        failures, note = _run_check(path, b, budgets, progress)
    return Measured(model=b.model, target=b.target, device=b.device, artifact_sha256=sha, size_bytes=size,
                    check_failures=failures, check_note=note)


def _run_check(path: Path, b: Budget, budgets: Budgets, progress: Progress | None) -> tuple[int, str]:
    from edgeconv.check import check, listed, options_of, spec_of
    from edgeconv.config import ExportOptions, QuantOptions
    from edgeconv.context import Progress
    from edgeconv.models import load_model

    found = listed(path)
    if found is not None:  # written by edgeconv export: its own model and options
        manifest, entry = found
        spec = spec_of(manifest, None if manifest.get("model_ref") else load_model(b.model))
        options, recorded = options_of(manifest, path.parent), entry.get("sha256")
    else:
        s = budgets.settings
        spec, recorded = load_model(b.model), None
        options = ExportOptions(targets=(b.target,), out_dir=str(path.parent), eval_samples=s.eval_samples,
                                quant=QuantOptions(samples=s.calib_samples))
    report = check([(path, b.target, recorded)], spec, options, progress or Progress(False))
    c = report.checked[0]
    failed = _failed(c.parity)
    how = f"`edgeconv check` in {c.parity.runtime}" + (f", {c.simulation}" if c.simulation else "")
    return len(failed), f"{how}: " + ("; ".join(failed) if failed else "passed")


def _saved_verdict(report: Path, target: str, sha: str) -> tuple[int, str]:
    """(failed criteria, note) from a saved `edgeconv check --json` report; a report on other bytes
    is a failure (a stale verdict is no verdict), an unreadable one a UserError."""
    import json

    try:
        text = report.read_text()
        doc = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
        rows = doc["checked"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{report} is not a saved `edgeconv check --json` report ({type(e).__name__}); write it "
                        "with `edgeconv check ARTIFACT --json > FILE`") from None
    row = next((r for r in rows if r.get("sha256") == sha and r.get("target") == target), None)
    if row is None:
        return 1, (f"{report} holds no verdict on these bytes (sha256 {sha[:12]}, {target}): the artifact changed "
                   "after it was checked; re-run edgeconv check")
    p = row.get("parity") or {}
    failed = [f"vs {d.get('reference')}: {d.get('reason')}" for d in p.get("diffs", ()) if not d.get("passed")]
    lay = p.get("layers")
    if lay and not lay.get("passed"):
        failed.append("int8 layers in isolation: " + "; ".join(lay.get("over", [])[:3]))
    if not failed and p.get("passed") is False:
        failed.append("the saved verdict failed")
    return len(failed), f"saved verdict {report.name} (sha256 {sha[:12]}): " + ("; ".join(failed) or "passed")



def _sparse_figures(path: Path, artifact: "Artifact", dense_accuracy: float | None) -> tuple[float, float | None, str]:
    """(1x1 zeros in the file, points below the dense source model, how): a sparse artifact is a pruned
    program, so its drop is measured against the user's unpruned model, as the source-model check does."""
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    rep = check_tflite(path)
    verdict = "eligible for XNNPACK's sparse path" if rep.eligible else "NOT eligible for XNNPACK's sparse path"
    src = next((d for d in artifact.parity.diffs if d.reference == "source-model"), None) if artifact.parity else None
    if artifact.parity and artifact.parity.accuracy is not None and dense_accuracy is not None:
        drop, how = (dense_accuracy - artifact.parity.accuracy) * 100.0, (
            f"accuracy {artifact.parity.accuracy:.2%} vs the dense model's {dense_accuracy:.2%}")
    elif src is not None and src.top1_agreement is not None:
        drop, how = (1.0 - src.top1_agreement) * 100.0, f"top-1 agreement with the dense model {src.top1_agreement:.3f}"
    elif src is not None:
        drop, how = (1.0 - src.cosine) * 100.0, f"cosine to the dense model {src.cosine:.4f}"
    else:
        drop, how = None, "no source-model comparison in the manifest"
    return rep.zeros_1x1, drop, f"{how}; 1x1 zeros {rep.zeros_1x1:.1%} in the file, {verdict}"


def _float_note(f) -> str:
    if f is None:
        return ""
    named = ", ".join(f.ops[:4]) + (" ..." if len(f.ops) > 4 else "")
    return f"float ops: {f.how or 'read from the file'}" + (f": {named}" if named else "")


def _delegate_counts(path: Path, b: Budget) -> tuple[int, int, str]:
    """Partitions and CPU ops for the budget's delegate: measured for XNNPACK on this host (the runtime
    is here), predicted from the delegate's support table otherwise."""
    from edgeconv.devices import delegates

    assert b.delegate is not None
    if b.delegate == "xnnpack" and b.device == "host":
        v = delegates.measure(path, "xnnpack")
        basis = "measured on this host (ai-edge-litert XNNPACK)"
    else:
        name = delegates.resolve(b.delegate, path)
        v = delegates.check(path, name)
        basis = f"predicted ({name}.toml)"
    return len(v.partitions), v.cpu_ops, basis + _fallback_note(v)


def _fallback_note(v) -> str:
    """The ops left on the CPU, each with the rule that sent it there (the first few by rule)."""
    by_rule: dict[str, list[str]] = {}
    for f in v.fallbacks:
        by_rule.setdefault(f.rule, []).append(f.label)
    if not by_rule:
        return ""
    parts = [f"[{rule}] {', '.join(labels[:3])}{f' +{len(labels) - 3} more' if len(labels) > 3 else ''}"
             for rule, labels in sorted(by_rule.items())]
    return "; CPU ops: " + "; ".join(parts)
