"""`reparam-merge`: merge parallel linear branches that are summed into one conv, by reading the graph.

No method on the model is needed. Before / after (RepVGG):

    y = bn1(conv3x3(x)) + bn2(conv1x1(x)) + bn3(x)        y = conv3x3'(x)

A branch is a chain of linear ops fed by one tensor (the source): conv2d with constant weights,
eval batch_norm, avg_pool2d (count_include_pad), dilated convs, and a 1×1 conv followed by a k×k
conv; the source itself is the identity branch. Every add tree whose leaves include two or more
branches from the same source, one of them a conv, is rewritten with the branch algebra of
`edgeconv.prepare.reparam.algebra` (TECHNIQUES.md §2). Branches that cannot merge — different strides or
groups, paddings that do not centre the kernels on the same pixel, a bias in front of a padded
k×k conv — are left as they are and the reason goes into the notes.

Every merge is checked: the rewritten program against the original on seeded N(0,1) inputs shaped
like the example (never only the all-zeros example, on which a merge that lost its kernels but kept
its bias would agree) and on calibration samples when the context has them. Both relative errors go
into the notes; above the limit the merge is undone — the graph is left as it was — and a FAILED note
says by how much.
"""
from __future__ import annotations

import dataclasses
import operator
from typing import TYPE_CHECKING, Any

from edgeconv.passes import PassResult, reads
from edgeconv.registry import PASSES

if TYPE_CHECKING:
    import torch
    from torch.fx import GraphModule, Node

    from edgeconv.context import Context
    from edgeconv.graph import Graph


@dataclasses.dataclass
class Branch:
    """`source` → one conv: kernel [Cout, Cin/g, kH, kW] (or per-channel planes [C, kH, kW] when
    `groups` is None: identity and avg-pool, which fit any grouping), bias [Cout], float64."""

    source: "Node"
    kernel: "torch.Tensor"
    bias: "torch.Tensor"
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int | None = None
    desc: str = "identity"

    @property
    def is_conv(self) -> bool:
        return self.groups is not None

    def twice_offset(self) -> tuple[int, int]:
        """2·(padding − (k−1)/2): where the kernel centre sits; equal for branches that can add."""
        k = self.kernel.shape[-2:]
        return (2 * self.padding[0] - (k[0] - 1), 2 * self.padding[1] - (k[1] - 1))


RTOL = 1e-4  # merged vs original, relative to the output's largest magnitude (float rounding only)


@PASSES.register("reparam-merge")
@reads("seed")
def reparam_merge(graph: "Graph", ctx: "Context | None" = None) -> PassResult:
    if graph.quantized:  # merged kernels must be quantized afresh: merge first, then quantize
        return PassResult(graph, False, ("reparam-merge skipped: the program is already quantized",))
    gm = graph.module()
    attrs_before = _attrs_used(gm)
    notes: list[str] = []
    merged = 0
    for root in [n for n in gm.graph.nodes if _is_add(n) and not _inner_add(n)]:
        merged += _merge_sum(gm, root, notes)
    if not merged:
        return PassResult(graph, False, tuple(notes))
    gm.graph.eliminate_dead_code()
    _drop_attrs(gm, attrs_before - _attrs_used(gm))
    gm.recompile()
    failure, checked = _check_exact(graph, gm, ctx)
    if failure:
        return PassResult(graph, False, tuple(notes) + (failure,))
    return PassResult(graph.with_module(gm), True, tuple(notes) + (checked,))


def _check_exact(graph: "Graph", gm: "GraphModule", ctx: "Context | None") -> tuple[str | None, str]:
    """(FAILED note or None, the note with both relative errors) for the merged `gm` vs `graph`."""
    from edgeconv.prepare.reparam.exactness import check_sets, measure, run_sets

    calib = ctx.calib.x if ctx is not None and ctx.calib is not None else None
    sets = check_sets(graph.example_inputs, calib, ctx.options.seed if ctx is not None else 0)
    ex = measure(sets, run_sets(graph.module(), sets), run_sets(gm, sets))
    note = "reparam-merge checked: " + ex.note()
    worst = ex.worst(RTOL)
    if worst is not None:
        what, err = worst
        return (f"reparam-merge FAILED its exactness check and was undone (the graph is left unmerged): the "
                f"merged program differs from the original by {err:.2e} relative on {what} (limit {RTOL:.0e}); "
                "this is an edgeconv bug, please report it with the model"), note
    return None, note


# --- one add tree -------------------------------------------------------------------------------

