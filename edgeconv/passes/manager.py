"""The pass manager: the only code that runs passes. Each pass runs in order and its record
(changed, seconds, notes) goes on the graph; targets that share a pass prefix share its result.

The pipeline may hand in *steps*: work of its own that runs right before a named pass and may
replace the graph the pass receives (`--max-drop` choosing float layers, a QAT-trained program
standing in for calibration). Steps belong to the stage that owns them; passes never call back.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Mapping

from edgeconv.errors import UserError, in_stage
from edgeconv.registry import PASSES
from edgeconv.results import StageRecord

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph

# A step: (graph, context) -> (the graph the pass receives, notes for the pass's record).
Step = Callable[["Graph", "Context"], tuple["Graph", tuple[str, ...]]]


def run_passes(graph: "Graph", ctx: "Context", names: tuple[str, ...],
               steps: Mapping[str, Step] | None = None) -> "Graph":
    """Each pass of `names` in order; `steps[name]`, when given, runs just before pass `name`."""
    for name in names:
        t0 = time.perf_counter()
        given, extra = graph, ()
        with in_stage(f"pass {name}", keep=(UserError,)):
            if steps and name in steps:
                graph, extra = steps[name](graph, ctx)
            res = PASSES.get(name)(graph, ctx)
        changed = res.changed or graph is not given  # a step's replacement is a change of this stage
        graph = res.graph.record(StageRecord(name, changed, round(time.perf_counter() - t0, 3), extra + res.notes))
    return graph


class PassCache:
    """Pass chains run from one root, each prefix once: one calibration for every int8 target."""

    def __init__(self, root: "Graph", ctx: "Context", steps: Mapping[str, Step] | None = None) -> None:
        self._done: dict[tuple[str, ...], "Graph"] = {(): root}
        self._ctx, self._steps = ctx, steps

    def get(self, names: tuple[str, ...]) -> "Graph":
        k = max(i for i in range(len(names) + 1) if names[:i] in self._done)
        graph = self._done[names[:k]]
        for i in range(k, len(names)):
            graph = run_passes(graph, self._ctx, names[i:i + 1], self._steps)
            self._done[names[:i + 1]] = graph
        return graph
