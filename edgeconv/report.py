"""Human-readable rendering of results (the JSON manifest is the machine-readable form)."""
from __future__ import annotations

from edgeconv.results import Manifest


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _rel(d) -> str:
    if d is None or d.max_rel is None:
        return "—"
    return f"{d.max_rel:.1e}"


def _agree(d) -> str:
    if d is None or d.top1_agreement is None:
        return "—"
    if d.top1_agreement_decisive is None:
        return f"{_pct(d.top1_agreement)} (no decisive)"
    return f"{_pct(d.top1_agreement)} ({_pct(d.top1_agreement_decisive)} of {d.decisive_samples})"


def _steps(d) -> str:
    if d is None or d.max_steps is None:
        return "—"
    return f"{d.max_steps:g}" + ("" if d.step_unit == "output scale" else f" ({d.step_unit})")


def _float_ops(a) -> str:
    """int8 artifacts: 0 when full-integer, else the count (in red)."""
    f = getattr(a, "float_ops", None)
    if f is None:
        return "—"
    return "0" if f.count == 0 else f"[red]{f.count}[/red]"


def _metrics(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items())


def print_manifest(m: Manifest, out_dir: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import sys

    con = Console(width=None if sys.stdout.isatty() else 160)
    cal = m.calibration
    if cal:  # empty when export failed before the held-out samples were run
        con.print(f"[bold]{m.model}[/bold]  fp32 torch accuracy {_pct(m.reference_accuracy)} on "
                  f"{cal['eval_samples']} held-out samples ({cal['eval_source']})")
    if cal.get("samples"):
        note = "" if cal.get("real") else "  [red]NOT a real calibration[/red]"
        con.print(f"calibrated on {cal['samples']} samples ({cal['source']}){note}")
    table = Table()
    for col in ("target", "file", "size", "accuracy", "vs fp32 max|Δ|/range", "cos", "top-1 agree (decisive)",
                "vs sim (steps)", "float ops", "checked in", "parity"):
        table.add_column(col)
    for a in m.artifacts:
        p = a.parity
        f32 = next((d for d in p.diffs if d.reference not in ("torch-quant-sim", "source-model")), None) if p else None
        sim = next((d for d in p.diffs if d.reference == "torch-quant-sim"), None) if p else None
        table.add_row(
            a.target, a.path or "(not exported)", f"{a.size_bytes / 1024:.1f} KB", _pct(p.accuracy if p else None),
            _rel(f32), f"{f32.cosine:.5f}" if f32 else "—", _agree(f32),
            _steps(sim), _float_ops(a), p.runtime if p else "—",
            "[green]ok[/green]" if p and p.passed else "[red]FAILED[/red]",
        )
    con.print(table)
    if m.host:
        con.print(f"host: {m.host.get('cpu', '?')} ({m.host.get('isa', '')})")
    for a in m.artifacts:
        for d in (a.parity.diffs if a.parity else ()):
            if not d.passed:
                con.print(f"[red]{a.target}: vs {d.reference}: {d.reason}[/red]")
        f = getattr(a, "float_ops", None)
        if f is not None and f.count:
            shown = ", ".join(f.ops[:6]) + (" …" if f.count > 6 else "")
            con.print(f"[yellow]{a.target}: {f.count} op(s) run in float: {shown}[/yellow]")
        for o in (a.parity.outputs if a.parity else ()):
            sim = f"; vs int8 sim {_metrics(o.vs_sim)}" if o.vs_sim else ""
            floor = f" (floor {o.floor:.4g}: {o.floor_from})" if o.floor is not None else ""
            colour = "" if o.passed else "[red]"
            line = escape(f"{a.target} output {o.index} {o.name} [{o.kind}, {o.kind_source}]: vs fp32 "
                          f"{_metrics(o.vs_fp32)}{floor}{sim}" + (f" — FAILED: {o.reason}" if not o.passed else ""))
            con.print(f"{colour}{line}{'[/red]' if colour else ''}")
        hk = a.parity.host_kernels if a.parity else None
        if hk and hk.deviates:
            con.print(f"[yellow]WARNING {a.target}: {hk.message}[/yellow]")
    for a in m.artifacts:
        acc, ref = (a.parity.accuracy if a.parity else None), m.reference_accuracy
        if acc is not None and ref is not None and acc < ref - 0.01:
            con.print(f"[yellow]{a.target}: accuracy {_pct(acc)} is {100 * (ref - acc):.1f} points below the source "
                      f"model's {_pct(ref)}[/yellow]"
                      + (" (compared against the pruned torch program; prune gradually while fine-tuning "
                         "to keep accuracy, see docs/sparse.md)" if a.parity.diffs[0].reference == "torch-after-passes" else ""))
    con.print(f"manifest: {out_dir}/edgeconv.json")
