"""TFLite: everything about .tflite files — the targets litert-torch writes (export.py, with the
graph rewrites its lowering needs in lowering.py), the sparse targets and their flatbuffer rewrite
(sparse.py, flatbuffer.py), XNNPACK's sparse-path rules on a file (sparse_check.py), ai-edge-litert
(runtime.py) and every reading of a file (read.py)."""
from __future__ import annotations

from pathlib import Path

from edgeconv.exporters.formats import Format
from edgeconv.registry import FORMATS


class TfliteFormat(Format):
    name = "tflite"
    suffixes = (".tflite",)
    family = "tflite"
    runtime = "ai-edge-litert"
    reader = "edgeconv.exporters.tflite.read"

    def owns(self, path: Path) -> bool:
        # a flatbuffer carries its identifier: a .tflite saved under another name is still one
        return super().owns(path) or (path.is_file() and _head(path)[4:8] == b"TFL3")

    def runner(self, path: Path, threads: int = 1, kernels: str = "reference"):
        from edgeconv.errors import ParityFailure
        from edgeconv.exporters.tflite.runtime import TfliteRunner, engine_name

        try:
            return TfliteRunner(path, threads, kernels)
        except (RuntimeError, ValueError) as e:
            # The converter wrote a file the runtime cannot prepare (e.g. a BROADCAST_TO whose
            # shapes it rejects): a failed artifact, said in one line, never a traceback.
            line = " ".join(str(e).split())[:300]
            err = ParityFailure(f"{path.name}: ai-edge-litert cannot load the file: {line}")
            err.runtime = engine_name(kernels)  # type: ignore[attr-defined]
            raise err from None


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


FORMATS.add("tflite", TfliteFormat())

from edgeconv.exporters.tflite import export, sparse  # noqa: E402,F401 — registers the TFLite targets
