"""A .tflite file in ai-edge-litert, the runtime phones run.

It takes float NCHW batches and returns float outputs: int8 inputs are quantized with the
artifact's own input scale and int8 outputs dequantized with its output scale, so parity compares
like with like. Artifacts have a static batch of 1; batches are run sample by sample.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeconv.inputs import Batch, count, feed
from edgeconv.results import QuantParams, TensorSpec


def _quant(details: dict) -> QuantParams | None:
    qp = details.get("quantization_parameters") or {}
    scales = qp.get("scales")
    if scales is None or len(scales) == 0:
        return None
    axis = int(qp.get("quantized_dimension", 0)) if len(scales) > 1 else None
    return QuantParams(np.dtype(details["dtype"]).name, tuple(float(s) for s in scales),
                       tuple(int(z) for z in qp["zero_points"]), axis)


class TfliteRunner:
    """kernels="default" (also what "reference" and "fast" mean here): the interpreter's default
    resolver, XNNPACK where it takes the op and builtin kernels elsewhere — what a phone's CPU path
    runs, and the verdict's first engine. kernels="builtin": TFLite's builtin kernels alone, the
    second opinion. The two are independent implementations of one file's integer arithmetic, and
    either can be wrong on a host: XNNPACK picks its kernels by ISA (ai-edge-litert 2.3.0 on x86
    without AVX-512: an int8 MEAN over more than 8192 contiguous values overflows and saturates —
    timm PoolFormerV2's GroupNorm(1) at 64², 215 steps), and the builtin int8 MEAN rounds ties
    another way, which an RSQRT after it magnifies (timm MobileViT-XXS: 11 steps at a LayerNorm)."""

    ENGINES = {"default": "ai-edge-litert (XNNPACK delegate + builtin kernels)",
               "builtin": "ai-edge-litert (builtin kernels, no delegate)"}

    def __init__(self, path: Path, threads: int = 1, kernels: str = "default") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.engine = engine_name(kernels)
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads, **resolver(kernels))
        self.interpreter.allocate_tensors()
        self._in = in_model_order(self.interpreter, self.interpreter.get_input_details(), inputs=True)
        self._out = in_model_order(self.interpreter, self.interpreter.get_output_details())
        self.inputs = tuple(self._spec(d) for d in self._in)
        self.outputs = tuple(self._spec(d) for d in self._out)

    @staticmethod
    def _spec(d: dict) -> TensorSpec:
        shape = tuple(int(s) for s in d["shape"])
        return TensorSpec(d["name"], np.dtype(d["dtype"]).name, shape,
                          "NCHW" if len(shape) == 4 else "", _quant(d))

    def __call__(self, x: Batch) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: Batch) -> list[np.ndarray]:
        """Every output; `x` holds every input, each fed by its name in the file (edgeconv.inputs)."""
        outs = [self._one(feed([d["name"] for d in self._in], x, i, i + 1)) for i in range(count(x))]
        return [np.concatenate([o[k] for o in outs]) for k in range(len(self._out))]

    def _one(self, fed: dict[str, np.ndarray]) -> list[np.ndarray]:
        for d in self._in:
            self.interpreter.set_tensor(d["index"], quantize(fed[d["name"]], d))
        self.interpreter.invoke()
        return [dequantize(self.interpreter.get_tensor(o["index"]), o) for o in self._out]


def _kind(kernels: str) -> str:
    return "builtin" if kernels == "builtin" else "default"


def engine_name(kernels: str) -> str:
    """What `kernels` computes with, as parity reports name it."""
    return TfliteRunner.ENGINES[_kind(kernels)]


def resolver(kernels: str) -> dict:
    """The Interpreter keyword that picks `kernels` (see TfliteRunner)."""
    if _kind(kernels) == "default":
        return {}
    from ai_edge_litert.interpreter import OpResolverType

    return {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def in_model_order(interpreter, details: list[dict], inputs: bool = False) -> list[dict]:
    """The outputs (or inputs) in the order the model returns (takes) them: the subgraph's output
    (input) list, what the signature follows, not the interpreter's detail order."""
    which = "InputIndices" if inputs else "OutputIndices"
    inner = getattr(interpreter, "_interpreter", None)
    order = {int(t): i for i, t in enumerate(getattr(inner, which)())} if hasattr(inner, which) else {}
    return sorted(details, key=lambda d: order.get(int(d["index"]), len(order)))


def quantize(x: np.ndarray, details: dict) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zp = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, details: dict) -> np.ndarray:
    if np.dtype(details["dtype"]).kind == "f":
        return q.astype(np.float32)
    scale, zp = details["quantization"]
    return ((q.astype(np.float32) - zp) * scale).astype(np.float32)
