"""A CoreML .mlpackage run: in Core ML itself (`MLModel.predict`, macOS only) or in edgeconv's numpy
MIL evaluator (mil/, any OS). Both take float NCHW batches and return float outputs."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.exporters.coreml.coremltools_import import import_coremltools
from edgeconv.exporters.coreml.mil.kernels import ENGINE as MIL_EVAL_ENGINE
from edgeconv.inputs import Batch, arrays, feed
from edgeconv.results import TensorSpec

if TYPE_CHECKING:
    from collections.abc import Collection


def on_macos() -> bool:
    return sys.platform == "darwin"


def _specs(features: Any) -> tuple[TensorSpec, ...]:
    out = []
    for f in features:
        arr = f.type.multiArrayType
        dtype = {65568: "float32", 65552: "float16", 131104: "int32"}.get(arr.dataType, str(arr.dataType))
        out.append(TensorSpec(name=f.name, dtype=dtype, shape=tuple(int(d) for d in arr.shape)))
    return tuple(out)


# The engine that computed a CoreML artifact's outputs, named exactly: Core ML itself runs only on
# macOS; elsewhere edgeconv's own numpy MIL evaluator reads the same program (mil/).
ENGINE_PREDICT = "coreml: MLModel.predict"
ENGINE_MIL_EVAL = MIL_EVAL_ENGINE


def engine_here() -> str:
    """The engine `CoreMLFormat.runner` runs on this machine."""
    return ENGINE_PREDICT if on_macos() else ENGINE_MIL_EVAL


class MILRunner:
    """Runs an .mlpackage with the numpy MIL evaluator (any OS). Raises UnverifiedOp on load."""

    engine = ENGINE_MIL_EVAL

    def __init__(self, path: Path | str) -> None:
        from edgeconv.exporters.coreml.mil.kernels import UnverifiedOp, unknown_ops
        from edgeconv.exporters.coreml.mil.program import load_program

        ct = import_coremltools()
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        self.inputs, self.outputs = _specs(spec.description.input), _specs(spec.description.output)
        self.program = load_program(model)
        unknown = unknown_ops(self.program)
        if unknown:
            raise UnverifiedOp(unknown[0])

    def intermediates(self, x: Batch, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Every value the program computes on `x`, or only the outputs and `names` (the rest let go
        once read: what a reading of a few kinds of tensors needs)."""
        from edgeconv.exporters.coreml.mil.kernels import run

        return run(self.program, feed([s.name for s in self.inputs], x, 0, len(arrays(x)[0])),
                   keep=True if names is None else names)

    def __call__(self, x: Batch) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: Batch) -> list[np.ndarray]:
        """Every output; `x` holds every input, each fed by its name in the file (edgeconv.inputs)."""
        from edgeconv.exporters.coreml.mil.kernels import run

        n = len(arrays(x)[0])
        batch = self.inputs[0].shape[0] if self.inputs[0].shape else n
        names = [s.name for s in self.inputs]
        outs = [run(self.program, feed(names, x, i, i + batch)) for i in range(0, n, batch)]
        return [np.concatenate([o[s.name] for o in outs]).astype(np.float32) for s in self.outputs]


class PredictRunner:
    """Runs an .mlpackage in CoreML itself through MLModel.predict (macOS only)."""

    engine = ENGINE_PREDICT

    def __init__(self, path: Path | str, threads: int = 1) -> None:
        ct = import_coremltools()
        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        spec = self.model.get_spec()
        self.inputs, self.outputs = _specs(spec.description.input), _specs(spec.description.output)

    def __call__(self, x: Batch) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: Batch) -> list[np.ndarray]:
        n, batch, names = len(arrays(x)[0]), self.inputs[0].shape[0], [s.name for s in self.inputs]
        outs = [self.model.predict(feed(names, x, i, i + batch)) for i in range(0, n, batch)]
        return [np.concatenate([o[s.name] for o in outs]).astype(np.float32) for s in self.outputs]
