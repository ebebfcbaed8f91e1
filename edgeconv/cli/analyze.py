"""`edgeconv analyze`: which layer breaks int8, and (`--max-drop`) which layers to keep in float."""
from __future__ import annotations

import json
import sys

import click

from edgeconv.cli.options import load_spec, model_options, progress, quant_and_calib, quant_options


@click.command("analyze")
@model_options
@quant_options
@click.option("--eval-samples", default=128, show_default=True, type=click.IntRange(1))
@click.option("--max-drop", type=float, default=None, metavar="X",
              help="Keep the fewest most-sensitive layers in float until the metric drops by at most X.")
@click.option("--evaluator", default=None, metavar="MODULE:FN",
              help="Task metric fn(outputs, data) -> float, higher is better. Default: label accuracy, "
                   "else agreement with the float model.")
@click.option("-o", "--out", "out_path", default=None, metavar="FILE", help="Also write the report as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def analyze_cmd(**kw) -> None:
    """Rank conv/linear layers by int8 sensitivity; optionally choose layers to keep in float."""
    from pathlib import Path

    from edgeconv.pipeline import analyze_model
    from edgeconv.config import ExportOptions
    from edgeconv.quant.fallback import load_evaluator
    from edgeconv.results import atomic_write

    as_json, out_path, max_drop, evaluator = kw.pop("as_json"), kw.pop("out_path"), kw.pop("max_drop"), kw.pop("evaluator")
    if evaluator:
        load_evaluator(evaluator)  # fail on a bad reference before loading the model
    options = ExportOptions(targets=(), **quant_and_calib(kw), eval_samples=kw.pop("eval_samples"))
    result = analyze_model(load_spec(kw), options, max_drop, evaluator, progress(as_json))
    text = json.dumps(result.to_dict(), indent=2)
    if out_path:
        atomic_write(Path(out_path), text)
    if as_json:
        click.echo(text)
        return
    click.echo(result.sensitivity.table())
    fb = result.fallback
    if fb is not None:
        kept = ", ".join(f"{m or n}" for n, m in zip(fb.float_nodes, fb.float_modules)) or "none needed"
        click.echo(f"--max-drop {fb.max_drop:g} ({fb.metric}): float {fb.float_score:.4g}, int8 {fb.int8_score:.4g}, "
                   f"with float layers {fb.final_score:.4g}; keep in float: {kept}")


@click.command("divergence")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(exists=True))
@model_options
@quant_options
@click.option("--samples", default=8, show_default=True, type=click.IntRange(1), help="Held-out inputs compared.")
@click.option("--steps", default=3.0, show_default=True,
              help="Name the first tensor off by more than this many steps (TFLite's fixed-point "
                   "requantization alone reaches 3 on deep chains).")
@click.option("-o", "--out", "out_path", default=None, metavar="FILE",
              help="Also write the reports as JSON (`edgeconv report` reads OUT_DIR/divergence.json).")
@click.option("--json", "as_json", is_flag=True)
def divergence_cmd(artifacts, samples, steps, out_path, as_json, **kw) -> None:
    """Name the first layer where each int8 artifact (.onnx, .tflite, .mlpackage) drifts from torch."""
    from pathlib import Path

    from edgeconv.config import ExportOptions
    from edgeconv.quant.divergence import check_artifact, divergence
    from edgeconv.pipeline import quantized_graph

    for a in artifacts:  # a wrong or corrupt artifact fails before any calibration work
        check_artifact(a)
    options = ExportOptions(targets=(), **quant_and_calib(kw), eval_samples=samples)
    graph, _, evalset = quantized_graph(load_spec(kw), options, progress(as_json), upto="cleanup")
    reports = [divergence(graph, Path(a), evalset.batch, steps, isolate=True) for a in artifacts]  # every input
    text = json.dumps([r.to_dict() for r in reports], indent=2)
    if out_path:
        from edgeconv.results import atomic_write

        atomic_write(Path(out_path), text)
    if as_json:
        click.echo(text)
    else:
        for r in reports:
            click.echo(r.summary())
    if any(r.first_divergent is not None for r in reports):
        sys.exit(1)


commands = [analyze_cmd, divergence_cmd]
