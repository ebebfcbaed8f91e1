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


def collect(budgets: Budgets, progress: "Progress | None" = None) -> dict[str, Measured]:
    """Export every model once (all its budgeted targets), then profile each budgeted device."""
    from edgeconv.config import ExportOptions, PruneOptions, QuantOptions
    from edgeconv.devices.base import Delegate, ProfileOptions
    from edgeconv.devices.profile import headline, profile
    from edgeconv.models import load_model
    from edgeconv.pipeline import export, resolve_targets
    from edgeconv.prepare.prune import sparse_targets

    s = budgets.settings
    by_model: dict[str, list[Budget]] = {}
    for b in budgets.entries:
        by_model.setdefault(b.model, []).append(b)
    out: dict[str, Measured] = {}
    for model, entries in by_model.items():
        targets = tuple(dict.fromkeys(b.target for b in entries))
        resolve_targets(targets)
        out_dir = Path(s.out_dir) / _slug(model)
        prune = PruneOptions(epochs=s.prune_epochs if sparse_targets(targets) else 0)
        export_options = ExportOptions(targets=targets, out_dir=str(out_dir), eval_samples=s.eval_samples,
                                       quant=QuantOptions(samples=s.calib_samples), prune=prune)
        manifest = export(load_model(model), export_options, progress)
        arts = {a.target: a for a in manifest.artifacts}
        for b in entries:
            a = arts[b.target]
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
            failed = [d for d in a.parity.diffs if not d.passed] if a.parity else []
            note = "; ".join(f"vs {d.reference}: {d.reason}" for d in failed) if failed else (
                f"matches {', '.join(d.reference for d in a.parity.diffs)} in {a.parity.runtime}" if a.parity else "")
            out[b.key] = Measured(model=b.model, target=b.target, device=b.device, artifact_sha256=a.sha256,
                                  size_bytes=a.size_bytes, accuracy=a.parity.accuracy if a.parity else None,
                                  reference_accuracy=ref if ref is not None else manifest.reference_accuracy,
                                  p50_ms=p50, p90_ms=p90, method=method, basis=basis,
                                  parity_failures=len(failed) if a.parity else None, parity_note=note,
                                  delegate=b.delegate or "", partitions=parts, cpu_ops=cpu, delegate_basis=dbasis,
                                  float_ops=a.float_ops.count if a.float_ops else None,
                                  float_ops_note=_float_note(a.float_ops),
                                  sparsity=spars, source_drop=drop, sparse_note=snote)
    return out


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
        v = delegates.check(path, b.delegate)
        basis = f"predicted ({b.delegate}.toml)"
    causes = sorted({f.rule for f in v.fallbacks})
    return len(v.partitions), v.cpu_ops, basis + (f"; CPU ops by rule: {', '.join(causes)}" if causes else "")
