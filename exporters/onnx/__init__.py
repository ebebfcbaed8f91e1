"""ONNX: everything about .onnx files — the targets that write them (export.py), onnxruntime
(runtime.py), every reading of a file (read.py) and the u8u8 re-encoding (u8u8.py)."""
from __future__ import annotations

from pathlib import Path

from edgeconv.errors import UserError
from edgeconv.exporters.formats import Format
from edgeconv.registry import FORMATS


class OnnxFormat(Format):
    name = "onnx"
    suffixes = (".onnx",)
    family = "onnx"
    runtime = "onnxruntime"
    reader = "edgeconv.exporters.onnx.read"

    def runner(self, path: Path, threads: int = 1, kernels: str = "reference"):
        from edgeconv.exporters.onnx.runtime import OnnxRunner

        return OnnxRunner(path, threads, kernels)

    def companions(self, path: Path) -> tuple[Path, ...]:
        """The files an .onnx keeps its weights in (external data): they travel with it."""
        from edgeconv.exporters.onnx.read import open_model

        model = open_model(path)
        names = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        files = tuple(path.parent / n for n in sorted(names))
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{path} keeps its weights in {', '.join(missing)}, which is missing")
        return files


FORMATS.add("onnx", OnnxFormat())

from edgeconv.exporters.onnx import export  # noqa: E402,F401 — registers the ONNX targets
