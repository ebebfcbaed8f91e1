"""Run .onnx files in onnxruntime with reference and fast kernels; print one JSON line.

    python tests/onnx_host_probe.py INPUTS.npy OUT.npz A.onnx [B.onnx ...]

tests/test_onnx_host_kernels.py runs it inside `qemu-x86_64-static -cpu Haswell` (an AVX2-only
x86 CPU) as well as natively. Import-light on purpose (numpy, onnx, onnxruntime; no torch): under
emulation every import costs. OUT.npz gets `<stem>:reference` and `<stem>:fast` outputs; the JSON line
has this process's CPU as it sees it (edgeconv.host.host_info, cpuid-based), per file the op types of
onnxruntime's optimized graph (were the QDQ groups fused into integer kernels?) and the wall time.
"""
from __future__ import annotations

import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def fused_ops(path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime runs with ORT_ENABLE_ALL (saved via optimized_model_filepath)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # the "hardware specific optimizations" warning on saving is expected
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        model = onnx.load(so.optimized_model_filepath)
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def main(argv: list[str]) -> None:
    t0 = time.perf_counter()
    from edgeconv.exporters.onnx.runtime import OnnxRunner
    from edgeconv.host import host_info

    x = np.load(argv[0])
    outputs: dict[str, np.ndarray] = {}
    files = {}
    for f in map(Path, argv[2:]):
        t = time.perf_counter()
        for kernels in ("reference", "fast"):
            outputs[f"{f.stem}:{kernels}"] = OnnxRunner(f, kernels=kernels)(x)
        files[f.stem] = {"ops": fused_ops(f), "seconds": round(time.perf_counter() - t, 2)}
    np.savez(argv[1], **outputs)
    print(json.dumps({"host": host_info(), "samples": len(x), "files": files,
                      "seconds": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main(sys.argv[1:])
