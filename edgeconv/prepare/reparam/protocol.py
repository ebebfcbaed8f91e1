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
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.prepare.reparam.exactness import ROUNDING_FACTOR, Exactness, check_sets, measure, rounding_floor, run_sets
from edgeconv.results import Record

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

METHODS = ("fuse", "reparameterize", "switch_to_deploy", "merge_dilated_branches")


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
        return Exactness(self.rel_error_random, self.rel_error_calib, self.calib_samples).note()


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
    ex = measure(sets, reference, run_sets(merged, sets))
    worst = ex.worst(rtol)
    floor = rounding_floor(model, sets, reference) if worst is not None else None
    if worst is not None and floor is not None:  # the net's own float32 rounding, amplified
        limit = max(rtol, ROUNDING_FACTOR * (floor.max_rel_error or 0.0))
        worst = ex.worst(limit)
        rtol = limit
    if worst is not None:
        what, err = worst
        raise UserError(f"reparameterization changed the model's output by {err:.2e} relative on {what} "
                        f"(limit {rtol:.1e}) after {', '.join(calls)}; a block does not merge exactly; "
                        "fix that block's merge method or export the model without merging it")
    return merged, ProtocolReport(tuple(calls), ex.max_rel_error, ex.random, ex.calib, ex.calib_samples)


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
