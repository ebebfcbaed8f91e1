"""Human-readable rendering of results (the JSON manifest is the machine-readable form)."""
from __future__ import annotations

from edgeconv.results import Manifest


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def print_manifest(m: Manifest, out_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table

    import sys

    con = Console(width=None if sys.stdout.isatty() else 160)
    cal = m.calibration
    con.print(f"[bold]{m.model}[/bold]  fp32 torch accuracy {_pct(m.reference_accuracy)} on "
              f"{cal['eval_samples']} held-out samples ({cal['eval_source']})")
    if cal.get("samples"):
        note = "" if cal.get("real") else "  [red]NOT a real calibration[/red]"
        con.print(f"calibrated on {cal['samples']} samples ({cal['source']}){note}")
    table = Table()
    for col in ("target", "file", "size", "accuracy", "vs fp32 max|Δ|", "cos", "top-1 agree", "vs sim (steps)", "parity"):
        table.add_column(col)
    for a in m.artifacts:
        p = a.parity
        f32 = next((d for d in p.diffs if d.reference != "torch-quant-sim"), None) if p else None
        sim = next((d for d in p.diffs if d.reference == "torch-quant-sim"), None) if p else None
        table.add_row(
            a.target, a.path, f"{a.size_bytes / 1024:.1f} KB", _pct(p.accuracy if p else None),
            f"{f32.max_abs:.2e}" if f32 else "—", f"{f32.cosine:.5f}" if f32 else "—",
            _pct(f32.top1_agreement) if f32 else "—",
            f"{sim.max_steps:.1f}" if sim and sim.max_steps is not None else "—",
            "[green]ok[/green]" if p and p.passed else "[red]FAILED[/red]",
        )
    con.print(table)
    for a in m.artifacts:
        acc, ref = (a.parity.accuracy if a.parity else None), m.reference_accuracy
        if acc is not None and ref is not None and acc < ref - 0.01:
            con.print(f"[yellow]{a.target}: accuracy {_pct(acc)} is {100 * (ref - acc):.1f} points below the source "
                      f"model's {_pct(ref)}[/yellow]"
                      + (" (compared against the pruned torch program; prune gradually while fine-tuning "
                         "to keep accuracy, see docs/sparse.md)" if a.parity.diffs[0].reference == "torch-after-passes" else ""))
    con.print(f"manifest: {out_dir}/edgeconv.json")
