"""Graph passes: `Graph, Context -> PassResult`, registered in PASSES under verb-noun names.

A pass says whether it changed the graph, and running it twice changes nothing more.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph


@dataclasses.dataclass(frozen=True)
class PassResult:
    graph: "Graph"
    changed: bool
    notes: tuple[str, ...] = ()


Pass = Callable[["Graph", "Context"], PassResult]


def reads(*fields: str) -> Callable[[Pass], Pass]:
    """Declares the ExportOptions fields a pass reads (dotted, e.g. "quant.weights"): the options
    that can change its result, which `edgeconv list` shows and a test checks against the code."""
    def deco(fn: Pass) -> Pass:
        fn.reads = fields  # type: ignore[attr-defined]
        return fn
    return deco
