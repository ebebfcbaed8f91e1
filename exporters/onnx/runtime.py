"""An .onnx file in onnxruntime: float NCHW in, float out, one sample at a time (static batch 1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeconv.inputs import Batch, count, feed
from edgeconv.results import TensorSpec

KERNELS = ("reference", "fast")


class OnnxRunner:
    """An .onnx file in onnxruntime's CPU provider.

    `kernels="reference"` runs with every graph optimization off (ORT_DISABLE_ALL): a QDQ artifact
    executes node by node — DequantizeLinear, the float op, QuantizeLinear — which is what the file
    means and what the torch quantized simulation computes, on any host. `kernels="fast"`
    (ORT_ENABLE_ALL) lets onnxruntime fuse QDQ groups into its integer kernels (QLinearConv, QGemm,
    …) as a deployment would: on x86 without VNNI their u8s8 path sums pairs in saturating int16, so
    fast outputs may deviate from the reference there (edgeconv.host.host_info says which host this is).
    """

    def __init__(self, path: Path, threads: int = 1, kernels: str = "reference") -> None:
        import onnxruntime as ort

        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
        self.kernels = kernels
        level = "ORT_DISABLE_ALL" if kernels == "reference" else "ORT_ENABLE_ALL"
        self.engine = f"onnxruntime ({kernels} kernels: {level})"  # for reports
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._in = self.session.get_inputs()
        self.inputs = tuple(self._spec(a) for a in self._in)
        self.outputs = tuple(self._spec(a) for a in self.session.get_outputs())

    @staticmethod
    def _spec(a) -> TensorSpec:
        dtype = a.type.removeprefix("tensor(").removesuffix(")")
        shape = tuple(int(s) if isinstance(s, int) else -1 for s in a.shape)
        return TensorSpec(a.name, "float32" if dtype == "float" else dtype, shape,
                          "NCHW" if len(shape) == 4 else "")

    def __call__(self, x: Batch) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: Batch) -> list[np.ndarray]:
        """Every output; `x` holds every input, each fed by its name in the file (edgeconv.inputs)."""
        names = [a.name for a in self._in]
        outs = [self.session.run(None, feed(names, x, i, i + 1)) for i in range(count(x))]
        return [np.concatenate([o[k] for o in outs]).astype(np.float32) for k in range(len(self.outputs))]
