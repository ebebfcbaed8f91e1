"""Tensors above Core ML's rank 5, rewritten at a lower rank by merging dims that every op in
their region treats alike.

A region is a connected set of rank > 5 tensors in the program: made by reshapes (view,
unsqueeze, flatten), read in the end by reshapes, splits or reductions to rank <= 5, and in
between moved (permute/transpose), mapped element by element (adds with broadcasting, q/dq,
activations), or mixed along the last dim (linear) or one dim (softmax). Two neighbouring dims
may be merged into one when every op keeps them neighbours, in order, and treats them alike:

- a permute keeps a pair only where the output has them next to each other, in order; a dim of
  size 1 moves no element, so it is left out of that test and may join any neighbour (CSATv2's
  DCT stem: [1, C, H/k, k, W/k, k] permuted (0, 2, 4, 1, 3, 5), six dims apart but for the batch);
- an elementwise op needs every operand full on both or broadcast on both;
- linear and softmax need their dim on its own; a reduction (or unbind/select) reading the
  region needs its dims apart from the others.

Each tensor's merged shape holds the same elements in the same order, so every reshape that
reads it still holds; the region is rewritten when every tensor in it is then rank <= 5.
Twins' locally-grouped attention (reshape → transpose(2, 3) → qkv linear), Hiera's mask-unit
max pooling (view → amax) and MViTv2's decomposed relative position (view + unsqueezed terms)
are such regions; a reshape → permute → reshape alone is `export._lower_rank_moves`.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MAX_RANK = 5

_RESHAPES = ("view", "reshape", "_unsafe_view", "flatten", "unsqueeze", "squeeze", "alias")
_ELEMENTWISE = (
    "add", "sub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "maximum", "minimum",
    "relu", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "hardsigmoid", "hardswish", "clamp", "where",
    "clone", "contiguous", "dropout", "to", "_to_copy", "quantize_per_tensor", "dequantize_per_tensor",
)
_REDUCTIONS = ("amax", "amin", "sum", "mean")
_SPLITS = ("unbind", "select")
_CUT = ("cut",)


def op_name(n: Any) -> str:
    """aten.add.Tensor → add; quantized_decomposed.quantize_per_tensor.default → quantize_per_tensor."""
    parts = str(getattr(n, "target", "")).split(".")
    return parts[1] if getattr(n, "op", None) == "call_function" and len(parts) > 1 else ""


def _val(n: Any) -> "torch.Tensor | None":
    import torch

    v = getattr(n, "meta", {}).get("val")
    return v if isinstance(v, torch.Tensor) else None


class _Pairs:
    """Union-find over (node, i): whether dims i and i + 1 of node's tensor may be merged. Pairs in
    one set are merged or cut together; the set holding _CUT is cut."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, k: Any) -> Any:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)

    def cut(self, n: Any, i: int) -> None:
        if 0 <= i < _val(n).dim() - 1:
            self.union((n, i), _CUT)

    def groups(self, n: Any) -> list[list[int]]:
        groups = [[0]]
        for i in range(_val(n).dim() - 1):
            if self.find((n, i)) == self.find(_CUT):
                groups.append([i + 1])
            else:
                groups[-1].append(i + 1)
        return groups


def _dims(u: "torch.fx.Node", rank: int) -> list[int]:
    """The dims a reduction reads along (all for none given)."""
    dims = u.args[1] if len(u.args) > 1 else u.kwargs.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        return list(range(rank))
    return sorted({int(d) % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims])})


def _cut_around(pairs: _Pairs, n: Any, dims: list[int]) -> None:
    """Dims in `dims` kept apart from the dims not in it."""
    for i in range(_val(n).dim() - 1):
        if (i in dims) != (i + 1 in dims):
            pairs.cut(n, i)


def _constrain(n: "torch.fx.Node", high: set, pairs: _Pairs) -> bool:
    """Record what the op making `n` (rank > 5) needs; False for an op this cannot rewrite."""
    import torch

    op, rank, shape = op_name(n), _val(n).dim(), tuple(_val(n).shape)
    x = n.args[0] if n.args else None
    if op in _RESHAPES:
        return True  # reads its input in order and makes any shape: nothing asked of either
    if (x not in high or _val(x).dim() != rank) and op not in _ELEMENTWISE:
        return False
    if op in ("permute", "transpose"):
        _constrain_permute(n, x, _full_perm(n, rank), pairs)
        return True
    if op in ("linear", "_softmax", "softmax", "log_softmax", "_log_softmax"):
        d = rank - 1 if op == "linear" else int(n.args[1]) % rank
        for j in range(rank - 1):
            pairs.union((n, j), (x, j))
        _cut_around(pairs, n, [d])
        return True
    if op not in _ELEMENTWISE or any(isinstance(v, torch.fx.Node) for v in n.kwargs.values()):
        return False
    operands = [a for a in n.args if isinstance(a, torch.fx.Node)]
    if any(_val(a) is None for a in operands) or any(_val(a).dim() > rank for a in operands):
        return False
    for a in operands:
        if a in high and _val(a).dim() == rank:
            for j in range(rank - 1):
                pairs.union((n, j), (a, j))
    full = [i for i in range(rank) if shape[i] != 1]  # a dim of size 1 merges with anything
    for a in operands:
        padded = (1,) * (rank - _val(a).dim()) + tuple(_val(a).shape)
        for i, k in itertools.pairwise(full):
            if (padded[i] == 1) != (padded[k] == 1):
                pairs.cut(n, i)  # this operand is broadcast along one of them only
    return True


