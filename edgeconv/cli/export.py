"""`edgeconv export` and `edgeconv list`."""
from __future__ import annotations

import json
from typing import Any

import click

from edgeconv.cli.options import load_spec, model_options, progress, quant_and_calib, quant_options


@click.command("export")
@model_options
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME",
              help="Target(s), repeatable; see `edgeconv list`. Default: tflite-int8.")
@click.option("-o", "--out", "out_dir", default="edgeconv-out", show_default=True, help="Output folder.")
@quant_options
@click.option("--eval-samples", default=256, show_default=True, type=click.IntRange(1))
@click.option("--sparsity", default="0.8", show_default=True, metavar="S[,S...]",
              help="Sparse targets: fraction of 1x1/linear weights pruned (0 < s < 1); a list (0.5,0.7,0.9) "
                   "tabulates accuracy against predicted ARM speed-up and exports the sparsest level within --max-drop.")
@click.option("--block", type=click.Choice(["4", "2", "1"]), default="4", show_default=True,
              help="Sparse targets: output channels pruned together.")
@click.option("--qat-epochs", default=0, show_default=True, type=click.IntRange(0),
              help="Quantization-aware training for N epochs instead of calibration (int8 targets).")
@click.option("--qat-lr", default=1e-3, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="QAT learning rate (AdamW, cosine decay). Fine-tuning a pretrained net wants less, e.g. 1e-5.")
@click.option("--prune-epochs", default=0, show_default=True, type=click.IntRange(0),
              help="Sparse targets: prune gradually while fine-tuning for N epochs instead of in one shot.")
@click.option("--train-data", default="", metavar="MOD:FN",
              help="QAT / pruning data: package.module:function returning a labelled DataSet or (x, y). Default: bundled.")
@click.option("--max-drop", type=float, default=None, metavar="X",
              help="Keep the fewest most-sensitive layers in float until the task metric drops by at most X.")
@click.option("--evaluator", default="", metavar="MOD:FN",
              help="Task metric fn(outputs, data) -> float for --max-drop. Default: label accuracy, else "
                   "agreement with float.")
@click.option("--quant-config", "quant_config", default=None, metavar="FILE",
              help="Which layers are int8, as data (global / op type / layer; null = float): a file, or an "
                   "edgeconv.json whose quant_config (e.g. an earlier --max-drop's choice) is replayed.")
@click.option("--int8-for", "int8_for", type=click.Choice(["npu", "cpu"]), default="npu", show_default=True,
              help="npu: full-integer (what a DSP/NPU delegate needs). cpu: keep float the op types XNNPACK "
                   "cannot run in int8 (GELU, softmax, hard-swish, LayerNorm), as a quant config under --quant-config.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=None, metavar="C",
              help="Lower (or raise) every artifact's cosine floor vs torch fp32 explicitly. Default: the "
                   "target's (int8: 0.95), whatever the calibration gives.")
@click.option("--min-top1", type=click.FloatRange(0, 1), default=None, metavar="A",
              help="Lower (or raise) every artifact's decisive top-1 agreement floor vs torch fp32 "
                   "explicitly. Default: the target's (int8: 0.9, or the simulation's own less 0.02).")
@click.option("--float-ops", "float_ops", type=click.Choice(["warn", "error"]), default="warn", show_default=True,
              help="A float op left in an int8 artifact: counted and named (warn), or the artifact fails "
                   "naming each one (error: what a DSP/NPU deployment needs).")
