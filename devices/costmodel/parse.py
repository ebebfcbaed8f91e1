"""Read an exported artifact into the cost model's op list: the artifact's format lists its ops
(`Format.cost_ops`) as a mobile runtime executes them — an activation directly after a conv, FC or
add fused into it, quantize/dequantize pairs around weights treated as constants, shape-only ops
free — each with its MACs, weight elements and activation traffic."""
from __future__ import annotations

from pathlib import Path

from edgeconv.costops import Op
from edgeconv.errors import UserError


def load_ops(path: Path | str) -> tuple[list[Op], str]:
    """(ops, precision) of an artifact; precision is "int8", "fp16" or "fp32" as stored."""
    from edgeconv.exporters.formats import format_for

    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact {path} does not exist")
    return format_for(path).cost_ops(path)
