"""The data a run calibrates and evaluates on."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class DataSet:
    """Preprocessed model inputs, float32, NCHW, and labels where the source has them.

    `x` is the first input; `more` the inputs after it, for a net that takes several (one array per
    input in forward's order, as many samples as `x`): `inputs` is what every feeder is given."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    real: bool = True  # False for `random`: the report marks it as not a real calibration
    more: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        if any(len(m) != len(self.x) for m in self.more):
            raise ValueError(f"every input needs as many samples as the first ({len(self.x)}): "
                             f"{[len(m) for m in self.more]}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def inputs(self) -> tuple[np.ndarray, ...]:
        return (self.x, *self.more)

    @property
    def batch(self) -> "np.ndarray | tuple[np.ndarray, ...]":
        """What runners and readers are fed: the one array of a one-input net (as a format plugin
        written before several inputs expects), every input's for a net with several."""
        return self.inputs if self.more else self.x

    def take(self, start: int, stop: int) -> "DataSet":
        y = None if self.y is None else self.y[start:stop]
        return dataclasses.replace(self, x=self.x[start:stop], y=y, more=tuple(m[start:stop] for m in self.more))
