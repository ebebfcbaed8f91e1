"""Signs of aten-graph values proven from the graph's structure (never from calibration data):
`Signs(gm).positive(n)` / `.nonnegative(n)`. A rewrite that is exact only for a positive operand
(`a / b` → `a · rsqrt(b) · rsqrt(b)`, calib.rewrites.algebra_to_int8_ops) asks here first.

What is known, by op: relu/relu6/abs/norms/x·x/even powers are ≥ 0; exp/sigmoid/softmax are > 0;
sums, means, products, matmuls and linears (constant weights) of such stay so, and adding a positive
constant makes a nonnegative value positive; clamp to a positive minimum; constants by value;
relayouts keep the sign of what they move.

A value is judged on a `part`: a box of per-axis index ranges (axes counted from the end), so a
slice is judged on the values it keeps. That is what linear attention needs (EfficientViT's LiteMLA:
`v = pad(v, (0, 1), value=1)`, `out = q @ (kᵀ @ v)`, divided by `out[..., -1:] + eps`): the last
column of a matmul is the matmul of its right operand's last column, and a slice wholly inside a
constant pad is that constant, though v itself has either sign."""
from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
UNKNOWN, NONNEG, POSITIVE = 0, 1, 2
DEPTH = 100  # a residual stream is walked back block by block; beyond this: unknown


def _targets(*ops: Any) -> frozenset:
    out = set()
    for op in ops:
        out.update(getattr(op, o) for o in op.overloads())
    return frozenset(out)


ALWAYS_POSITIVE = _targets(aten.exp, aten.sigmoid, aten.softmax, aten._softmax)
ALWAYS_NONNEG = _targets(aten.relu, aten.relu_, aten.relu6, aten.abs, aten.hardsigmoid, aten.linalg_vector_norm,
                         aten.norm, aten.square)
# positive in, positive out (mean of positives, a pool, a resize: convex combinations or sums)
KEEPS_SIGN = _targets(aten.mean, aten.sum, aten.amax, aten.amin, aten.max_pool2d, aten.avg_pool2d,
                      aten.adaptive_avg_pool2d, aten.upsample_nearest2d, aten.upsample_bilinear2d, aten.sqrt,
                      aten.view, aten.reshape, aten._unsafe_view, aten.flatten, aten.unflatten, aten.unsqueeze,
                      aten.squeeze, aten.select, aten.repeat, aten.flip, aten.roll, aten.split,
                      aten.split_with_sizes, aten.chunk, aten.unbind, aten.pixel_shuffle, aten.pixel_unshuffle)
# same shape in and out, element for element: a part carries over unchanged
ELEMENTWISE = _targets(aten.clone, aten.contiguous, aten.alias, aten.detach, aten.to, aten._to_copy,
                       aten.dropout, aten.relu, aten.relu_)
MATMUL = _targets(aten.matmul, aten.bmm, aten.mm)
CLAMP = _targets(aten.clamp, aten.clamp_min, aten.hardtanh)
PAD = _targets(aten.constant_pad_nd, aten.pad)
PAD_MODE = _targets(aten.pad)
RECIPROCAL = _targets(aten.rsqrt, aten.reciprocal)
ADD, MUL, DIV, POW = _targets(aten.add), _targets(aten.mul), _targets(aten.div), _targets(aten.pow)
LINEAR, HARDTANH, CAT = _targets(aten.linear), _targets(aten.hardtanh), _targets(aten.cat)
EXPAND, SLICE, T, TRANSPOSE = _targets(aten.expand), _targets(aten.slice), _targets(aten.t), _targets(aten.transpose)
RELAID = EXPAND | SLICE | T | TRANSPOSE | _targets(aten.permute)


