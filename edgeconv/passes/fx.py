"""Small helpers for editing the unlifted FX graph of a captured program."""
from __future__ import annotations

from typing import Any

import torch
import torch.fx

aten = torch.ops.aten

CONV_OPS = (aten.conv2d.default, aten.convolution.default, aten.conv1d.default)
BN_OPS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)


def attr(gm: torch.nn.Module, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def const(gm: torch.nn.Module, node: Any) -> torch.Tensor | None:
    """The tensor behind a get_attr node, or None if the argument is not a constant."""
    if isinstance(node, torch.fx.Node) and node.op == "get_attr":
        return attr(gm, node.target)
    return None


def new_const(gm: torch.fx.GraphModule, before: torch.fx.Node, stem: str, value: torch.Tensor) -> torch.fx.Node:
    """Register `value` as a new parameter on the root and return a get_attr node for it."""
    name, i = f"_ec_{stem}", 0
    while hasattr(gm, f"{name}_{i}"):
        i += 1
    name = f"{name}_{i}"
    gm.register_parameter(name, torch.nn.Parameter(value.detach().clone(), requires_grad=False))
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(name)


def op_name(node: Any) -> str:
    if not isinstance(node, torch.fx.Node):
        return type(node).__name__
    if node.op == "call_function":
        return str(getattr(node.target, "__name__", node.target)).replace(".default", "")
    return node.op


def finish(gm: torch.fx.GraphModule) -> None:
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
