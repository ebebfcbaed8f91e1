"""`report.html`: one self-contained page of what an export (or a gate run) found, for people.

    OUT_DIR/edgeconv.json, analyze.json, divergence.json, profile-*.json, gate results
        ──gather──▶ Inputs (plain rows; no rendering) ──render──▶ HTML with inline SVG charts

`gather` reads and validates (bad input is a one-line UserError naming the file), `charts` draws
with matplotlib (imported only when a chart is drawn), `render` lays the page out. The page has no
script and fetches nothing: it opens from a CI artifact, offline, on a phone.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterable

REPORT = "report.html"


@dataclasses.dataclass(frozen=True)
class Written:
    path: Path
    size_bytes: int
    seconds: float
    charts: tuple[str, ...]


def _write(html: str, dest: Path, t0: float) -> Written:
    import re

    from edgeconv.errors import UserError
    from edgeconv.results import atomic_write

    if dest.parent and not dest.parent.is_dir():
        raise UserError(f"cannot write {dest}: folder {dest.parent} does not exist")
    atomic_write(dest, html)
    m = re.search(r'data-charts="([^"]*)"', html)
    return Written(dest, len(html.encode()), time.perf_counter() - t0, tuple((m.group(1) if m else "").split()))


def write_report(folder: str | Path, dest: str | Path | None = None, extra: Iterable[str | Path] = ()) -> Written:
    """Write OUT_DIR/report.html (or dest) from what the output folder holds."""
    from edgeconv.report_html.gather import gather
    from edgeconv.report_html.render import render

    t0 = time.perf_counter()
    inp = gather(folder, extra)
    return _write(render(inp), Path(dest) if dest else Path(folder) / REPORT, t0)


def write_gate_report(doc: dict[str, Any], dest: str | Path, shard_files: Iterable[str] = ()) -> Written:
    """Write the gate's HTML report from its results document (a run, one shard, or merged shards)."""
    from edgeconv.report_html.gather import gate_inputs
    from edgeconv.report_html.render import render

    t0 = time.perf_counter()
    return _write(render(gate_inputs(doc, shard_files)), Path(dest), t0)
