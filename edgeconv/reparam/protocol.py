"""The reparameterization protocol: call each block's own merge method, the root module's too.

timm's `reparameterize_model` walks the children of the model, so a model that *is* a
reparameterizable block (or whose root defines the method) is never merged. This walker visits the
root first, then every submodule, in timm's order (a parent before its children), and calls the
first of these that the module defines:

    fuse()                    -> returns the replacement module (timm convention)
    reparameterize()          -> MobileOne, FastViT, UniRepLKNet blocks
    switch_to_deploy()        -> RepVGG, ACNet, DBB
    merge_dilated_branches()  -> UniRepLKNet's DilatedReparamBlock

Methods that need arguments are not the protocol and are skipped.

Exactness is checked on inputs that can tell: seeded N(0,1) inputs shaped like the example (an
all-zeros example would let a merge that zeroed the kernels and kept the bias pass) and, when given,
calibration samples. Both relative errors are reported; either above `rtol` is an error.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeconv.errors import UserError
from edgeconv.results import Record

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

METHODS = ("fuse", "reparameterize", "switch_to_deploy", "merge_dilated_branches")
RANDOM_INPUTS = "seeded N(0,1) inputs"
CALIB_INPUTS = "calibration inputs"
CHECK_SAMPLES = 8  # calibration samples the merge is checked on (a few forward passes, twice)


@dataclasses.dataclass(frozen=True)
class ProtocolReport(Record):
    calls: tuple[str, ...] = ()  # "path.to.block: method()"
    max_rel_error: float | None = None  # the larger of the two below
    rel_error_random: float | None = None  # merged vs original on seeded N(0,1) inputs shaped like the example
    rel_error_calib: float | None = None  # merged vs original on calibration samples, when given
    calib_samples: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.calls)

    def summary(self) -> str:
        """One line for the manifest: both relative errors, each on what it was measured."""
        return exactness_note(self.rel_error_random, self.rel_error_calib, self.calib_samples)


def reparameterize_model(model: "nn.Module", example_inputs: tuple[Any, ...] | None = None,
                         inplace: bool = False, rtol: float = 1e-4, *,
                         calib_inputs: "np.ndarray | torch.Tensor | None" = None,
                         seed: int = 0) -> tuple["nn.Module", ProtocolReport]:
    """Merge every protocol block of `model` (eval mode). Returns (merged model, report).

    The merged model is run against the original on seeded N(0,1) inputs shaped like
    `example_inputs` and on up to CHECK_SAMPLES of `calib_inputs` (model inputs, N first); a
    relative error above `rtol` on either is a UserError naming the blocks called and the inputs:
    a block whose branches did not merge exactly. Neither given: nothing is checked.
    """
    from edgeconv.models import set_eval

    set_eval(model)
    merged = model if inplace else copy.deepcopy(model)
    sets = check_sets(example_inputs, calib_inputs, seed)
    reference = run_sets(model, sets)  # before any block is touched
    calls: list[str] = []
    merged = set_eval(_visit(merged, "", calls))
    errors = rel_errors(reference, run_sets(merged, sets))
    for (what, _), err in zip(sets, errors):
        if err > rtol:
            raise UserError(f"reparameterization changed the model's output by {err:.2e} relative on {what} "
                            f"(limit {rtol:.0e}) after {', '.join(calls)}; a block does not merge exactly; "
                            "fix that block's merge method or export the model without merging it")
    by_set = dict(zip((what for what, _ in sets), errors))
    return merged, ProtocolReport(tuple(calls), max(errors) if errors else None, by_set.get(RANDOM_INPUTS),
                                  by_set.get(CALIB_INPUTS), calib_count(sets))


# --- the exactness check (shared with the reparam-merge graph pass) -----------------------------

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


def calib_count(sets: InputSets) -> int:
    return sum(len(args[0]) for what, batches in sets if what == CALIB_INPUTS for args in batches)


def run_sets(fn: Callable[..., Any], sets: InputSets) -> list[list["torch.Tensor"]]:
    import torch

    with torch.no_grad():
        return [[_flat(fn(*args)) for args in batches] for _, batches in sets]


def rel_errors(reference: list[list["torch.Tensor"]], got: list[list["torch.Tensor"]]) -> list[float]:
    """Per input set: max |got − reference| / max |reference| over all its batches."""
    out = []
    for ref_set, got_set in zip(reference, got):
        diff = max(float((g - r).abs().max()) if r.numel() else 0.0 for r, g in zip(ref_set, got_set))
        scale = max(float(r.abs().max()) if r.numel() else 0.0 for r in ref_set)
        out.append(diff / max(scale, 1e-30))
    return out


def exactness_note(random_err: float | None, calib_err: float | None, calib_samples: int) -> str:
    parts = []
    if random_err is not None:
        parts.append(f"{random_err:.1e} relative on {RANDOM_INPUTS}")
    if calib_err is not None:
        parts.append(f"{calib_err:.1e} on {calib_samples} {CALIB_INPUTS}")
    elif random_err is not None:
        parts.append("no calibration inputs to check on")
    return "merged vs original: " + ", ".join(parts) if parts else "merged vs original: not checked (no inputs)"


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


def _visit(module: "nn.Module", path: str, calls: list[str]) -> "nn.Module":
    method = _protocol_method(module)
    if method is not None:
        name = method.__name__
        try:
            result = method()
        except Exception as e:
            raise UserError(f"{path or '<root>'}.{name}() failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else ''}); its branches cannot merge") from None
        calls.append(f"{path or '<root>'}: {name}()")
        if name == "fuse":
            from torch import nn

            if not isinstance(result, nn.Module):
                raise UserError(f"{path or '<root>'}.fuse() returned {type(result).__name__}, "
                                "not the fused nn.Module (timm's fuse() convention)")
            module = result
    for child_name, child in list(module.named_children()):
        new = _visit(child, f"{path}.{child_name}" if path else child_name, calls)
        if new is not child:
            setattr(module, child_name, new)
    return module


def _protocol_method(module: "nn.Module") -> Any:
    from torch import nn

    for name in METHODS:
        fn = getattr(module, name, None)
        if fn is None or isinstance(fn, nn.Module) or not inspect.ismethod(fn):
            continue
        params = inspect.signature(fn).parameters.values()
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return fn
    return None