class Signs:
    """Sign facts about one graph; memoised per (node, part). Build one per rewrite call: the
    memo is only valid while the values it judged stay what they are."""

    def __init__(self, gm: GraphModule) -> None:
        self.gm, self.memo = gm, {}

    def positive(self, n: Any) -> bool:
        return self.sign(n) == POSITIVE

    def nonnegative(self, n: Any) -> bool:
        return self.sign(n) >= NONNEG

    def sign(self, n: Any, part: tuple = (), depth: int = 0) -> int:
        if isinstance(n, bool) or not isinstance(n, (Node, int, float)):
            return UNKNOWN
        if not isinstance(n, Node):
            return POSITIVE if n > 0 else NONNEG if n == 0 else UNKNOWN
        key = (n, part)
        if key not in self.memo:
            self.memo[key] = UNKNOWN if depth > DEPTH else self._sign(n, part, depth + 1)
        return self.memo[key]

    def _sign(self, n: Node, part: tuple, depth: int) -> int:
        if n.op == "get_attr":
            return _sign_of(_constant(self.gm, n), part)
        if n.op != "call_function":
            return UNKNOWN
        t, args = n.target, n.args
        x = args[0] if args else None

        def of(v: Any, p: tuple = ()) -> int:
            return self.sign(v, p, depth)

        if t in ALWAYS_POSITIVE:
            return POSITIVE
        if t in ALWAYS_NONNEG:  # relu of a positive part stays positive (the pad's constant column)
            return max(NONNEG, of(x, part) if t in ELEMENTWISE else UNKNOWN)
        if t in ELEMENTWISE:  # a cast to an integer type may round a positive value to 0
            return of(x, part) if _float_out(n) else min(of(x, part), NONNEG)
        if t is operator.getitem or t in KEEPS_SIGN:
            return of(x)
        if t in RECIPROCAL:
            return POSITIVE if of(x) >= NONNEG else UNKNOWN  # rsqrt(0) = inf > 0
        if t in MUL and len(args) == 2 and args[0] is args[1]:
            return max(NONNEG, of(x, part))
        if t in POW and len(args) == 2 and isinstance(args[1], (int, float)):
            s = of(x, part)
            even = float(args[1]).is_integer() and int(args[1]) % 2 == 0
            return s if s else NONNEG if even else UNKNOWN
        if t in ADD and len(args) == 2 and n.kwargs.get("alpha", 1) > 0:
            a, b = (of(v, _carry(part, v, n)) for v in args)
            return max(a, b) if min(a, b) else UNKNOWN  # ≥ 0 plus > 0 is > 0
        if t in MUL and len(args) == 2:
            return min(of(v, _carry(part, v, n)) for v in args)
        if t in DIV and len(args) == 2 and not n.kwargs.get("rounding_mode"):
            a, b = (of(v, _carry(part, v, n)) for v in args)
            return min(a, b) if b == POSITIVE else UNKNOWN
        if t in MATMUL:
            return min(of(v, _matmul_part(part, v, i)) for i, v in enumerate(args[:2]))
        if t in LINEAR:
            s = min(of(x, tuple(r for r in part if r[0] != -1)), of(args[1]))
            bias = of(args[2]) if len(args) > 2 and args[2] is not None else s
            return max(s, bias) if min(s, bias) else UNKNOWN
        if t in CLAMP:  # min(max(x, lo), hi)
            lo = args[1] if len(args) > 1 else n.kwargs.get("min", n.kwargs.get("min_val"))
            hi = args[2] if len(args) > 2 else n.kwargs.get("max", n.kwargs.get("max_val"))
            if t in HARDTANH:
                lo, hi = (-1.0 if lo is None else lo), (1.0 if hi is None else hi)
            low = max(of(x, part), of(lo)) if lo is not None else of(x, part)
            return low if hi is None else min(low, of(hi))
        if t in RELAID:
            return of(x, _relaid_part(part, n))
        if t in PAD:
            return self._pad(n, part, of)
        if t in CAT:
            return min((of(v) for v in args[0]), default=UNKNOWN)
        return UNKNOWN

    def _pad(self, n: Node, part: tuple, of: Any) -> int:
        """A constant pad: inside the padded border the value; inside the input the input's sign."""
        x, pads = n.args[0], list(n.args[1])
        if n.target in PAD_MODE:
            if (n.args[2] if len(n.args) > 2 else n.kwargs.get("mode", "constant")) != "constant":
                return UNKNOWN
            value = n.args[3] if len(n.args) > 3 else n.kwargs.get("value")
        else:
            value = n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0)
        value = 0.0 if value is None else value
        shape = _shape(n)
        if shape is None or any(p < 0 for p in pads):
            return min(of(value), of(x))
        inner, border = [], False
        for k in range(len(pads) // 2):  # pads run from the last axis: (lo, hi) of -1, then of -2, ...
            axis, (lo, hi) = -k - 1, pads[2 * k:2 * k + 2]
            size = shape[axis] - lo - hi
            start, stop = next(((a, b) for ax, a, b in part if ax == axis), (0, shape[axis]))
            if stop <= lo or start >= lo + size:
                return of(value)  # wholly in the border
            border |= start < lo or stop > lo + size
            if (axis, start, stop) in part:
                inner.append((axis, max(start, lo) - lo, min(stop, lo + size) - lo))
        inner += [r for r in part if -r[0] > len(pads) // 2]
        inside = of(x, tuple(sorted(inner)))
        return min(of(value), inside) if border else inside


def _constant(gm: GraphModule, n: Node) -> torch.Tensor | None:
    obj: Any = gm
    for name in n.target.split("."):
        obj = getattr(obj, name, None)
    return obj.detach() if isinstance(obj, torch.Tensor) else None


def _sign_of(c: torch.Tensor | None, part: tuple) -> int:
    if c is None or not c.dtype.is_floating_point and c.dtype not in (torch.int32, torch.int64):
        return UNKNOWN
    for axis, start, stop in part:
        if c.dim() >= -axis and c.shape[axis] > 1 and stop <= c.shape[axis]:
            c = c.narrow(axis, start, stop - start)
    if c.numel() == 0 or torch.isnan(c).any():
        return UNKNOWN
    return POSITIVE if bool((c > 0).all()) else NONNEG if bool((c >= 0).all()) else UNKNOWN


def _float_out(n: Node) -> bool:
    v = n.meta.get("val")
    return not isinstance(v, torch.Tensor) or v.dtype.is_floating_point


def _shape(n: Any) -> tuple[int, ...] | None:
    v = n.meta.get("val") if isinstance(n, Node) else None
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _carry(part: tuple, operand: Any, out: Node) -> tuple:
    """The part of a broadcast operand the output's part reads: the same ranges on the axes the
    operand has at full size (an axis it broadcasts reads its one element whatever the range)."""
    have, want = _shape(operand), _shape(out)
    if not part or have is None or want is None:
        return ()
    return tuple(r for r in part if len(have) >= -r[0] and have[r[0]] == want[r[0]])


def _matmul_part(part: tuple, operand: Any, i: int) -> tuple:
    """Output rows come from the left operand's rows (axis -2), columns from the right's (-1); a
    range on a batch axis is dropped (judging more values than the part is only more cautious)."""
    shape = _shape(operand)
    if shape is None or len(shape) < 2:
        return ()
    return tuple(r for r in part if r[0] == (-2 if i == 0 else -1))


def _relaid_part(part: tuple, n: Node) -> tuple:
    """The output's part as ranges of the input of a transpose, permute, expand or slice."""
    src, out = _shape(n.args[0]), _shape(n)
    if src is None or out is None:
        return ()
    rank, t = len(out), n.target
    if t in EXPAND:
        return _carry(part, n.args[0], n)
    if t in SLICE:
        dim = (n.args[1] if len(n.args) > 1 else 0) % rank
        size = src[dim]
        start, stop = (n.args[2] if len(n.args) > 2 else None), (n.args[3] if len(n.args) > 3 else None)
        step = n.args[4] if len(n.args) > 4 else 1
        start = 0 if start is None else max(0, min(size, start + size if start < 0 else start))
        stop = size if stop is None else max(0, min(size, stop + size if stop < 0 else stop))
        axis = dim - rank
        mine = [r for r in part if r[0] == axis]
        if mine:  # a slice of the slice: indices into the kept ones
            _, a, b = mine[0]
            start, stop = start + a * step, min(stop, start + (b - 1) * step + 1)
        kept = [r for r in part if r[0] != axis]
        return tuple(sorted([*kept, (axis, start, stop)]))
    if t in T:
        perm = list(range(rank))[::-1]
    elif t in TRANSPOSE:
        perm = list(range(rank))
        d0, d1 = n.args[1] % rank, n.args[2] % rank
        perm[d0], perm[d1] = d1, d0
    else:
        perm = [d % rank for d in n.args[1]]
    return tuple(sorted((perm[axis + rank] - rank, a, b) for axis, a, b in part))
