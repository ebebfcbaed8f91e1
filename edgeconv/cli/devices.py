"""`edgeconv devices` and `edgeconv profile`. Only click and the standard library at top level."""
from __future__ import annotations

import sys

import click

DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi", "hexagon", "qnn", "cuda", "ane", "all")


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def devices_cmd(as_json: bool) -> None:
    """List the device descriptors and whether each can be measured here and now."""
    import json

    from edgeconv.devices.catalog import backend_for
    import edgeconv.devices.catalog  # noqa: F401  (fills DEVICES)
    from edgeconv.registry import DEVICES

    rows = []
    for dev in {d.name: d for _, d in DEVICES.items()}.values():
        why = backend_for(dev).reachable(dev)
        rows.append({"name": dev.name, "aliases": list(dev.aliases), "kind": dev.kind.value, "soc": dev.soc,
                     "cores": dev.cores, "delegates": [d.value for d in dev.delegates],
                     "accelerators": [a.name for a in dev.accelerators],
                     "reachable": why is None, "why_not": why or "",
                     "cost_source": dev.cost.get("source", ""),
                     "cost_calibrated": bool(dev.cost.get("calibrated", False))})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="devices")
    for col in ("name", "kind", "SoC", "delegates", "here and now"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        table.add_row(name, r["kind"], r["soc"], ", ".join(r["delegates"]),
                      "[green]reachable[/]" if r["reachable"] else f"[yellow]not reachable:[/] {escape(r['why_not'])}")
    Console(width=max(Console().width, 140)).print(table)


@click.command("profile")
@click.argument("model_or_artifact")
@click.option("--device", "-d", default="host", show_default=True, metavar="NAME",
              help="A device name or alias (see `edgeconv devices`) or a descriptor .toml of your own.")
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--runs", default=50, show_default=True, type=int)
@click.option("--warmup", default=5, show_default=True, type=int)
@click.option("--delegate", default=None, metavar="NAME",
              help=f"One of {', '.join(DELEGATES)} (qnn: Qualcomm's QNN TFLite delegate; ONNX Runtime's QNN "
                   "execution provider is the qnn-ep table of check-delegate); default: the device's own.")
@click.option("--benchmark-binary", default=None, metavar="PATH",
              help="Android: a benchmark_model binary built for the phone (android_aarch64).")
@click.option("--target", "-t", default="tflite-int8", show_default=True,
              help="When given a model rather than an artifact: export to this target first.")
@click.option("-o", "--out", "out_dir", default="edgeconv-out", show_default=True,
              help="Where a model is exported to before profiling.")
@click.option("--per-op/--no-per-op", default=True, show_default=True,
              help="Collect per-op times (benchmark_model's op profiling adds a little overhead).")
@click.option("--require-measured", is_flag=True, help="Fail (exit 2) instead of predicting when the device is unreachable.")
@click.option("--allow-failed-parity", is_flag=True,
              help="When given a model: profile its export even if it failed parity (the failure is printed "
                   "first and recorded in the report); otherwise that is exit 1.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, help="Seconds allowed for each remote step.")
@click.option("--json", "as_json", is_flag=True, help="Print the LatencyReport as JSON.")
@click.option("--save", default=None, metavar="FILE", help="Also write the LatencyReport JSON to FILE.")
def profile_cmd(model_or_artifact, device, threads, runs, warmup, delegate, benchmark_binary, target,
                out_dir, per_op, require_measured, allow_failed_parity, timeout_s, as_json, save) -> None:
    """Measure latency on a device (or this host); predict it when the device is not reachable."""
    from pathlib import Path

    from edgeconv.context import Progress
    from edgeconv.devices.base import Delegate, ProfileOptions
    from edgeconv.devices.profile import headline, profile
    from edgeconv.errors import UserError
    from edgeconv.results import atomic_write

    if delegate is not None and delegate not in DELEGATES:
        raise UserError(f"unknown delegate {delegate!r}; choose one of: {', '.join(DELEGATES)}")
    options = ProfileOptions(threads=threads, runs=runs, warmup=warmup,
                             delegate=Delegate(delegate) if delegate else None,
                             per_op=per_op, benchmark_binary=benchmark_binary, timeout_s=timeout_s)
    report = profile(model_or_artifact, device, options, target=target, out_dir=out_dir,
                     require_measured=require_measured, allow_failed_parity=allow_failed_parity,
                     warn=lambda line: click.echo(line, err=True),
                     progress=Progress(enabled=not as_json and sys.stderr.isatty()))
    if save:
        atomic_write(Path(save), report.to_json())
    if as_json:
        click.echo(report.to_json())
    else:
        print_report(report, headline(report))


def print_report(report, first_line: str) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    def ms(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g} ms"

    console = Console()
    click.echo(first_line)  # one unwrapped line: scripts and CI logs read it
    t = Table(show_header=False)
    t.add_column(style="bold")
    t.add_column()
    if report.method == "predicted":
        rows = [("latency", ms(report.p50_ms)), ("runtime", report.runtime)]
    else:
        rows = [("p50", ms(report.p50_ms)), ("p90", ms(report.p90_ms)), ("min", ms(report.min_ms)),
                ("std", ms(report.std_ms)), ("runs", f"{report.iterations} after {report.warmup} warm-up"),
                ("threads", str(report.threads)), ("runtime", report.runtime),
                ("delegate", report.environment.get("delegate", "")),
                ("peak memory", "n/a" if report.peak_memory_mb is None else f"{report.peak_memory_mb:.1f} MB")]
    if report.environment.get("parity"):  # --allow-failed-parity: the number is for a failed artifact
        rows.append(("parity", report.environment["parity"]))
    for k, v in (*rows, ("artifact sha256", report.artifact_sha256)):
        t.add_row(k, v)
    console.print(t)
    if report.per_op:
        ops = Table(title="per op (slowest first)")
        placed = any("runs_on" in op for op in report.per_op)  # a prediction that knows the partitions
        for col in ("op", "name", "avg", "unit", *(("runs on",) if placed else ())):
            ops.add_column(col, overflow="fold")
        def avg(op):  # measured rows carry "avg" (+ "unit"); the cost model's carry "ms"
            v = op.get("avg", op.get("ms"))
            return -1.0 if v is None else float(v)

        for op in sorted(report.per_op, key=avg, reverse=True)[:15]:
            ops.add_row(str(op.get("op", op.get("class", ""))), str(op.get("name", "")),
                        f"{avg(op):.4g}" if avg(op) >= 0 else "n/a", str(op.get("unit", "ms")),
                        *((str(op.get("runs_on", "")),) if placed else ()))
        console.print(ops)
    elif report.environment.get("per_op"):
        console.print(f"per op: {report.environment['per_op']}", markup=False, highlight=False)


commands = [devices_cmd, profile_cmd]
