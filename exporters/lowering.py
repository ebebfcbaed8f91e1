"""Turn a converter's failure into one line that names the op and the target; and the graph
rewrites a converter needs to lower a program faithfully (`drop_expand`)."""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

from edgeconv.errors import UserError

_OP = re.compile(r"(aten[._:]+[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|torch\.ops\.[\w.]+)")


@contextlib.contextmanager
def lowering_errors(target: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # converters raise anything from ValueError to their own types
        text = f"{type(e).__name__}: {e}"
        ops = sorted(set(_OP.findall(text)))
        what = f"op {', '.join(ops[:3])}" if ops else text.strip().splitlines()[0][:200]
        raise UserError(f"{target}: the converter cannot lower {what}; replace that op in the model "
                        f"or choose another target") from None


# --- rewrites the TFLite lowering needs --------------------------------------------------------

def drop_expand(gm: Any) -> list[str]:
    """Remove an `expand`/`expand_as` whose only users are elementwise binary ops that broadcast
    anyway (ECA's `x * sigmoid(y).expand_as(x)`): litert-torch lowers it to a BROADCAST_TO that
    the fp32 converter refuses ("operands don't have broadcast-compatible shapes") and ai-edge-litert
    cannot prepare in int8. Same values: broadcasting is what the expand did.

    Before: m = mul(x, expand_as(s, x))        x: [1,C,H,W], s: [1,C,1,1]
    After:  m = mul(x, s)
    In a quantized program the expand sits between a dequantize and a quantize with the same
    parameters (it shares its input's scale); that pair is removed too, so the tensor keeps one scale.
    """
    import torch

    if not isinstance(gm, torch.fx.GraphModule):
        return []
    aten = torch.ops.aten
    expands = {aten.expand.default, aten.expand_as.default, aten.expand_copy.default}
    binary = {aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor, aten.div.Tensor, aten.maximum.default,
              aten.minimum.default}
    qd = torch.ops.quantized_decomposed
    quant, dequant = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    done = []
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in expands:
            continue
        src = n.args[0]
        users = _through_qdq(n, quant, dequant)
        if not users or any(u.op != "call_function" or u.target not in binary for u in users):
            continue
        out_shape = tuple(n.meta["val"].shape) if "val" in n.meta else None
        ok = out_shape is not None
        for u in users:
            other = [a for a in u.args[:2] if isinstance(a, torch.fx.Node) and not _reaches(a, n, quant, dequant)]
            if not other or "val" not in other[0].meta or tuple(torch.broadcast_shapes(
                    tuple(other[0].meta["val"].shape), tuple(src.meta["val"].shape))) != tuple(u.meta["val"].shape):
                ok = False
        if not ok:
            continue
        n.replace_all_uses_with(src)
        gm.graph.erase_node(n)
        done.append(n.name)
    # dequantize → quantize with identical parameters (left where an expand was): one tensor
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target == quant and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].target == dequant and tuple(n.args[0].args[1:]) == tuple(n.args[1:]):
            n.replace_all_uses_with(n.args[0].args[0])
            gm.graph.erase_node(n)
    if done:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return done


def _through_qdq(n: Any, quant: Any, dequant: Any) -> list[Any]:
    """The consumers of `n`, looking through a quantize → dequantize pair."""
    out = []
    for u in n.users:
        if u.op == "call_function" and u.target == quant:
            for d in u.users:
                if d.op == "call_function" and d.target == dequant:
                    out.extend(d.users)
                else:
                    return []
        else:
            out.append(u)
    return out


def _reaches(a: Any, n: Any, quant: Any, dequant: Any) -> bool:
    """`a` is `n` itself or `n` seen through quantize/dequantize."""
    while a is not n and getattr(a, "op", None) == "call_function" and a.target in (quant, dequant):
        a = a.args[0]
    return a is n
