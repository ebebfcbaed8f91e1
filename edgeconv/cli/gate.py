"""`edgeconv gate BUDGETS`: exit 0 when every budget holds, 1 on any breach, 2 on bad input."""
from __future__ import annotations

import sys

import click


@click.command("gate")
@click.argument("budgets", metavar="BUDGETS")
@click.option("--baseline", default=None, metavar="FILE",
              help="A baseline written by --write-baseline: fail when p50 is slower than it by more than regression_pct.")
@click.option("--write-baseline", default=None, metavar="FILE", help="Write this run's results as a baseline file.")
@click.option("--junit", default=None, metavar="FILE", help="Write JUnit XML, one test case per check.")
@click.option("--summary", default=None, metavar="FILE",
              help="Append a markdown summary to FILE (e.g. \"$GITHUB_STEP_SUMMARY\").")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON instead of a table.")
def gate_cmd(budgets, baseline, write_baseline, junit, summary, as_json) -> None:
    """Check models against latency, size and accuracy budgets (TOML) on their target devices."""
    import json
    from pathlib import Path

    from edgeconv.context import Progress
    from edgeconv.gate.budgets import GateBreach, baseline_json, load_baseline, load_budgets
    from edgeconv.gate.collect import collect
    from edgeconv.gate.reports import breach_lines, junit_xml, markdown
    from edgeconv.gate.rules import evaluate
    from edgeconv.results import atomic_write

    spec = load_budgets(budgets)
    base = load_baseline(baseline) if baseline else None  # bad baseline: fail before any export
    measured = collect(spec, Progress(enabled=not as_json and sys.stderr.isatty()))
    results = evaluate(spec, measured, base)
    if junit:
        atomic_write(Path(junit), junit_xml(results))
    if summary:
        with open(summary, "a", encoding="utf-8") as f:  # the step summary file is appended to
            f.write(markdown(results))
    if write_baseline:
        atomic_write(Path(write_baseline), baseline_json(measured))
    bad = [r for r in results if not r.passed]
    if as_json:
        click.echo(json.dumps({"passed": not bad, "results": [r.to_dict() for r in results],
                               "measured": {k: m.to_dict() for k, m in measured.items()}}, indent=2))
    else:
        _print_table(results)
    if bad:
        for line in breach_lines(results):
            click.echo(line, err=True)
        raise GateBreach(f"{len(bad)} of {len(results)} checks breached their budget")


def _print_table(results) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="edgeconv gate")
    for col in ("", "model / target / device", "check", "value", "limit", "how"):
        t.add_column(col, overflow="fold")
    for r in results:
        mark = "[red]FAIL[/]" if not r.passed else ("[dim]skip[/]" if r.value is None else "[green]ok[/]")
        t.add_row(mark, escape(r.name), r.metric, "n/a" if r.value is None else f"{r.value:.4g}",
                  f"{r.limit:g}", escape(r.message))
    Console(width=max(Console().width, 140)).print(t)


commands = [gate_cmd]
