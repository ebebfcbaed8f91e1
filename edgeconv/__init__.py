"""edgeconv: ship a trained PyTorch conv net to phones and boards, verified and measured."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public API, imported on first use so `import edgeconv` (and the CLI) stays light.
_LAZY = {
    "tune_mode": "edgeconv.prepare.tune_mode",
    "eval_mode": "edgeconv.prepare.tune_mode",
    "load_model": "edgeconv.models",
    "ModelSpec": "edgeconv.models",
    "export": "edgeconv.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeconv' has no attribute {name!r}")
