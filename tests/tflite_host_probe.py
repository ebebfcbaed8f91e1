"""Run one .tflite file in TFLite's default engine (XNNPACK) and its builtin kernels alone; save both.

    python tests/tflite_host_probe.py INPUTS.npy OUT.npz MODEL.tflite

tests/test_tflite_host_kernels.py runs it inside `qemu-x86_64-static -cpu Haswell` (an x86 CPU
without AVX-512) as well as natively. Import-light on purpose (numpy, ai-edge-litert, edgeconv's
runner; no torch): under emulation every import costs. OUT.npz gets `default` and `builtin` outputs
(dequantized, as the verdict compares them); the JSON line names each engine.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> None:
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    x = np.load(argv[0])
    runners = {k: TfliteRunner(Path(argv[2]), kernels=k) for k in ("default", "builtin")}
    np.savez(argv[1], **{k: r(x) for k, r in runners.items()})
    print(json.dumps({k: r.engine for k, r in runners.items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
