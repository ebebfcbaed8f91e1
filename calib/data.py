"""The data a run calibrates and evaluates on."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class DataSet:
    """Preprocessed model inputs, float32, NCHW, and labels where the source has them."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    real: bool = True  # False for `random`: the report marks it as not a real calibration

    def __len__(self) -> int:
        return len(self.x)

    def take(self, start: int, stop: int) -> "DataSet":
        y = None if self.y is None else self.y[start:stop]
        return dataclasses.replace(self, x=self.x[start:stop], y=y)