def _merge_sum(gm: "GraphModule", root: "Node", notes: list[str]) -> int:
    import torch

    terms = _terms(root)
    shape = _shape(root)
    if len(terms) < 2 or any(_shape(t) != shape for t in terms):
        return 0  # broadcasting adds are not branch sums
    by_source: dict[Node, list[tuple[Node, Branch]]] = {}
    for t in terms:
        b = _parse(gm, t, notes)
        by_source.setdefault(b.source, []).append((t, b))
    merged: list[Node] = []
    absorbed: set[Node] = set()
    for source, group in by_source.items():
        branches = [b for _, b in group]
        if len(branches) < 2 or not any(b.is_conv for b in branches):
            continue
        reason = _refusal(branches)
        if reason:
            notes.append(f"reparam-merge left {len(branches)} branches at {root.name} alone: {reason}")
            continue
        kernel, bias, stride, padding, groups = _combine(branches)
        dtype = _val(source).dtype
        w_name = _new_attr(gm, "reparam_w", kernel.to(dtype))
        b_name = _new_attr(gm, "reparam_b", bias.to(dtype))
        with gm.graph.inserting_before(root):
            w, b = gm.graph.get_attr(w_name), gm.graph.get_attr(b_name)
            merged.append(gm.graph.call_function(
                torch.ops.aten.conv2d.default, (source, w, b, list(stride), list(padding), [1, 1], groups)))
        absorbed.update(t for t, _ in group)
        notes.append(f"reparam-merge: {' + '.join(b.desc for b in branches)} at {root.name} -> one "
                     f"{kernel.shape[-2]}x{kernel.shape[-1]} conv (groups {groups}, stride {stride[0]})")
    if not merged:
        return 0
    out = merged[0]
    with gm.graph.inserting_before(root):
        for t in merged[1:] + [t for t in terms if t not in absorbed]:
            out = gm.graph.call_function(torch.ops.aten.add.Tensor, (out, t))
    # The old add tree (and each branch only it used) is now dead code.
    root.replace_all_uses_with(out)
    return len(merged)


def _refusal(branches: list[Branch]) -> str | None:
    strides = {b.stride for b in branches}
    if len(strides) > 1:
        return f"strides differ ({', '.join(str(s) for s in sorted(strides))})"
    groups = {b.groups for b in branches if b.groups is not None}
    if len(groups) > 1:
        return f"groups differ ({', '.join(str(g) for g in sorted(groups))}): merging would change the conv's grouping"
    offsets = {b.twice_offset() for b in branches}
    if len(offsets) > 1:
        return ("paddings do not centre the kernels on the same input pixel "
                f"({', '.join(f'{b.desc} k={tuple(b.kernel.shape[-2:])} p={b.padding}' for b in branches)})")
    return None


