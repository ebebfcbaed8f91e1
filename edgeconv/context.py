"""What a run carries besides the graph: options, data, the reference model, a progress sink."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Iterator

from edgeconv.config import ExportOptions

if TYPE_CHECKING:
    from edgeconv.calib.data import DataSet
    from edgeconv.models import ModelSpec


class Progress:
    """Progress display for long work (calibration, conversion). Silent when disabled (--json)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Any]:
        if not self.enabled:
            yield _NullTask()
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}") if total else TextColumn(""), TimeElapsedColumn()]
        with RichProgress(*columns, console=Console(stderr=True), transient=True) as bar:
            tid = bar.add_task(description, total=total)
            yield _RichTask(bar, tid)


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class _RichTask:
    def __init__(self, bar: Any, tid: Any) -> None:
        self._bar, self._tid = bar, tid

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._tid, n)


@dataclasses.dataclass(frozen=True)
class Context:
    options: ExportOptions
    model: "ModelSpec"
    calib: "DataSet | None" = None
    progress: Progress = dataclasses.field(default_factory=lambda: Progress(False))
