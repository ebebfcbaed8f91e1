"""CoreML: everything about .mlpackage files — the targets coremltools writes (export.py), the runners
(runtime.py: Core ML on macOS, edgeconv's MIL evaluator in mil/ elsewhere) and every reading of a
package (read.py)."""
from __future__ import annotations

from pathlib import Path

from edgeconv.exporters.formats import Format
from edgeconv.registry import FORMATS


class CoreMLFormat(Format):
    name = "coreml"
    suffixes = (".mlpackage", ".mlmodel")
    family = "coreml"
    runtime = "coremltools"
    reader = "edgeconv.exporters.coreml.read"

    def is_folder(self, path: Path) -> bool:
        return path.suffix == ".mlpackage"  # an mlprogram package; a .mlmodel is one file

    def runner(self, path: Path, threads: int = 1, kernels: str = "reference"):
        from edgeconv.exporters.coreml.runtime import MILRunner, PredictRunner, on_macos

        return PredictRunner(path, threads) if on_macos() else MILRunner(path)


FORMATS.add("coreml", CoreMLFormat())

from edgeconv.exporters.coreml import export  # noqa: E402,F401 — registers the CoreML targets
