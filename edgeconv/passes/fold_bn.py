"""fold-conv-bn: fold every eval-mode BatchNorm whose input is a conv output into that conv.

Before:  y = batch_norm(conv2d(x, W, b), γ, β, μ, σ²)
After:   y = conv2d(x, W·c, β + c·(b − μ))        with c = γ / sqrt(σ² + eps)

A BN that is not directly after a conv (torchcrepe: conv → relu → BN) is refused, with the reason
in the stage notes: folding it backwards through the non-linearity would change the function.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgeconv.passes import PassResult, reads
from edgeconv.registry import PASSES

if TYPE_CHECKING:
    from edgeconv.context import Context
    from edgeconv.graph import Graph


def _bn_parts(node):  # -> (input, γ, β, μ, σ², eps, training)
    from edgeconv.passes.fx import aten

    a = node.args
    if node.target == aten.batch_norm.default:
        return a[0], a[1], a[2], a[3], a[4], a[7], bool(a[5])
    return a[0], a[1], a[2], a[3], a[4], a[6], False


def refusal(gm, node) -> str | None:
    """Why this BN cannot fold into the conv before it, or None if it can."""
    from edgeconv.passes.fx import CONV_OPS, const, op_name

    src, gamma, beta, mean, var, _eps, training = _bn_parts(node)
    if training:
        return "BatchNorm is in training mode (call model.eval() first)"
    if getattr(src, "op", None) != "call_function" or src.target not in CONV_OPS:
        return (f"its input is {op_name(src)} ({getattr(src, 'name', '?')}), not a conv output; folding "
                "backwards through it would change the function")
    if len(src.users) != 1:
        return f"the conv output {src.name} is also used by {len(src.users) - 1} other node(s)"
    if src.target == torch_ops().convolution.default and src.args[6]:
        return "the conv is transposed"
    if const(gm, src.args[1]) is None:
        return "the conv weight is not a constant"
    if any(t is not None and const(gm, t) is None for t in (gamma, beta, mean, var)):
        return "a BatchNorm statistic is not a constant"
    return None


def torch_ops():
    import torch

    return torch.ops.aten


def _fold(gm, bn) -> None:
    import torch

    from edgeconv.passes.fx import const, new_const

    conv, gamma, beta, mean, var, eps, _ = _bn_parts(bn)
    w = const(gm, conv.args[1]).detach().double()
    bias_node = conv.args[2] if len(conv.args) > 2 else None
    b = const(gm, bias_node) if bias_node is not None else None
    b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.detach().double()
    mu, sigma2 = const(gm, mean).double(), const(gm, var).double()
    g = const(gm, gamma).double() if gamma is not None else torch.ones_like(mu)
    be = const(gm, beta).double() if beta is not None else torch.zeros_like(mu)
    c = g / torch.sqrt(sigma2 + eps)
    dtype = const(gm, conv.args[1]).dtype
    w_new = (w * c.reshape(-1, *([1] * (w.dim() - 1)))).to(dtype)
    b_new = (be + c * (b - mu)).to(dtype)
    args = list(conv.args) + [None] * (3 - len(conv.args))
    args[1] = new_const(gm, conv, "folded_weight", w_new)
    args[2] = new_const(gm, conv, "folded_bias", b_new)
    conv.args = tuple(args)
    if bn.target == torch.ops.aten.batch_norm.default:
        bn.replace_all_uses_with(conv)
    else:  # returns (out, save_mean, save_invstd): only getitem 0 is ever used in eval
        for user in list(bn.users):
            user.replace_all_uses_with(conv)
            gm.graph.erase_node(user)
    gm.graph.erase_node(bn)


@PASSES.register("fold-conv-bn")
@reads()
def fold_conv_bn(graph: "Graph", ctx: "Context") -> PassResult:
    from edgeconv.passes.fx import BN_OPS, finish

    gm = graph.module()
    folded, notes = [], []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in BN_OPS:
            continue
        why = refusal(gm, node)
        if why:
            notes.append(f"refused {node.name}: {why}")
            continue
        conv_name = node.args[0].name
        _fold(gm, node)
        folded.append(f"{node.name}→{conv_name}")
    if not folded:
        return PassResult(graph, False, tuple(notes) or ("no BatchNorm to fold",))
    finish(gm)
    notes.insert(0, f"folded {len(folded)} BatchNorm: {', '.join(folded)}")
    return PassResult(graph.with_module(gm), True, tuple(notes))
