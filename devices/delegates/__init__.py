"""How each accelerator will run a deployed file: support tables per delegate, as data with sources.

    check(path, "nnapi")      -> Verdict (predicted from the table)
    measure(path, "xnnpack")  -> Verdict (measured: what ai-edge-litert's XNNPACK delegate took here)

Tables: `*.toml` beside this module (rules.py says how they are read and how partitions are
counted). Readers: `tflite_ops.read_ops` (.tflite) and `onnx_ops.read_ops` (.onnx) give the neutral
op list (`edgeconv.opview.OpView`) the rules test. Heavy imports stay inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.errors import UserError

if TYPE_CHECKING:
    from edgeconv.devices.delegates.rules import Verdict
    from edgeconv.opview import OpView

# CLI names -> table files; `ane` and `hexagon` included.
SUFFIXES = {"tflite": (".tflite",), "onnx": (".onnx",), "mlpackage": (".mlpackage", ".mlmodel")}
MEASURABLE = ("xnnpack",)


def names() -> tuple[str, ...]:
    """The delegates with a table (one `<name>.toml` each), without reading any of them."""
    from importlib import resources

    return tuple(sorted(p.name.removesuffix(".toml") for p in resources.files(__name__).iterdir()
                        if p.name.endswith(".toml")))


def read_ops(path: Path | str, fmt: str) -> "tuple[OpView, ...]":
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if p.suffix.lower() not in SUFFIXES[fmt]:
        raise UserError(f"{p.name} is not a {'/'.join(SUFFIXES[fmt])} file; this delegate reads {fmt} artifacts")
    if fmt == "tflite":
        from edgeconv.devices.delegates.tflite_ops import read_ops as read
    elif fmt == "onnx":
        from edgeconv.devices.delegates.onnx_ops import read_ops as read
    else:
        from edgeconv.devices.delegates.coreml_ops import read_ops as read
    return read(p)


def check(path: Path | str, delegate: str, level: int | None = None) -> "Verdict":
    """The delegate's table applied to the file: per op supported or the rule that excludes it."""
    from edgeconv.devices.delegates.rules import evaluate, load_table

    table = load_table(delegate)
    ops = read_ops(path, table.format)
    return evaluate(table, ops, Path(path).name, level)


def measure(path: Path | str, delegate: str = "xnnpack") -> "Verdict":
    """What the delegate actually took on this host (XNNPACK only: the one runtime here)."""
    if delegate not in MEASURABLE:
        raise UserError(f"{delegate} cannot be measured on this host; measurable: {', '.join(MEASURABLE)}")
    from edgeconv.devices.delegates.measured import xnnpack_measured

    return xnnpack_measured(path, read_ops(path, "tflite"))
