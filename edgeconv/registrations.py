"""Imports every module that registers a pass, target, format or device, so the registries are full.

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
    "edgeconv.passes.sparsify",
    # one line per artifact format: its folder registers the format and its targets
    "edgeconv.exporters.onnx",
    "edgeconv.exporters.tflite",
    "edgeconv.exporters.coreml",
    "edgeconv.devices.catalog",
)


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)