@click.option("--analyze", is_flag=True, help="Also rank layers by int8 sensitivity (analyze.json).")
@click.option("--report", "html_report", is_flag=True,
              help="Also write OUT/report.html: charts of parity, sensitivity, ranges and timings (no network).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
def export_cmd(**kw) -> None:
    """Export a PyTorch model to verified ONNX / TFLite / CoreML artifacts with a manifest."""
    from edgeconv.config import BlockSize, ExportOptions, FloatOpsPolicy, PruneOptions, QATOptions
    from edgeconv.errors import ParityFailure, StageFailure
    from edgeconv.pipeline import export, resolve_targets
    from edgeconv.prepare.prune import check_options

    as_json, html_report = kw.pop("as_json"), kw.pop("html_report")
    config_file, int8_for = kw.pop("quant_config"), kw.pop("int8_for")
    if config_file:
        from edgeconv.quant.fallback import read_quant_config

        kw["quant_config"] = read_quant_config(config_file)
    if int8_for != "npu":
        from edgeconv.config import INT8_FOR, QuantConfig

        kw["quant_config"] = (kw.get("quant_config") or QuantConfig()).over(INT8_FOR[int8_for])
    options = ExportOptions(
        targets=tuple(kw.pop("targets")) or ("tflite-int8",), out_dir=kw.pop("out_dir"),
        **quant_and_calib(kw), eval_samples=kw.pop("eval_samples"),
        sparse=sparse_options(kw.pop("sparsity"), BlockSize(int(kw.pop("block")))),
        qat=QATOptions(epochs=kw.pop("qat_epochs"), train_data=kw["train_data"], lr=kw.pop("qat_lr")),
        prune=PruneOptions(epochs=kw.pop("prune_epochs"), train_data=kw.pop("train_data")),
        max_drop=kw.pop("max_drop"), evaluator=kw.pop("evaluator"), analyze=kw.pop("analyze"),
        quant_config=kw.pop("quant_config", None), min_cosine=kw.pop("min_cosine"), min_top1=kw.pop("min_top1"),
        float_ops=FloatOpsPolicy(kw.pop("float_ops")),
    )
    resolve_targets(options.targets)  # unknown target: fail before loading anything
    check_options(options)  # --prune-epochs / a list of --sparsity levels without a sparse target
    if options.evaluator:
        from edgeconv.quant.fallback import load_evaluator

        load_evaluator(options.evaluator)
    try:
        manifest = export(load_spec(kw), options, progress(as_json))
    except StageFailure as e:  # the manifest is written: show what did export, then the one line
        if e.manifest is not None:
            _show(e.manifest, options, as_json)
            if html_report:
                _html(options.out_dir, as_json)
        raise
    _show(manifest, options, as_json)
    if html_report:  # written whatever the parity verdict: a failed export is when it helps most
        _html(options.out_dir, as_json)
    failed = [a.target for a in manifest.artifacts if a.parity and not a.parity.passed]
    if failed:
        raise ParityFailure(f"parity failed for {', '.join(failed)} (details in {options.out_dir}/edgeconv.json)")


def _html(out_dir: str, as_json: bool) -> None:
    from edgeconv.report_html import write_report

    w = write_report(out_dir)
    click.echo(f"report: {w.path}", err=as_json)


def _show(manifest: Any, options: Any, as_json: bool) -> None:
    if as_json:
        click.echo(manifest.to_json())
    else:
        from edgeconv.report import print_manifest

        print_manifest(manifest, options.out_dir)
        if manifest.pruning is not None:
            click.echo(manifest.pruning.table())
        if options.analyze:
            from pathlib import Path

            from edgeconv.quant.sensitivity import SensitivityReport
            from edgeconv.pipeline import ANALYSIS

            path = Path(options.out_dir) / ANALYSIS
            if path.is_file():
                click.echo(SensitivityReport.from_dict(json.loads(path.read_text())).table())
                click.echo(f"sensitivity: {path}")


def sparse_options(text: str, block: "Any") -> "Any":
    """`--sparsity 0.8` or `--sparsity 0.5,0.7,0.9` (a trade-off sweep) as SparseOptions."""
    from edgeconv.config import SparseOptions
    from edgeconv.errors import UserError

    try:
        levels = tuple(sorted({float(v) for v in text.split(",")}))
    except ValueError:
        raise UserError(f"--sparsity {text!r} is not a number or a comma-separated list of numbers, "
                        "e.g. 0.8 or 0.5,0.7,0.8,0.9") from None
    return SparseOptions(sparsity=levels[-1], block=block, levels=levels if len(levels) > 1 else ())


def targets_markdown() -> str:
    """The README's targets table, generated from the registry."""
    from edgeconv import registrations
    from edgeconv.registry import TARGETS

    registrations.load()
    rows = ["| target | what | passes | checked in |", "|---|---|---|---|"]
    for n, t in TARGETS.items():
        rows.append(f"| `{n}` | {t.description} | {' → '.join(t.passes)} | {t.runtime} |")
    return "\n".join(rows)


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True, help="The targets table as markdown (for the README).")
def list_cmd(as_json: bool, markdown: bool) -> None:
    """List the registered targets, passes and devices."""
    from edgeconv import registrations
    from edgeconv.devices.delegates import names as delegate_tables
    from edgeconv.pipeline import STEPS
    from edgeconv.registry import DEVICES, PASSES, TARGETS

    registrations.load()
    if markdown:
        click.echo(targets_markdown())
        return
    data = {
        "targets": {n: {"passes": list(t.passes), "runtime": t.runtime, "description": t.description}
                    for n, t in TARGETS.items()},
        "passes": PASSES.names(),
        "pass_options": {n: list(getattr(fn, "reads", ())) for n, fn in PASSES.items()},
        "step_options": {n: list(fn.reads) for n, fn in STEPS.items()},
        # the registry holds each device under its name and its aliases: list each device once
        "devices": sorted({getattr(d, "name", n) for n, d in DEVICES.items()}),
        "delegate_tables": list(delegate_tables()),  # `edgeconv check-delegate --delegate`
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo("targets:")
    for n, t in data["targets"].items():
        click.echo(f"  {n:<20} {t['description']}  [passes: {' → '.join(t['passes'])}]")
    click.echo("passes (and the options each reads):")
    for n, reads in data["pass_options"].items():
        click.echo(f"  {n:<20} {', '.join(reads) or '—'}")
    click.echo("pipeline steps (and the options each reads):")
    for n, reads in data["step_options"].items():
        click.echo(f"  {n:<22} {', '.join(reads) or '—'}")
    click.echo("devices: " + (", ".join(data["devices"]) or "(none)"))
    click.echo("delegate tables (check-delegate): " + ", ".join(data["delegate_tables"]))


commands = [export_cmd, list_cmd]
