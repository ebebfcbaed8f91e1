"""coremltools, imported fast and quietly: one place for the coreml exporter and the MIL evaluator.

coremltools probes optional converters at import and logs about missing macOS libraries; edgeconv
needs neither.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from typing import Any

from edgeconv.errors import missing_extra


def import_coremltools() -> Any:
    """Import coremltools quietly (it logs about missing macOS libraries and untested torch)."""
    # coremltools probes tensorflow / torchvision / torchaudio at import for converters edgeconv
    # does not use: tensorflow alone costs ~15 s and torchvision fails beside the CPU torch.
    # Hide the ones not already loaded for the duration of the import only.
    hidden = [m for m in ("tensorflow", "torchvision", "torchaudio") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        with quiet():
            import coremltools as ct
    except ImportError:
        raise missing_extra("coremltools", "coreml") from None
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return ct


@contextlib.contextmanager
def quiet() -> Any:
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
