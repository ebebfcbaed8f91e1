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


@contextlib.contextmanager
def one_thread():
    """torch (and, where threadpoolctl is installed, numpy's BLAS) on one thread for per-sample work.
    A batch-1 forward of a small net gains little from a second thread on an idle 2-core host, but
    when other processes hold the cores, OpenMP's spin-waiting barriers made each sample 5-30x
    slower (MobileNetV2 224x224: 36 ms on one thread, 0.19-1.15 s on two, at load average 5)."""
    import torch

    n = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(1)
    except ImportError:
        blas = contextlib.nullcontext()
    torch.set_num_threads(1)
    try:
        with blas:
            yield
    finally:
        torch.set_num_threads(n)