def _combine(branches: list[Branch]) -> tuple["torch.Tensor", "torch.Tensor", tuple[int, int], tuple[int, int], int]:
    from edgeconv.prepare.reparam import algebra

    groups = next(b.groups for b in branches if b.groups is not None)
    kbs = []
    for b in branches:
        k = b.kernel if b.is_conv else _planes_to_kernel(b.kernel, groups)
        kbs.append((k, b.bias))
    kernel, bias = algebra.add(kbs)
    off = branches[0].twice_offset()
    padding = ((off[0] + kernel.shape[-2] - 1) // 2, (off[1] + kernel.shape[-1] - 1) // 2)
    return kernel, bias, branches[0].stride, padding, groups


def _planes_to_kernel(planes: "torch.Tensor", groups: int) -> "torch.Tensor":
    import torch

    c = planes.shape[0]
    per = c // groups
    k = torch.zeros(c, per, *planes.shape[-2:], dtype=planes.dtype)
    k[torch.arange(c), torch.arange(c) % per] = planes
    return k


# --- reading one branch -------------------------------------------------------------------------

def _parse(gm: "GraphModule", node: "Node", notes: list[str]) -> Branch:
    """The longest chain of linear single-use ops ending at `node`, as a Branch of its source."""
    import torch

    aten = torch.ops.aten
    if node.op != "call_function":
        return _identity(node)
    if node.target is aten.batch_norm.default and not _arg(node, 5, False):
        return _bn(gm, node, _inner(gm, node.args[0], notes))
    if node.target is aten.conv2d.default and _const(node.args[1]):
        return _conv(gm, node, _inner(gm, node.args[0], notes), notes)
    if node.target is aten.avg_pool2d.default:
        return _avgpool(node) or _identity(node)
    return _identity(node)


def _inner(gm: "GraphModule", node: "Node", notes: list[str]) -> Branch:
    # Only a tensor used by this chain alone can be absorbed; a shared one is the source.
    return _parse(gm, node, notes) if len(node.users) == 1 else _identity(node)


def _identity(node: "Node") -> Branch:
    import torch

    c = _shape(node)[1] if len(_shape(node)) == 4 else 0
    return Branch(node, torch.ones(c, 1, 1, dtype=torch.float64), torch.zeros(c, dtype=torch.float64))


def _bn(gm: "GraphModule", node: "Node", inner: Branch) -> Branch:
    from edgeconv.prepare.reparam import algebra

    w, b, mean, var = (_fetch(gm, node.args[i]) for i in (1, 2, 3, 4))
    if inner.kernel.shape[0] != mean.numel():  # not per-channel over a conv's output (e.g. its input's
        return _identity(node)                 # shape is unknown or not N×C×H×W): the BN is a source
    eps = float(_arg(node, 7, 1e-5))
    k, bias = algebra.fuse_bn(inner.kernel, inner.bias, mean, var, w, b, eps)
    return dataclasses.replace(inner, kernel=k, bias=bias, desc=f"{inner.desc}-BN")


def _conv(gm: "GraphModule", node: "Node", inner: Branch, notes: list[str]) -> Branch:
    import torch

    from edgeconv.prepare.reparam import algebra

    w = _fetch(gm, node.args[1])
    bias = _fetch(gm, _arg(node, 2, None))
    stride = _pair(_arg(node, 3, 1))
    padding = _arg(node, 4, 0)
    dilation = _pair(_arg(node, 5, 1))
    groups = int(_arg(node, 6, 1))
    if isinstance(padding, str) or len(_shape(node)) != 4:
        return _identity(node)
    padding = _pair(padding)
    if dilation != (1, 1):  # a dense kernel with zeros between the taps; same reach, same padding
        w = algebra.dilate(w, dilation)
    if bias is None:
        bias = torch.zeros(w.shape[0], dtype=torch.float64)
    k = _fetch(gm, node.args[1]).shape[-2:]
    desc = f"{k[0]}x{k[1]}" + (f"(d{dilation[0]})" if dilation != (1, 1) else "")
    if inner.source is node.args[0]:
        return Branch(node.args[0], w, bias, stride, padding, groups, desc)
    # 1×1 (stride 1, groups 1) then this conv: compose into one kernel when it is exact.
    ok = (inner.is_conv and inner.groups == 1 and groups == 1 and inner.kernel.shape[-2:] == (1, 1)
          and inner.stride == (1, 1) and inner.padding == (0, 0))
    if ok and padding != (0, 0) and bool(inner.bias.abs().max() > 0):
        notes.append(f"reparam-merge kept {node.name} apart from the 1x1 before it: that branch has a "
                     "bias and this conv pads with zeros, so the composed conv would differ at the border")
        ok = False
    if not ok:
        return Branch(node.args[0], w, bias, stride, padding, groups, desc)
    kk, bb = algebra.compose_1x1_kxk(inner.kernel, inner.bias, w, bias)
    return Branch(inner.source, kk, bb, stride, padding, 1, f"{inner.desc}->{desc}")


def _avgpool(node: "Node") -> Branch | None:
    import torch

    ks = _pair(node.args[1])
    stride = _pair(_arg(node, 2, None) or ks)
    padding = _pair(_arg(node, 3, 0))
    if _arg(node, 4, False) or not _arg(node, 5, True) or _arg(node, 6, None) is not None:
        return None  # ceil_mode / count_include_pad=False / divisor: not a fixed kernel
    c = _shape(node)[1]
    planes = torch.full((c, *ks), 1.0 / (ks[0] * ks[1]), dtype=torch.float64)
    return Branch(node.args[0], planes, torch.zeros(c, dtype=torch.float64), stride, padding, None,
                  f"avgpool{ks[0]}x{ks[1]}")


# --- small graph helpers ------------------------------------------------------------------------

def _is_add(n: "Node") -> bool:
    import torch

    return (n.op == "call_function" and n.target is torch.ops.aten.add.Tensor and len(n.args) == 2
            and all(hasattr(a, "op") for a in n.args) and n.kwargs.get("alpha", 1) == 1)


def _inner_add(n: "Node") -> bool:
    return len(n.users) == 1 and _is_add(next(iter(n.users)))


def _terms(root: "Node") -> list["Node"]:
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        if _is_add(n) and (n is root or len(n.users) == 1):
            stack.extend(reversed(n.args))
        else:
            out.append(n)
    return out


def _val(n: "Node") -> Any:
    return n.meta.get("val")


def _shape(n: "Node") -> tuple[int, ...]:
    v = _val(n)
    return tuple(v.shape) if v is not None and hasattr(v, "shape") else ()


def _arg(n: "Node", i: int, default: Any) -> Any:
    return n.args[i] if len(n.args) > i else default


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _const(n: Any) -> bool:
    return getattr(n, "op", None) == "get_attr"


def _fetch(gm: "GraphModule", n: Any) -> "torch.Tensor | None":
    if n is None:
        return None
    import torch

    return operator.attrgetter(n.target)(gm).detach().to(torch.float64)


def _new_attr(gm: "GraphModule", prefix: str, value: "torch.Tensor") -> str:
    import torch

    i = 0
    while hasattr(gm, f"{prefix}{i}"):
        i += 1
    gm.register_parameter(f"{prefix}{i}", torch.nn.Parameter(value, requires_grad=False))
    return f"{prefix}{i}"


def _attrs_used(gm: "GraphModule") -> set[str]:
    return {n.target for n in gm.graph.nodes if n.op == "get_attr" and n.users}


def _drop_attrs(gm: "GraphModule", names: set[str]) -> None:
    """Weights of merged-away branches would otherwise be re-captured as unused parameters."""
    for name in names:
        owner, _, leaf = name.rpartition(".")
        mod = gm.get_submodule(owner) if owner else gm
        delattr(mod, leaf)
        if leaf == "running_mean" and hasattr(mod, "num_batches_tracked"):  # the BN is gone
            delattr(mod, "num_batches_tracked")
