"""The cost model's view of a network: a flat list of fused ops with their work and traffic.

An `Op` is what one runtime kernel does after the usual fusions (conv + BN + ReLU/ReLU6 is one
op; a standalone hard-swish, SiLU, GELU, LayerNorm, residual add or SE multiply is its own
elementwise op, because mobile runtimes run those as separate kernels). Shapes are tracked
analytically by `Builder`, so describing a network costs no tensors and no torch import.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from edgeconv.costops import Op, OpClass, conv_class


@dataclasses.dataclass(frozen=True)
class T:
    """A feature map's shape (channels, height, width) at batch 1."""

    c: int
    h: int
    w: int

    @property
    def n(self) -> int:
        return self.c * self.h * self.w


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def _out(size: int, k: int, s: int, p: int, ceil: bool = False) -> int:
    span = size + 2 * p - k
    o = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= size + p:  # PyTorch: the last window must start inside the input
        o -= 1
    return o


class Builder:
    """Collects ops while tracking shapes: `x = b.conv(x, 64, 3, s=2)`."""

    def __init__(self, name: str, resolution: tuple[int, int, int]) -> None:
        self.name = name
        self.input = T(*resolution)
        self.ops: list[Op] = []

    def _add(self, kind: str, cls: OpClass, macs: int, weights: int, act_in: int, out: T) -> T:
        self.ops.append(Op(f"{kind}_{len(self.ops)}", cls, int(macs), int(weights), int(act_in), out.n))
        return out

    def conv(self, x: T, cout: int, k: int | tuple[int, int], s: int = 1, g: int = 1,
             p: int | tuple[int, int] | None = None, bias: bool = True) -> T:
        kh, kw = _pair(k)
        ph, pw = _pair(p) if p is not None else (kh // 2, kw // 2)
        out = T(cout, _out(x.h, kh, s, ph), _out(x.w, kw, s, pw))
        per_out = (x.c // g) * kh * kw
        weights = cout * per_out + (cout if bias else 0)
        cls = conv_class((kh, kw), g, x.c, cout)
        return self._add(cls.value, cls, out.n * per_out, weights, x.n, out)

    def fc(self, x: T, cout: int) -> T:
        out = T(cout, 1, 1)
        return self._add("fc", OpClass.FC, x.n * cout, x.n * cout + cout, x.n, out)

    def linear(self, x: T, cout: int) -> T:
        """A Linear applied per position (ConvNeXt's channels-last MLP): a 1×1 conv in cost."""
        return self.conv(x, cout, 1)

    def pool(self, x: T, k: int, s: int, p: int = 0, ceil: bool = False) -> T:
        out = T(x.c, _out(x.h, k, s, p, ceil), _out(x.w, k, s, p, ceil))
        return self._add("pool", OpClass.POOL, out.n * k * k, 0, x.n, out)

    def gpool(self, x: T) -> T:
        return self._add("gpool", OpClass.POOL, x.n, 0, x.n, T(x.c, 1, 1))

    def eltwise(self, kind: str, *xs: T, weights: int = 0, work: int = 1) -> T:
        """Elementwise over the largest input (broadcast like the SE multiply)."""
        out = max(xs, key=lambda t: t.n)
        return self._add(kind, OpClass.ELEMENTWISE, out.n * work, weights, sum(t.n for t in xs), out)

    def concat(self, xs: Sequence[T]) -> T:
        out = T(sum(t.c for t in xs), xs[0].h, xs[0].w)
        return self._add("concat", OpClass.MOVE, 0, 0, out.n, out)

    def shuffle(self, x: T) -> T:
        return self._add("shuffle", OpClass.MOVE, 0, 0, x.n, x)

    def se(self, x: T, squeeze: int, gate: str = "sigmoid") -> T:
        """Squeeze-and-excitation: pool, two small FCs, gate, rescale."""
        s = self.gpool(x)
        s = self.conv(s, squeeze, 1)
        s = self.conv(s, x.c, 1)
        s = self.eltwise(gate, s)
        return self.eltwise("mul", x, s)


def totals(ops: Sequence[Op]) -> dict[str, int]:
    return {"macs": sum(o.macs for o in ops if o.cls not in (OpClass.POOL, OpClass.ELEMENTWISE, OpClass.MOVE)),
            "weights": sum(o.weights for o in ops), "ops": len(ops)}
