"""The gate's rules: a pure function of budgets, measurements and an optional baseline, so they are
tested without exporting anything."""
from __future__ import annotations

import math
from typing import Mapping

from edgeconv.errors import UserError
from edgeconv.gate.budgets import LOWER_BOUNDS, Budget, Budgets, GateSettings, Measured
from edgeconv.results import GateResult

def evaluate(budgets: Budgets, measured: Mapping[str, Measured],
             baseline: Mapping[str, Measured] | None = None) -> tuple[GateResult, ...]:
    """One GateResult per check. Pure: no I/O, no exports, no clocks."""
    out: list[GateResult] = []
    parity_seen: set[tuple[str, str]] = set()
    for b in budgets.entries:
        m = measured.get(b.key)
        if m is None:
            raise UserError(f"no result for {b.key}: the gate measured nothing for this budget")
        if m.failure:  # no file: no size, speed or parity to judge; the stage that failed is the breach
            out.append(GateResult(b.key, "export", None, 0.0, False, f"not exported: {m.failure}"))
            continue
        if m.parity_failures is not None and (b.model, b.target) not in parity_seen:
            # an artifact that does not match its model fails the gate whatever its speed; once per artifact
            parity_seen.add((b.model, b.target))
            out.append(GateResult(f"{b.model} / {b.target}", "parity_failures", float(m.parity_failures), 0.0,
                                  m.parity_failures == 0, m.parity_note or "parity checked"))
        if b.check:
            # the artifact's whole `edgeconv check` verdict: any failed criterion fails the build
            out.append(GateResult(b.key, "check", None if m.check_failures is None else float(m.check_failures), 0.0,
                                  m.check_failures == 0, m.check_note or "no check verdict was collected"))
        how = m.basis or "measured"
        checks = [("p50_ms", b.p50_ms, m.p50_ms, how), ("p90_ms", b.p90_ms, m.p90_ms, how),
                  ("size_kb", b.size_kb, m.size_bytes / 1024.0, f"sha256 {m.artifact_sha256[:12]}"),
                  ("accuracy_drop", b.accuracy_drop, m.accuracy_drop, _acc_note(m)),
                  ("max_partitions", b.max_partitions, m.partitions, m.delegate_basis or "delegate table"),
                  ("max_cpu_ops", b.max_cpu_ops, m.cpu_ops, m.delegate_basis or "delegate table"),
                  ("max_float_ops", b.max_float_ops, m.float_ops,
                   m.float_ops_note or "float_ops is counted for int8 targets only"),
                  ("min_sparsity", b.min_sparsity, m.sparsity, m.sparse_note or "read for sparse targets only"),
                  ("max_drop", b.max_drop, m.source_drop, m.sparse_note or "measured for sparse targets only")]
        for metric, limit, value, note in checks:
            if limit is None:
                continue
            if metric == "p90_ms" and (value is None or math.isnan(value)):
                out.append(GateResult(b.key, metric, None, limit, False, _no_p90(b, m)))
                continue
            if value is None:
                out.append(GateResult(b.key, metric, None, limit, False,
                                      f"no value to check ({note}); remove the limit or supply what it needs"))
                continue
            if metric in LOWER_BOUNDS:
                ok, sign = value >= limit, (">=" if value >= limit else "<")
            else:
                ok, sign = value <= limit, ("<=" if value <= limit else ">")
            out.append(GateResult(b.key, metric, value, limit, ok, f"{value:.4g} {sign} {limit:.4g}; {note}"))
        if baseline is not None and b.needs_latency:
            out.append(_regression(b, m, baseline.get(b.key), budgets.settings))
    return tuple(out)


def _no_p90(b: Budget, m: Measured) -> str:
    """Why a p90 budget has nothing to check: never a p50 standing in for it."""
    if m.method == "predicted":
        return (f"not measured: p90 needs a measurement; {m.basis or 'a prediction'} is one number, with no "
                f"spread — make {b.device} reachable (see `edgeconv devices`) or budget p50_ms instead")
    return (f"not measured: {m.basis or m.method or 'the measurement'} reported no p90; "
            "budget p50_ms for this device instead")


def _acc_note(m: Measured) -> str:
    if m.accuracy is None or m.reference_accuracy is None:
        return "the evaluation data has no labels, so no accuracy was measured"
    return f"accuracy {m.accuracy:.2%} vs fp32 {m.reference_accuracy:.2%}"


def _regression(b: Budget, m: Measured, base: Measured | None, s: GateSettings) -> GateResult:
    limit = b.regression_pct if b.regression_pct is not None else s.regression_pct
    if base is None or base.p50_ms is None or m.p50_ms is None:
        return GateResult(b.key, "regression_pct", None, limit, True, "not compared: no baseline entry")
    if base.method != m.method:  # a prediction is never compared with a measurement
        return GateResult(b.key, "regression_pct", None, limit, True,
                          f"not compared: baseline {base.method}, now {m.method}")
    slower = (m.p50_ms / base.p50_ms - 1.0) * 100.0
    ok = slower <= limit
    same = " (same artifact bytes)" if base.artifact_sha256 == m.artifact_sha256 else ""
    return GateResult(b.key, "regression_pct", slower, limit, ok,
                      f"p50 {m.p50_ms:.4g} ms vs baseline {base.p50_ms:.4g} ms: {slower:+.1f} %{same}")
