"""cleanup: drop ops that do nothing at inference (dropout in eval, clone, alias, detach, identity
contiguous) and dead code, so every exporter sees the same minimal graph.

Before:  y = relu(clone(dropout(conv2d(x, W), p, train=False)))
After:   y = relu(conv2d(x, W))

A clone or contiguous is not a no-op for a `view` after it: `x.permute(...).contiguous().view(...)`
(window partitions: HaloNet, Swin) views the copy's new layout, which the permuted tensor itself
cannot be viewed as. Such a view (also past a Q/DQ pair or elementwise op, which keep the layout)
becomes a `reshape`, which copies exactly when it has to.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgeconv.passes import PassResult, reads
from edgeconv.registry import PASSES

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph


def _noop_targets():
    import torch

    a = torch.ops.aten
    # in-place spellings too: timm's `nn.Dropout(inplace=True)` (TNT's attn_drop) captures as dropout_
    return {a.clone.default, a.alias.default, a.detach.default, a.detach_.default, a.dropout.default,
            a.dropout_.default, a.feature_dropout.default, a.feature_dropout_.default, a.alpha_dropout.default,
            a.alpha_dropout_.default, a.feature_alpha_dropout.default, a.feature_alpha_dropout_.default,
            a.contiguous.default, a.lift_fresh_copy.default}


def _views():
    import torch

    return {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default}


def _reshape():
    import torch

    return torch.ops.aten.reshape.default


def _views_to_reshapes(node) -> None:
    """Every view reading `node`'s layout: its users, and past ops that keep the shape and so the
    strides (quantize/dequantize of an int8 program, elementwise ops) — DaViT's window partition
    views through a Q/DQ pair."""
    todo, seen = list(node.users), set()
    while todo:
        user = todo.pop()
        if user in seen or user.op != "call_function":
            continue
        seen.add(user)
        if user.target in _views():
            user.target = _reshape()
        elif _same_shape(user, user.args[0] if user.args else None):
            todo.extend(user.users)


def _same_shape(node, src) -> bool:
    a, b = node.meta.get("val"), getattr(src, "meta", {}).get("val")
    return getattr(a, "shape", None) is not None and getattr(a, "shape", None) == getattr(b, "shape", ())


@PASSES.register("cleanup")
@reads()
def cleanup(graph: "Graph", ctx: "Context") -> PassResult:
    from edgeconv.passes.fx import finish

    gm = graph.module()
    noops = _noop_targets()
    removed = []
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in noops:
            # dropout(x, p, train): identity in eval only
            if "dropout" in str(node.target) and len(node.args) > 2 and node.args[2]:
                continue
            _views_to_reshapes(node)
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed.append(node.name)
    # Unused get_attr nodes (a BN's num_batches_tracked) are dead but not work: the next capture
    # lifts those buffers again, so removing them changes nothing. Only dead computation counts.
    ops = sum(n.op == "call_function" for n in gm.graph.nodes)
    gm.graph.eliminate_dead_code()
    dead = ops - sum(n.op == "call_function" for n in gm.graph.nodes)
    if not removed and not dead:
        return PassResult(graph, False, ("nothing to remove",))
    finish(gm)
    note = f"removed {len(removed)} no-op node(s)" + (f" ({', '.join(removed)})" if removed else "")
    return PassResult(graph.with_module(gm), True, (note, f"removed {dead} dead node(s)"))
