"""Is a merge exact? The merged function against the original on inputs that can tell.

Seeded N(0,1) inputs shaped like the example (an all-zeros example would let a merge that zeroed
the kernels and kept the bias agree) and, when given, calibration samples. Used by the eager
protocol (`protocol.reparameterize_model`) and the graph pass (`reparam-merge`) alike.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch

RANDOM_INPUTS = "seeded N(0,1) inputs"
CALIB_INPUTS = "calibration inputs"
CHECK_SAMPLES = 8  # calibration samples the merge is checked on (a few forward passes, twice)


@dataclasses.dataclass(frozen=True)
class Exactness:
    """Relative error of the merged function (max |Δ| / max |original|) on each input set."""

    random: float | None = None
    calib: float | None = None
    calib_samples: int = 0

    @property
    def max_rel_error(self) -> float | None:
        errs = [e for e in (self.random, self.calib) if e is not None]
        return max(errs) if errs else None

    def worst(self, rtol: float) -> tuple[str, float] | None:
        """The first input set whose error is above `rtol`, with it; None when exact on all."""
        for what, err in ((RANDOM_INPUTS, self.random), (CALIB_INPUTS, self.calib)):
            if err is not None and err > rtol:
                return what, err
        return None

    def note(self) -> str:
        parts = []
        if self.random is not None:
            parts.append(f"{self.random:.1e} relative on {RANDOM_INPUTS}")
        if self.calib is not None:
            parts.append(f"{self.calib:.1e} on {self.calib_samples} {CALIB_INPUTS}")
        elif self.random is not None:
            parts.append("no calibration inputs to check on")
        return "merged vs original: " + ", ".join(parts) if parts else "merged vs original: not checked (no inputs)"


InputSets = list[tuple[str, list[tuple[Any, ...]]]]


def check_sets(example_inputs: Sequence[Any] | None, calib_inputs: "np.ndarray | torch.Tensor | None" = None,
               seed: int = 0) -> InputSets:
    """What a merge is checked on: [(label, [args, ...])]. Seeded N(0,1) tensors shaped like each
    float example input; calibration samples in batches of the example's batch size (single-input
    models whose samples fit the example's shape; a partial last batch is dropped)."""
    import numpy as np
    import torch

    sets: InputSets = []
    example = tuple(example_inputs or ())
    if example:
        g = torch.Generator().manual_seed(seed)
        sets.append((RANDOM_INPUTS, [tuple(
            torch.randn(t.shape, generator=g, dtype=t.dtype)
            if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in example)]))
    if calib_inputs is None or len(calib_inputs) == 0 or len(example) > 1:
        return sets
    x = torch.as_tensor(np.asarray(calib_inputs[:CHECK_SAMPLES]) if not isinstance(calib_inputs, torch.Tensor)
                        else calib_inputs[:CHECK_SAMPLES])
    first = example[0] if example else None
    if isinstance(first, torch.Tensor):
        if first.dim() == 0 or tuple(x.shape[1:]) != tuple(first.shape[1:]):
            return sets  # not this model's input layout: nothing to check it with
        x, batch = x.to(first.dtype), max(int(first.shape[0]), 1)
    else:
        x, batch = x.float(), 1
    batches = [(x[i:i + batch],) for i in range(0, len(x) - batch + 1, batch)]
    if batches:
        sets.append((CALIB_INPUTS, batches))
    return sets


def run_sets(fn: Callable[..., Any], sets: InputSets) -> list[list["torch.Tensor"]]:
    import torch

    with torch.no_grad():
        return [[_flat(fn(*args)) for args in batches] for _, batches in sets]


def measure(sets: InputSets, reference: list[list["torch.Tensor"]], got: list[list["torch.Tensor"]]) -> Exactness:
    """Per input set: max |got − reference| / max |reference| over all its batches."""
    errors = {}
    for (what, _), ref_set, got_set in zip(sets, reference, got):
        diff = max(float((g - r).abs().max()) if r.numel() else 0.0 for r, g in zip(ref_set, got_set))
        scale = max(float(r.abs().max()) if r.numel() else 0.0 for r in ref_set)
        errors[what] = diff / max(scale, 1e-30)
    calib = sum(len(args[0]) for what, batches in sets if what == CALIB_INPUTS for args in batches)
    return Exactness(errors.get(RANDOM_INPUTS), errors.get(CALIB_INPUTS), calib)


# How far a merge may move the output beyond the merge limit: this many times what float32 rounding
# alone moves the original (its float32 output against its own float64 one). A merge reassociates
# float arithmetic in every merged layer, so a net that amplifies one rounding per op (deep
# random-init nets: timm EfficientViT-MSRA 4.7e-4 after 20+ exact BN fuses) moves by a comparable
# amount; a wrong merge moves it by orders of magnitude more.
ROUNDING_FACTOR = 10.0


def rounding_floor(model: Any, sets: InputSets, reference: list[list["torch.Tensor"]]) -> Exactness | None:
    """The original model's float32 outputs against its own float64 ones, per input set; None when the
    model does not run in float64."""
    import copy

    import torch

    def double(v: Any) -> Any:
        return v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    try:
        wide = copy.deepcopy(model).double()
        wide_sets = [(what, [tuple(double(a) for a in args) for args in batches]) for what, batches in sets]
        return measure(sets, run_sets(wide, wide_sets), reference)
    except Exception:  # noqa: BLE001 — an op without a float64 kernel: the merge limit alone holds
        return None


def _flat(out: Any) -> "torch.Tensor":
    """Every tensor of a (nested) model output as one float64 vector."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.detach().double().flatten()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        parts = [_flat(o) for o in out]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    return torch.zeros(0, dtype=torch.float64)
