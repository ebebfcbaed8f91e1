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
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.results import Record

if TYPE_CHECKING:
    from torch import nn

METHODS = ("fuse", "reparameterize", "switch_to_deploy", "merge_dilated_branches")


@dataclasses.dataclass(frozen=True)
class ProtocolReport(Record):
    calls: tuple[str, ...] = ()  # "path.to.block: method()"
    max_rel_error: float | None = None  # merged vs original on the example inputs, when given

    @property
    def changed(self) -> bool:
        return bool(self.calls)


def reparameterize_model(model: "nn.Module", example_inputs: tuple[Any, ...] | None = None,
                         inplace: bool = False, rtol: float = 1e-4) -> tuple["nn.Module", ProtocolReport]:
    """Merge every protocol block of `model` (eval mode). Returns (merged model, report).

    With `example_inputs`, the merged model is run against the original and a relative error above
    `rtol` is a UserError naming the blocks called: a block whose branches did not merge exactly.
    """
    import torch

    from edgeconv.models import set_eval

    set_eval(model)
    merged = model if inplace else copy.deepcopy(model)
    reference = None
    if example_inputs is not None:
        with torch.no_grad():
            reference = model(*example_inputs)  # before any block is touched
    calls: list[str] = []
    merged = set_eval(_visit(merged, "", calls))
    err = None
    if reference is not None:
        with torch.no_grad():
            out = merged(*example_inputs)
        err = float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
        if err > rtol:
            raise UserError(f"reparameterization changed the model's output by {err:.2e} relative "
                            f"(limit {rtol:.0e}) after {', '.join(calls)}; a block does not merge exactly; "
                            "fix that block's merge method or export the model without merging it")
    return merged, ProtocolReport(tuple(calls), err)


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
