"""How each accelerator will run a deployed file: support tables per delegate, as data with sources.

    check(path, "nnapi")      -> Verdict (predicted from the table)
    measure(path, "xnnpack")  -> Verdict (measured: what ai-edge-litert's XNNPACK delegate took here)

Tables: `*.toml` beside this module (rules.py says how they are read and how partitions are
counted). Each artifact's format reads its neutral op list (`Format.op_view`, edgeconv.opview.OpView)
that the rules test. Heavy imports stay inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.errors import UserError

if TYPE_CHECKING:
    from edgeconv.devices.delegates.rules import Verdict
    from edgeconv.results import DelegatePlan
    from edgeconv.opview import OpView

MEASURABLE = ("xnnpack",)
# Names a table was known by before it was renamed. "qnn" is also `edgeconv profile`'s name for
# Qualcomm's external QNN *TFLite* delegate (devices/base.py Delegate.QNN), which publishes no op
# table; the table for ONNX Runtime's QNN execution provider is "qnn-ep". The old name still reaches
# it where that is the only reading (an .onnx file).
OLD_NAMES = {"qnn": "qnn-ep"}


def names() -> tuple[str, ...]:
    """The delegates with a table (one `<name>.toml` each), without reading any of them."""
    from importlib import resources

    return tuple(sorted(p.name.removesuffix(".toml") for p in resources.files(__name__).iterdir()
                        if p.name.endswith(".toml")))


def resolve(delegate: str, path: Path | str | None = None) -> str:
    """The table name for a delegate name as a user wrote it (old names included)."""
    if delegate in names() or delegate not in OLD_NAMES:
        return delegate  # load_table says what an unknown name should be
    new = OLD_NAMES[delegate]
    if path is not None and Path(path).suffix.lower() == ".onnx":
        return new
    raise UserError(f"{delegate} is ambiguous here: `edgeconv profile --delegate {delegate}` is Qualcomm's QNN TFLite "
                    f"delegate, which publishes no op table (for a .tflite use hexagon or nnapi); ONNX Runtime's QNN "
                    f"execution provider on an .onnx file is {new}")


def read_ops(path: Path | str, fmt: str) -> "tuple[OpView, ...]":
    """The file's ops, read by its own format; a UserError when the table is for another format."""
    from edgeconv.exporters.formats import format_for

    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    found = format_for(p)
    if found.name != fmt:
        raise UserError(f"{p.name} is in the {found.name} format; this delegate's table reads {fmt} artifacts")
    return found.op_view(p)


def check(path: Path | str, delegate: str, level: int | None = None) -> "Verdict":
    """The delegate's table applied to the file: per op supported or the rule that excludes it."""
    from edgeconv.devices.delegates.rules import evaluate, load_table

    table = load_table(resolve(delegate, path))
    ops = read_ops(path, table.format)
    return evaluate(table, ops, Path(path).name, level)


def measure(path: Path | str, delegate: str = "xnnpack") -> "Verdict":
    """What the delegate actually took on this host (XNNPACK only: the one runtime here)."""
    if delegate not in MEASURABLE:
        raise UserError(f"{delegate} cannot be measured on this host; measurable: {', '.join(MEASURABLE)}")
    from edgeconv.devices.delegates.measured import xnnpack_measured

    return xnnpack_measured(path, read_ops(path, "tflite"))


def plans(path: Path | str) -> "tuple[DelegatePlan, ...]":
    """Every delegate whose table reads this file's format, as the manifest records it: XNNPACK
    measured on this host (TFLite), the others predicted from their tables. A delegate that cannot
    be judged here says why instead of being left out."""
    from edgeconv.exporters.formats import format_for
    from edgeconv.results import DelegatePlan

    from edgeconv.devices.delegates.rules import load_table

    p = Path(path)
    fmt = format_for(p).name
    out = []
    for name in names():
        try:
            if load_table(name).format != fmt:
                continue
            v = measure(p, name) if name in MEASURABLE else check(p, name)
        except Exception as e:  # a reader or table that cannot judge this file: said, not skipped
            out.append(DelegatePlan(name, f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:160]}"))
            continue
        out.append(DelegatePlan(name, v.kind, v.ops, len(v.partitions), v.cpu_ops,
                                tuple(f"{f.label}: [{f.rule}]" for f in v.fallbacks[:20]), load_table(name).title))
    return tuple(out)
