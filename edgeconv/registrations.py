"""Imports every module that registers a pass, target or device, so the registries are full.

Kept as an explicit list (not a plugin scan) so that what exists is readable in one place.
Modules listed here import only light dependencies at top level.
"""
from __future__ import annotations

import importlib

MODULES = (
    "edgeconv.passes.fold_bn",
    "edgeconv.passes.reparam_merge",
    "edgeconv.passes.check_quant",
    "edgeconv.passes.quantize",
    "edgeconv.passes.cleanup",
    "edgeconv.exporters.onnx",
    "edgeconv.exporters.tflite",
    "edgeconv.exporters.coreml",
    "edgeconv.devices.catalog",
    "edgeconv.passes.sparsify",
    "edgeconv.exporters.tflite_sparse",
)


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)
