"""Options shared by every command that loads a model and quantizes it (export, analyze,
divergence): one definition, so the flags mean the same thing everywhere."""
from __future__ import annotations

from typing import Any, Callable

import click

from edgeconv.config import CalibMethod

_MODEL = (
    click.option("--model", "model_ref", default=None, metavar="REF",
                 help="package.module:factory or a .pt2 file. Default: the embedded demo."),
    click.option("--weights", default=None, metavar="FILE", help="State-dict checkpoint (loaded with weights_only=True)."),
    click.option("--input-shape", default=None, metavar="1,3,H,W", help="Override the example input shape."),
)
_QUANT = (
    click.option("--per-layer", is_flag=True, help="Per-tensor int8 weights instead of per-channel."),
    click.option("--calib", default="demo", show_default=True, metavar="SRC",
                 help="demo | random | image folder | .npy/.npz (calibration; the samples after it are held out)."),
    click.option("--calib-samples", default=128, show_default=True, type=click.IntRange(1)),
    click.option("--calib-method", type=click.Choice([m.value for m in CalibMethod]), default="min-max", show_default=True),
    click.option("--percentile", default=99.99, show_default=True, help="For --calib-method percentile."),
    click.option("--calib-layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True),
    click.option("--mean", default=None, metavar="M,M,M", help="Preprocessing mean (overrides the model's)."),
    click.option("--std", default=None, metavar="S,S,S", help="Preprocessing std (overrides the model's)."),
)


def _apply(options: tuple) -> Callable:
    def deco(f: Callable) -> Callable:
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


model_options = _apply(_MODEL)
quant_options = _apply(_QUANT)


def load_spec(kw: dict[str, Any]) -> Any:
    """The ModelSpec for --model/--weights/--input-shape (consumes those keys)."""
    from edgeconv.models import load_model, parse_shape

    shape = kw.pop("input_shape")
    return load_model(kw.pop("model_ref"), kw.pop("weights"), parse_shape(shape) if shape else None)


def _floats(text: str | None) -> tuple[float, ...]:
    from edgeconv.errors import UserError

    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.485,0.456,0.406") from None


def quant_and_calib(kw: dict[str, Any]) -> dict[str, Any]:
    """ExportOptions fields `quant` and `calib` from the shared flags (consumes those keys)."""
    from edgeconv.config import CalibSpec, Granularity, QuantOptions

    quant = QuantOptions(weights=Granularity.PER_TENSOR if kw.pop("per_layer") else Granularity.PER_CHANNEL,
                         method=CalibMethod(kw.pop("calib_method")), samples=kw.pop("calib_samples"),
                         percentile=kw.pop("percentile"))
    calib = CalibSpec(source=kw.pop("calib"), mean=_floats(kw.pop("mean")), std=_floats(kw.pop("std")),
                      layout=kw.pop("calib_layout"))
    return {"quant": quant, "calib": calib}


def progress(as_json: bool) -> Any:
    import sys

    from edgeconv.context import Progress

    return Progress(enabled=not as_json and sys.stderr.isatty())
