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