def _constrain_permute(n: torch.fx.Node, x: torch.fx.Node, perm: list[int], pairs: _Pairs) -> None:
    """Neighbouring dims of the output (and of the input) stay mergeable where the permute keeps them
    neighbours, in order, on both sides; dims of size 1 are skipped in that test (they move no
    element): the pairs between two kept neighbours (unit dims included) are merged or cut as one
    set with the pairs between them on the other side, and a unit dim at either end joins freely."""
    out_shape, in_shape = tuple(_val(n).shape), tuple(_val(x).shape)
    outs = [j for j in range(len(perm)) if out_shape[j] != 1]  # the output's dims that move elements
    ins = [a for a in range(len(perm)) if in_shape[a] != 1]
    for i, k in itertools.pairwise(outs):
        lo = perm[i]
        if lo in ins and ins.index(lo) + 1 < len(ins) and ins[ins.index(lo) + 1] == perm[k]:
            for j in range(i, k):  # kept neighbours: one set with the pairs between them in the input
                pairs.union((n, j), (x, lo))
            for a in range(lo, perm[k]):
                pairs.union((x, a), (x, lo))
        else:
            for j in range(i, k):
                pairs.cut(n, j)
    for a, b in itertools.pairwise(ins):
        i = perm.index(a)
        if not (i in outs and outs.index(i) + 1 < len(outs) and perm[outs[outs.index(i) + 1]] == b):
            for c in range(a, b):
                pairs.cut(x, c)


def _permute_order(n: torch.fx.Node, pairs: _Pairs) -> list[int] | None:
    """The permute of `n` at the merged shapes, over the groups of its input that move elements
    (the groups of size 1 reshaped away): for each such output group, the input group holding its
    dims, in order; None where the merge made that impossible."""
    import math

    x, rank = n.args[0], _val(n).dim()
    perm = _full_perm(n, rank)
    out_shape, in_shape = tuple(_val(n).shape), tuple(_val(x).shape)
    x_groups = [[d for d in g if in_shape[d] != 1] for g in pairs.groups(x)]
    x_groups = [g for g in x_groups if g]
    order = []
    for g in pairs.groups(n):
        moved = [perm[d] for d in g if out_shape[d] != 1]
        if not moved:
            continue
        if moved not in x_groups:
            return None
        order.append(x_groups.index(moved))
    return order if sorted(order) == list(range(len(x_groups))) and math.prod(out_shape) == math.prod(in_shape) \
        else None


def _reader_ok(u: "torch.fx.Node", n: "torch.fx.Node", pairs: _Pairs) -> bool:
    """Record what `u` (rank <= 5, reading `n` of rank > 5) needs; False where it cannot be rewritten."""
    op, rank = op_name(u), _val(n).dim()
    if u.args[0] is not n or any(a is n for a in u.args[1:]):
        return False
    if op in _RESHAPES:
        return True
    if op in _SPLITS:
        _cut_around(pairs, n, [int((*u.args, 0)[1]) % rank])
        return True
    if op in _REDUCTIONS:
        _cut_around(pairs, n, _dims(u, rank))
        return True
    return False


def lower_rank_regions(gm: "torch.fx.GraphModule") -> int:
    """Rewrite each region of rank > 5 tensors that merges down to rank <= 5 (see the module
    docstring); returns how many tensors were rewritten."""
    high = [n for n in gm.graph.nodes if n.op == "call_function" and _val(n) is not None and _val(n).dim() > MAX_RANK]
    if not high:
        return 0
    hs = set(high)
    pairs, region = _Pairs(), _Pairs()
    bad: set = set()
    for n in high:
        if not _constrain(n, hs, pairs):
            bad.add(n)
        for a in n.all_input_nodes:
            if a in hs:
                region.union(n, a)
        for u in n.users:
            if u not in hs and not _reader_ok(u, n, pairs):
                bad.add(n)
    blocked = {region.find(n) for n in bad} | {region.find(n) for n in high if len(pairs.groups(n)) > MAX_RANK
                                               or (op_name(n) in ("permute", "transpose")
                                                   and _permute_order(n, pairs) is None)}
    todo = [n for n in high if region.find(n) not in blocked]
    new: dict = {}
    for n in todo:
        new[n] = _rewrite(gm.graph, n, hs, pairs, new)
    for n in todo:
        for u in [u for u in n.users if u not in hs]:
            _reread(gm.graph, u, n, new[n], pairs)
    for n in reversed(todo):
        gm.graph.erase_node(n)
    if todo:
        gm.recompile()
    return len(todo)


