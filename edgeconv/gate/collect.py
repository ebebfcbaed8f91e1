"""Running the exports and profiles a budgets file asks for: the only part of the gate with side effects."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.errors import UserError
from edgeconv.gate.budgets import Budget, Budgets, Measured

if TYPE_CHECKING:
    from edgeconv.context import Progress

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def collect(budgets: Budgets, progress: "Progress | None" = None) -> dict[str, Measured]:
    """Export every model once (all its budgeted targets), then profile each budgeted device."""
    from edgeconv.config import ExportOptions, QuantOptions
    from edgeconv.devices.base import Delegate, ProfileOptions
    from edgeconv.devices.profile import headline, profile
    from edgeconv.models import load_model
    from edgeconv.pipeline import export, resolve_targets

    s = budgets.settings
    quant_config = None
    if s.quant_config:
        from edgeconv.quant.fallback import read_quant_config

        qc = Path(s.quant_config)
        quant_config = read_quant_config(str(qc if qc.is_absolute() else Path(budgets.path).parent / qc))
    by_model: dict[str, list[Budget]] = {}
    for b in budgets.entries:
        by_model.setdefault(b.model, []).append(b)
    out: dict[str, Measured] = {}
    for model, entries in by_model.items():
        targets = tuple(dict.fromkeys(b.target for b in entries))
        resolve_targets(targets)
        out_dir = Path(s.out_dir) / _slug(model)
        export_options = ExportOptions(targets=targets, out_dir=str(out_dir), eval_samples=s.eval_samples,
                                       quant=QuantOptions(samples=s.calib_samples), quant_config=quant_config)
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
                                  float_ops_note=_float_note(a.float_ops))
    return out


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
