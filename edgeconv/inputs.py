"""A model's inputs: the names every artifact gives them, and batches that feed all of them.

A net may take several inputs (an image and a guide map, two views, an image and a prompt
tensor). Its data is then a tuple of arrays, one per input in the order forward takes them, each
N first, sample i of every array together (`DataSet.inputs`); a one-input net's data may stay one
array. Every feeder — the torch programs, each format's runner, the per-layer check — takes
either form through `arrays` / `rows`, so a feeder can never drop the inputs after the first.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from edgeconv.errors import UserError

if TYPE_CHECKING:
    import torch

# One array (a one-input net) or one array per input, in forward's order.
Batch = Union[np.ndarray, "tuple[np.ndarray, ...]"]


def arrays(x: Batch) -> tuple[np.ndarray, ...]:
    return (x,) if isinstance(x, np.ndarray) else tuple(x)


def count(x: Batch) -> int:
    """Samples in the batch (every input has as many)."""
    return len(arrays(x)[0])


def rows(x: Batch, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """Samples start..stop of every input, float32 (what each runtime is fed)."""
    return tuple(np.ascontiguousarray(a[start:stop], dtype=np.float32) for a in arrays(x))


def torch_rows(x: Batch, start: int, stop: int) -> "tuple[torch.Tensor, ...]":
    """Samples start..stop of every input as tensors: the positional arguments of forward."""
    import torch

    return tuple(torch.from_numpy(a) for a in rows(x, start, stop))


def feed(names: Sequence[str], x: Batch, start: int, stop: int) -> dict[str, np.ndarray]:
    """{input name in the file: its rows}. The file's inputs are in forward's order (every exporter
    names them so: `exporters.base.input_names`); a count that differs is an error, never a net
    silently fed only its first input."""
    got = rows(x, start, stop)
    if len(got) != len(names):
        raise ValueError(f"the artifact takes {len(names)} input(s) ({', '.join(names)}), the data has {len(got)}")
    return dict(zip(names, got, strict=True))


def resolve_names(declared: Sequence[str], module: Any, count: int, outputs: Sequence[str] = ()) -> tuple[str, ...]:
    """The names every format gives the inputs: the declared ones; for an undeclared net with several
    inputs, forward's parameter names (input_0, input_1, … where it has none to give); () for one
    undeclared input (each converter keeps its own name, as files exported before did)."""
    if declared:
        names = tuple(declared)
        if len(names) != count:
            raise UserError(f"the model declares {len(names)} input name(s) ({', '.join(names)}) but takes "
                            f"{count} example input(s); fix ModelSpec.input_names")
    elif count > 1:
        names = _forward_names(module, count) or tuple(f"input_{i}" for i in range(count))
    else:
        return ()
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(outputs)))
    if clash or not all(n.isidentifier() for n in names):
        bad = clash or [n for n in names if not n.isidentifier()]
        raise UserError(f"input name(s) {', '.join(map(repr, bad))} cannot name a model input in every format "
                        "(unique identifiers, none also an output name); fix ModelSpec.input_names")
    return names


def _forward_names(module: Any, count: int) -> tuple[str, ...]:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # a C-implemented or wrapped forward has no readable signature
        return ()
    names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return names[:count] if len(names) >= count and all(n.isidentifier() for n in names[:count]) else ()
