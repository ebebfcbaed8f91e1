"""`edgeconv analyze`: which layer breaks int8, and (`--max-drop`) which layers to keep in float."""
from __future__ import annotations

import json
import sys

import click

from edgeconv.config import CalibMethod


@click.command("analyze")
@click.option("--model", "model_ref", default=None, metavar="REF",
              help="package.module:factory or a .pt2 file. Default: the embedded demo.")
@click.option("--weights", default=None, metavar="FILE", help="State-dict checkpoint (loaded with weights_only=True).")
@click.option("--input-shape", default=None, metavar="1,3,H,W", help="Override the example input shape.")
@click.option("--per-layer", is_flag=True, help="Per-tensor int8 weights instead of per-channel.")
@click.option("--calib", default="demo", show_default=True, metavar="SRC",
              help="demo | random | image folder | .npy/.npz (calibration; the rest is evaluated).")
@click.option("--calib-samples", default=128, show_default=True, type=click.IntRange(1))
@click.option("--calib-method", type=click.Choice([m.value for m in CalibMethod]), default="min-max", show_default=True)
@click.option("--percentile", default=99.99, show_default=True, help="For --calib-method percentile.")
@click.option("--eval-samples", default=128, show_default=True, type=click.IntRange(1))
@click.option("--max-drop", type=float, default=None, metavar="X",
              help="Keep the fewest most-sensitive layers in float until the metric drops by at most X.")
@click.option("--evaluator", default=None, metavar="MODULE:FN",
              help="Task metric fn(outputs, data) -> float, higher is better. Default: label accuracy, "
                   "else agreement with the float model.")
@click.option("-o", "--out", "out_path", default=None, metavar="FILE", help="Also write the report as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def analyze_cmd(model_ref, weights, input_shape, per_layer, calib, calib_samples, calib_method, percentile,
                eval_samples, max_drop, evaluator, out_path, as_json) -> None:
    """Rank conv/linear layers by int8 sensitivity; optionally choose layers to keep in float."""
    from pathlib import Path

    from edgeconv.analyze import analyze_model
    from edgeconv.config import CalibSpec, ExportOptions, Granularity, QuantOptions
    from edgeconv.context import Progress
    from edgeconv.fallback import load_evaluator
    from edgeconv.models import load_model, parse_shape
    from edgeconv.results import atomic_write

    if evaluator:
        load_evaluator(evaluator)  # fail on a bad reference before loading the model
    options = ExportOptions(
        targets=(), quant=QuantOptions(weights=Granularity.PER_TENSOR if per_layer else Granularity.PER_CHANNEL,
                                       method=CalibMethod(calib_method), samples=calib_samples,
                                       percentile=percentile),
        calib=CalibSpec(source=calib), eval_samples=eval_samples,
    )
    spec = load_model(model_ref, weights, parse_shape(input_shape) if input_shape else None)
    result = analyze_model(spec, options, max_drop, evaluator,
                           Progress(enabled=not as_json and sys.stderr.isatty()))
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
@click.option("--model", "model_ref", default=None, metavar="REF",
              help="The model the artifacts were exported from. Default: the embedded demo.")
@click.option("--weights", default=None, metavar="FILE", help="State-dict checkpoint (loaded with weights_only=True).")
@click.option("--input-shape", default=None, metavar="1,3,H,W", help="Override the example input shape.")
@click.option("--per-layer", is_flag=True, help="The artifacts were exported with --per-layer.")
@click.option("--calib", default="demo", show_default=True, metavar="SRC", help="Same calibration as the export.")
@click.option("--calib-samples", default=128, show_default=True, type=click.IntRange(1))
@click.option("--calib-method", type=click.Choice([m.value for m in CalibMethod]), default="min-max", show_default=True)
@click.option("--percentile", default=99.99, show_default=True)
@click.option("--samples", default=8, show_default=True, type=click.IntRange(1), help="Held-out inputs compared.")
@click.option("--steps", default=3.0, show_default=True,
              help="Name the first tensor off by more than this many steps (TFLite's fixed-point "
                   "requantization alone reaches 3 on deep chains).")
@click.option("--json", "as_json", is_flag=True)
def divergence_cmd(artifacts, model_ref, weights, input_shape, per_layer, calib, calib_samples, calib_method,
                   percentile, samples, steps, as_json) -> None:
    """Name the first layer where each int8 artifact (.onnx, .tflite, .mlpackage) drifts from torch."""
    from pathlib import Path

    from edgeconv import catalog
    from edgeconv.config import CalibSpec, ExportOptions, Granularity, QuantOptions
    from edgeconv.context import Context
    from edgeconv.divergence import divergence
    from edgeconv.graph import capture
    from edgeconv.models import load_model, parse_shape
    from edgeconv.pipeline import run_passes, split_data

    catalog.load()
    options = ExportOptions(
        targets=(), quant=QuantOptions(weights=Granularity.PER_TENSOR if per_layer else Granularity.PER_CHANNEL,
                                       method=CalibMethod(calib_method), samples=calib_samples,
                                       percentile=percentile),
        calib=CalibSpec(source=calib), eval_samples=samples,
    )
    spec = load_model(model_ref, weights, parse_shape(input_shape) if input_shape else None)
    calib_set, evalset = split_data(spec, options, need_calib=True)
    ctx = Context(options=options, model=spec, calib=calib_set)
    graph = run_passes(capture(spec.module, spec.example_inputs), ctx, ("fold-conv-bn", "quantize", "cleanup"))
    reports = [divergence(graph, Path(a), evalset.x, steps) for a in artifacts]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for r in reports:
            click.echo(r.summary())
    if any(r.first_divergent is not None for r in reports):
        sys.exit(1)


commands = [analyze_cmd, divergence_cmd]
