"""`edgeconv report OUT_DIR`: write OUT_DIR/report.html, one self-contained page of the run."""
from __future__ import annotations

import click


@click.command("report")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option("-o", "--out", "dest", default=None, metavar="FILE", help="Where to write. Default: OUT_DIR/report.html.")
@click.option("--include", "extra", multiple=True, metavar="FILE",
              help="Another result JSON to show (a profile --save, divergence -o, gate --save file kept "
                   "elsewhere); repeatable. Files in OUT_DIR are found by their content.")
def report_cmd(out_dir: str, dest: str | None, extra: tuple[str, ...]) -> None:
    """Write an HTML report (inline charts, no network, fits a phone) of an export's output folder:
    parity, int8 sensitivity, divergence, ranges, latency, export timeline, gate."""
    from edgeconv.report_html import write_report

    w = write_report(out_dir, dest, extra)
    click.echo(f"report: {w.path} ({w.size_bytes / 1024:.0f} KB, {len(w.charts)} charts: "
               f"{', '.join(w.charts) or 'none'}; {w.seconds:.1f} s)")


commands = [report_cmd]
