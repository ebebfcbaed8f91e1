"""`edgeconv export` and `edgeconv list`."""
from __future__ import annotations

import json
import sys

import click

from edgeconv.config import CalibMethod


def _floats(text: str | None) -> tuple[float, ...]:
    from edgeconv.errors import UserError

    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.485,0.456,0.406") from None


@click.command("export")
@click.option("--model", "model_ref", default=None, metavar="REF",
              help="package.module:factory or a .pt2 file. Default: the embedded demo.")
@click.option("--weights", default=None, metavar="FILE", help="State-dict checkpoint (loaded with weights_only=True).")
@click.option("--input-shape", default=None, metavar="1,3,H,W", help="Override the example input shape.")
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME",
              help="Target(s), repeatable; see `edgeconv list`. Default: tflite-int8.")
@click.option("-o", "--out", "out_dir", default="edgeconv-out", show_default=True, help="Output folder.")
@click.option("--per-layer", is_flag=True, help="Per-tensor int8 weights instead of per-channel.")
@click.option("--calib", default="demo", show_default=True, metavar="SRC",
              help="demo | random | image folder | .npy/.npz (calibration; the rest checks parity).")
@click.option("--calib-samples", default=128, show_default=True, type=click.IntRange(1))
@click.option("--calib-method", type=click.Choice([m.value for m in CalibMethod]), default="min-max", show_default=True)
@click.option("--percentile", default=99.99, show_default=True, help="For --calib-method percentile.")
@click.option("--calib-layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True)
@click.option("--mean", default=None, metavar="M,M,M", help="Preprocessing mean (overrides the model's).")
@click.option("--std", default=None, metavar="S,S,S", help="Preprocessing std (overrides the model's).")
@click.option("--eval-samples", default=256, show_default=True, type=click.IntRange(1))
@click.option("--sparsity", default=0.8, show_default=True, type=float,
              help="Sparse targets: fraction of 1x1/linear weights pruned (0 < s < 1).")
@click.option("--block", type=click.Choice(["4", "2", "1"]), default="4", show_default=True,
              help="Sparse targets: output channels pruned together.")
@click.option("--qat-epochs", default=0, show_default=True, type=click.IntRange(0),
              help="Quantization-aware training for N epochs instead of calibration (int8 targets).")
@click.option("--train-data", default="", metavar="MOD:FN",
              help="QAT data: package.module:function returning a labelled DataSet or (x, y). Default: bundled.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
def export_cmd(model_ref, weights, input_shape, targets, out_dir, per_layer, calib, calib_samples,
               calib_method, percentile, calib_layout, mean, std, eval_samples, sparsity, block,
               qat_epochs, train_data, as_json) -> None:
    """Export a PyTorch model to verified ONNX / TFLite artifacts with a manifest."""
    from edgeconv.config import (BlockSize, CalibSpec, ExportOptions, Granularity, QATOptions, QuantOptions,
                                 SparseOptions)
    from edgeconv.context import Progress
    from edgeconv.errors import ParityFailure
    from edgeconv.models import load_model, parse_shape
    from edgeconv.pipeline import export

    options = ExportOptions(
        targets=tuple(targets) or ("tflite-int8",), out_dir=out_dir,
        quant=QuantOptions(weights=Granularity.PER_TENSOR if per_layer else Granularity.PER_CHANNEL,
                           method=CalibMethod(calib_method), samples=calib_samples, percentile=percentile),
        calib=CalibSpec(source=calib, mean=_floats(mean), std=_floats(std), layout=calib_layout),
        eval_samples=eval_samples,
        sparse=SparseOptions(sparsity=sparsity, block=BlockSize(int(block))),
        qat=QATOptions(epochs=qat_epochs, train_data=train_data),
    )
    from edgeconv.pipeline import resolve_targets

    resolve_targets(options.targets)  # unknown target: fail before loading anything
    spec = load_model(model_ref, weights, parse_shape(input_shape) if input_shape else None)
    manifest = export(spec, options, Progress(enabled=not as_json and sys.stderr.isatty()))
    if as_json:
        click.echo(manifest.to_json())
    else:
        from edgeconv.report import print_manifest

        print_manifest(manifest, out_dir)
    failed = [a.target for a in manifest.artifacts if a.parity and not a.parity.passed]
    if failed:
        raise ParityFailure(f"parity failed for {', '.join(failed)} (details in {out_dir}/edgeconv.json)")


def targets_markdown() -> str:
    """The README's targets table, generated from the registry."""
    from edgeconv import catalog
    from edgeconv.registry import TARGETS

    catalog.load()
    rows = ["| target | what | passes | checked in |", "|---|---|---|---|"]
    for n, t in TARGETS.items():
        rows.append(f"| `{n}` | {t.description} | {' → '.join(t.passes)} | {t.runtime} |")
    return "\n".join(rows)


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True, help="The targets table as markdown (for the README).")
def list_cmd(as_json: bool, markdown: bool) -> None:
    """List the registered targets, passes and devices."""
    from edgeconv import catalog
    from edgeconv.registry import DEVICES, PASSES, TARGETS

    catalog.load()
    if markdown:
        click.echo(targets_markdown())
        return
    data = {
        "targets": {n: {"passes": list(t.passes), "runtime": t.runtime, "description": t.description}
                    for n, t in TARGETS.items()},
        "passes": PASSES.names(),
        # the registry holds each device under its name and its aliases: list each device once
        "devices": sorted({getattr(d, "name", n) for n, d in DEVICES.items()}),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo("targets:")
    for n, t in data["targets"].items():
        click.echo(f"  {n:<20} {t['description']}  [passes: {' → '.join(t['passes'])}]")
    click.echo("passes:  " + ", ".join(data["passes"]))
    click.echo("devices: " + (", ".join(data["devices"]) or "(none)"))


commands = [export_cmd, list_cmd]