def _merged(shape: tuple[int, ...], groups: list[list[int]]) -> list[int]:
    import math

    return [math.prod(int(shape[i]) for i in g) for g in groups]


def _rewrite(graph: "torch.fx.Graph", n: "torch.fx.Node", high: set, pairs: _Pairs, new: dict) -> "torch.fx.Node":
    """The node computing `n` at its merged shape, before `n`."""
    import torch

    aten = torch.ops.aten
    op, val = op_name(n), _val(n)
    groups = pairs.groups(n)
    shape = _merged(tuple(val.shape), groups)
    with graph.inserting_before(n):
        if op in _RESHAPES:
            m = graph.call_function(aten.reshape.default, (new.get(n.args[0], n.args[0]), shape))
        elif op in ("permute", "transpose"):  # over the groups that move elements; unit groups reshaped in
            x = n.args[0]
            x_shape = _merged(tuple(_val(x).shape), pairs.groups(x))
            moving = [k for k in x_shape if k != 1]
            src = new[x]
            if moving != x_shape:
                src = graph.call_function(aten.reshape.default, (src, moving))
            order = _permute_order(n, pairs)
            m = graph.call_function(aten.permute.default, (src, order))
            if [moving[k] for k in order] != shape:
                m = graph.call_function(aten.reshape.default, (m, shape))
        elif op in ("linear", "_softmax", "softmax", "log_softmax", "_log_softmax"):
            args = list(n.args)
            args[0] = new[n.args[0]]
            if op != "linear":
                args[1] = next(k for k, g in enumerate(groups) if int(n.args[1]) % val.dim() in g)
            m = graph.call_function(n.target, tuple(args), dict(n.kwargs))
        else:  # elementwise: every tensor operand at the merged shape, broadcast dims kept at 1
            def operand(a: Any) -> Any:
                if not isinstance(a, torch.fx.Node) or _val(a) is None:
                    return a
                if a in new:
                    return new[a]
                if _val(a).dim() == 0:
                    return a
                padded = (1,) * (val.dim() - _val(a).dim()) + tuple(_val(a).shape)
                return graph.call_function(aten.reshape.default, (a, _merged(padded, groups)))

            m = graph.call_function(n.target, tuple(operand(a) for a in n.args), dict(n.kwargs))
    m.meta["val"] = val.new_empty(shape)
    return m


def _full_perm(n: "torch.fx.Node", rank: int) -> list[int]:
    if op_name(n) == "permute":
        return [int(d) % rank for d in n.args[1]]
    perm = list(range(rank))
    a, b = (int(d) % rank for d in n.args[1:3])
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _reread(graph: "torch.fx.Graph", u: "torch.fx.Node", n: "torch.fx.Node", m: "torch.fx.Node", pairs: _Pairs) -> None:
    """`u` (rank <= 5) reads `m`, the merged `n`, and gives what it gave before."""
    import torch

    aten = torch.ops.aten
    op, groups = op_name(u), pairs.groups(n)

    def index(d: int) -> int:
        return next(k for k, g in enumerate(groups) if d % _val(n).dim() in g)

    def shaped_back(piece: "torch.fx.Node") -> None:
        with graph.inserting_after(piece):
            back = graph.call_function(aten.reshape.default, (piece, list(_val(piece).shape)))
        back.meta["val"] = _val(piece)
        piece.replace_all_uses_with(back, delete_user_cb=lambda w: w is not back)

    if op in _RESHAPES:
        u.target, u.args, u.kwargs = aten.reshape.default, (m, list(_val(u).shape)), {}
        return
    if op in _SPLITS:
        u.args = (m, index(int((*u.args, 0)[1])), *u.args[2:])
        for piece in ([p for p in u.users if p.target.__name__ == "getitem"] if op == "unbind" else [u]):
            shaped_back(piece)
        return
    dims = sorted({index(d) for d in _dims(u, _val(n).dim())})  # a reduction
    u.args = (m, dims, *u.args[2:])
    u.kwargs = {k: v for k, v in u.kwargs.items() if k != "dim"}
    shaped_back(u)
