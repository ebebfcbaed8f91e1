"""What every format's lowering shares: `lowering_errors` turns a converter's failure into one line
that names the op and the target (every format's exporter lowers inside it); `unfold_as_gather`
writes overlapping windows as a gather, which neither litert-torch nor coremltools lowers from
`Tensor.unfold`."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from edgeconv.errors import UserError, ops_named


@contextlib.contextmanager
def lowering_errors(target: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # converters raise anything from ValueError to their own types
        text = f"{type(e).__name__}: {e}"
        ops = ops_named(text)
        what = f"op {', '.join(ops[:3])}" if ops else text.strip().splitlines()[0][:200]
        raise UserError(f"{target}: the converter cannot lower {what}; replace that op in the model "
                        f"or choose another target") from None


def unfold_as_gather(gm: Any) -> list[str]:
    """Rewrite `Tensor.unfold(dim, size, step)` (overlapping windows: timm's HaloAttn cuts its padded
    key/value map into halo windows with two of them) as one GATHER of the windows' rows with a
    constant index, at rank ≤ 4. litert-torch lowers aten.unfold to a stablehlo.gather whose start
    indices have the output's rank plus one, and the converter pads them: a 4-D map unfolded twice
    gives a rank-6 PAD, which TFLite refuses ("'tfl.pad' op … operand 0 is at most 5-D");
    coremltools has no unfold and torch decomposes it to as_strided, which it cannot express. Same
    values: a gather copies the elements the windows view.

    The dims before `dim` are merged (A) and so are those after it (R), so the window axis stays
    the last but one whatever the input's rank:
    Before: y = unfold(x, d, k, s)                          x: [..., L, ...] → y: [..., n, ..., k]
    After:  y = reshape(transpose(reshape(index_select(reshape(x, [A, L, R]), 1, I), [A, n, k, R]), 2, 3),
                        y's shape)                          I = [i·s + j for i < n, j < k]
    The last reshape is left out when every reader only reshapes y (HaloAttn flattens the windows
    at once): a rank-6 tensor never appears. In a quantized program the unfold sits between a
    dequantize and a quantize with the same parameters (it shares its input's scale); a quantize →
    dequantize pair with those parameters follows each new op, so each stays int8 → int8."""
    import math

    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    aten = torch.ops.aten
    quant, dequant = qdq_targets()
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target != aten.unfold.default or "val" not in n.meta \
                or "val" not in getattr(n.args[0], "meta", {}):
            continue
        x, dim, size, step = n.args
        shape = tuple(x.meta["val"].shape)
        if not all(isinstance(s, int) for s in shape) or not shape:
            continue  # dynamic sizes: the index is not a constant
        dim %= len(shape)
        count = (shape[dim] - size) // step + 1
        a, r = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
        index = (torch.arange(count).unsqueeze(1) * step + torch.arange(size)).reshape(-1)
        q = next((u for u in n.users if u.op == "call_function" and u.target == quant), None) \
            if getattr(x, "target", None) == dequant else None
        name = free_attr(gm, f"{n.name}_index")
        gm.register_buffer(name, index)
        with gm.graph.inserting_before(n):
            attr = gm.graph.get_attr(name)
        attr.meta["val"] = index
        readers = _readers(n, quant, dequant)
        reshaped = bool(readers) and all(u.target in (aten.reshape.default, aten.view.default,
                                                      aten._unsafe_view.default) for u in readers)
        out = list(n.meta["val"].shape)
        like = x.meta["val"]
        with gm.graph.inserting_before(n):
            steps = [(aten.reshape.default, ([a, shape[dim], r],), [a, shape[dim], r]),
                     (aten.index_select.default, (1, attr), [a, count * size, r]),
                     (aten.reshape.default, ([a, count, size, r],), [a, count, size, r])]
            if r > 1:  # the window's elements last
                steps.append((aten.transpose.int, (2, 3), [a, count, r, size]))
            if not reshaped:
                steps.append((aten.reshape.default, (out,), out))
            y = x
            for i, (op, rest, shape_after) in enumerate(steps):
                y = gm.graph.call_function(op, (y, *rest))
                y.meta["val"] = like.new_empty(shape_after)
                if q is not None and i < len(steps) - 1:  # the unfold's own quantize follows the last
                    y = _requantized(gm, y, q, dequant)
        if reshaped:  # the unfold's own quantize → dequantize now carries the rank-≤ 4 tensor
            for u in n.users:
                for k in [u, *u.users] if u.target == quant else []:
                    k.meta["val"] = k.meta["val"].new_empty(y.meta["val"].shape)
        n.replace_all_uses_with(y)
        gm.graph.erase_node(n)
        done.append(n.name)
    return recompiled(gm, done)


def _requantized(gm: Any, y: Any, q: Any, dequant: Any) -> Any:
    """`y` through a quantize → dequantize pair with `q`'s parameters (int8 between two relayouts)."""
    qy = gm.graph.call_function(q.target, (y, *q.args[1:]), dict(q.kwargs))
    qy.meta["val"] = y.meta["val"].new_empty(y.meta["val"].shape, dtype=q.meta["val"].dtype) \
        if "val" in q.meta else y.meta["val"]
    dy = gm.graph.call_function(dequant, (qy, *q.args[1:]), dict(q.kwargs))
    dy.meta["val"] = y.meta["val"]
    return dy


def _readers(n: Any, quant: Any, dequant: Any) -> list[Any]:
    """The nodes that read `n`'s values, looking through a quantize → dequantize pair."""
    out = []
    for u in n.users:
        if u.op == "call_function" and u.target == quant:
            for d in u.users:
                if d.op != "call_function" or d.target != dequant:
                    return []
                out.extend(d.users)
        else:
            out.append(u)
    return out


def qdq_targets() -> tuple[Any, Any]:
    """torch's quantize_per_tensor and dequantize_per_tensor ops, or two placeholders no node targets
    where they are not registered (torchao not imported: a float program has no Q/DQ)."""
    import torch

    try:
        qd = torch.ops.quantized_decomposed
        return qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    except (AttributeError, RuntimeError):
        return object(), object()


def free_attr(gm: Any, base: str) -> str:
    """An attribute name of `gm` not yet taken: `base`, else `base_1`, `base_2`, …."""
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    return name


def recompiled(gm: Any, done: list[str]) -> list[str]:
    """After a lowering changed `done` nodes: dead nodes dropped, the graph checked and recompiled."""
    if done:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return done
