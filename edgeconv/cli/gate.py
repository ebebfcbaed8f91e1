"""`edgeconv gate BUDGETS`: exit 0 when every budget holds, 1 on any breach, 2 on bad input.

`edgeconv gate BUDGETS --shard I/N --save shard-I.json` runs one slice of the budgets (parallel CI
jobs); `edgeconv gate merge shard-*.json` joins them into the verdict an unsharded run gives.
"""
from __future__ import annotations

import sys

import click

_REPORT_OPTIONS = (
    click.option("--junit", default=None, metavar="FILE", help="Write JUnit XML, one test case per check."),
    click.option("--summary", default=None, metavar="FILE",
                 help="Append a markdown summary to FILE (e.g. \"$GITHUB_STEP_SUMMARY\")."),
    click.option("--html", default=None, metavar="FILE",
                 help="Write a self-contained HTML report (charts inline, no network) to FILE."),
    click.option("--save", default=None, metavar="FILE",
                 help="Write the results JSON (what `gate merge` reads) to FILE."),
    click.option("--write-baseline", default=None, metavar="FILE", help="Write this run's results as a baseline file."),
    click.option("--json", "as_json", is_flag=True, help="Print results as JSON instead of a table."),
)


def _report_options(f):
    for opt in reversed(_REPORT_OPTIONS):
        f = opt(f)
    return f


class _GateGroup(click.Group):
    """`gate BUDGETS ...` runs the budgets; `gate merge RESULTS...` merges shards."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("gate", cls=_GateGroup, options_metavar="", subcommand_metavar="BUDGETS [OPTIONS] | merge RESULTS... [OPTIONS]")
def gate_group() -> None:
    """Check models against latency, size and accuracy budgets (TOML) on their target devices.

    \b
      edgeconv gate BUDGETS [--baseline F] [--junit F] [--summary F] [--html F] [--save F]
      edgeconv gate BUDGETS --shard I/N --save shard-I.json     one slice, for parallel CI jobs
      edgeconv gate merge shard-*.json [--junit F] [--summary F] [--html F]
    """


@gate_group.command("run")
@click.argument("budgets", metavar="BUDGETS")
@click.option("--baseline", default=None, metavar="FILE",
              help="A baseline written by --write-baseline: fail when p50 is slower than it by more than regression_pct.")
@click.option("--shard", default=None, metavar="I/N",
              help="Run only shard I of N (budgets of one model and target stay together); merge the "
                   "shards' --save files with `edgeconv gate merge`.")
@_report_options
def gate_cmd(budgets, baseline, shard, **out) -> None:
    """Check the budgets in BUDGETS (all of them, or one --shard)."""
    from edgeconv.context import Progress
    from edgeconv.gate.budgets import load_baseline, load_budgets
    from edgeconv.gate.collect import collect
    from edgeconv.gate.rules import evaluate
    from edgeconv.gate.shard import WHOLE, budgets_sha256, parse_shard, select

    part = parse_shard(shard) if shard is not None else WHOLE  # bad --shard: fail before anything else
    spec = load_budgets(budgets)
    base = load_baseline(baseline) if baseline else None  # bad baseline: fail before any export
    ran = select(spec, part)
    if not ran.entries:
        click.echo(f"gate shard {part}: no budgets fall in this shard (fewer model × target groups than shards)",
                   err=True)
    measured = collect(ran, Progress(enabled=not out["as_json"] and sys.stderr.isatty())) if ran.entries else {}
    results = evaluate(ran, measured, base)
    _emit(spec, part, ran, results, measured, base, budgets_sha256(budgets), (), **out)


@gate_group.command("merge")
@click.argument("results_files", nargs=-1, required=True, metavar="RESULTS...")
@_report_options
def merge_cmd(results_files, **out) -> None:
    """Merge the --save files of every shard into one verdict, JUnit file, summary and report."""
    from edgeconv.gate.rules import evaluate
    from edgeconv.gate.shard import WHOLE, load_results, merge

    m = merge(load_results(p) for p in results_files)
    results = evaluate(m.budgets, m.measured, m.baseline)
    _emit(m.budgets, WHOLE, m.budgets, results, m.measured, m.baseline, m.shards[0].sha256,
          tuple(str(s.path) for s in m.shards), **out)


def _emit(spec, part, ran, results, measured, base, sha256, shard_files, *, junit, summary, html, save,
          write_baseline, as_json) -> None:
    """Every output of a gate run (plain or merged), then exit 1 on a breach."""
    import json
    from pathlib import Path

    from edgeconv.gate.budgets import GateBreach, baseline_json
    from edgeconv.gate.reports import breach_lines, junit_xml, markdown
    from edgeconv.gate.shard import results_doc
    from edgeconv.results import atomic_write

    doc = results_doc(spec, part, ran, results, measured, base, sha256)
    if junit:
        atomic_write(Path(junit), junit_xml(results))
    if summary:
        with open(summary, "a", encoding="utf-8") as f:  # the step summary file is appended to
            f.write(markdown(results))
    if save:
        atomic_write(Path(save), json.dumps(doc, indent=2))
    if write_baseline:
        atomic_write(Path(write_baseline), baseline_json(measured))
    if html:
        from edgeconv.report_html import write_gate_report

        write_gate_report(doc, Path(html), shard_files)
    bad = [r for r in results if not r.passed]
    if as_json:
        click.echo(json.dumps(doc, indent=2))
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


commands = [gate_group]
