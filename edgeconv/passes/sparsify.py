"""sparsify: magnitude pruning of the 1×1 convs and fully-connected layers in output-channel blocks.

XNNPACK's sparse inference ("Fast Sparse ConvNets") runs 1×1 convs as sparse-matrix × dense
products when more than 2/3 of their weights are zero, and uses blocks of 4 (or 2) output channels
when those blocks are ≥ 90 % filled. So weights are zeroed in whole `block`×1 groups along C_out,
the groups with the smallest L1 norm first. The stem and the depthwise convs are never pruned
(they are tiny and XNNPACK runs them dense anyway).

Before:  conv2d(x, W[Co, Ci, 1, 1])          linear(x, W[Co, Ci])
After:   conv2d(x, W ⊙ M)                     linear(x, W ⊙ M)     M zero on whole 4×1 blocks

One-shot pruning (this pass) loses accuracy at high sparsity; `GradualPruner` prunes during the
user's own fine-tuning along a polynomial schedule (Zhu & Gupta 2017) so accuracy recovers:

    pruner = GradualPruner(model, PolynomialSchedule(final=0.8, end_step=2000))
    for step, (x, y) in enumerate(loader):
        pruner.step(step)            # recompute masks when due
        loss(model(x), y).backward(); opt.step()
        pruner.apply()               # keep pruned weights at zero after the update
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.passes import PassResult, reads
from edgeconv.registry import PASSES
from edgeconv.results import Record

if TYPE_CHECKING:
    import torch

    from edgeconv.context import Context
    from edgeconv.graph import Graph


# The options live with the other export options; re-exported here for the pass's users.
from edgeconv.config import BlockSize, SparseOptions, check_sparsity  # noqa: E402,F401


def options_from(ctx: "Context | None") -> SparseOptions:
    """The run's sparse options: `ctx.options.sparse` when the export options carry them."""
    opts = getattr(getattr(ctx, "options", None), "sparse", None)
    return opts if isinstance(opts, SparseOptions) else SparseOptions()


def block_mask(weight: "torch.Tensor", sparsity: float, block: int) -> "torch.Tensor":
    """Boolean keep-mask of `weight`'s shape that zeroes round(sparsity · #blocks) blocks of
    `block` consecutive output channels (dim 0) at one input position, smallest L1 norm first.

    Blocks that are already zero have norm 0 and sort first (stable), so applying the mask to an
    already-pruned weight selects the same blocks again: pruning is idempotent.
    """
    import torch

    co = weight.shape[0]
    flat = weight.detach().reshape(co, -1).abs().float()
    pad = (-co) % block  # a last partial block (e.g. 10 classes in blocks of 4) is padded with zeros
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad, flat.shape[1])])
    norms = flat.reshape(-1, block, flat.shape[1]).sum(1)
    k = int(round(sparsity * norms.numel()))
    keep = torch.ones(norms.numel(), dtype=torch.bool)
    keep[torch.argsort(norms.flatten(), stable=True)[:k]] = False
    return keep.reshape(norms.shape).repeat_interleave(block, 0)[:co].reshape(weight.shape)


def zero_fraction(weights: list["torch.Tensor"]) -> float:
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


# --- the graph pass ---------------------------------------------------------------------------

def prunable_nodes(gm: Any) -> list[tuple[Any, str]]:
    """(node, kind) for every 1×1 conv (groups 1) and linear with a constant weight, in order."""
    from edgeconv.passes.fx import CONV_OPS, aten, const

    out = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        w = const(gm, node.args[1]) if len(node.args) > 1 else None
        if w is None:
            continue
        if node.target in CONV_OPS and w.dim() == 4 and tuple(w.shape[2:]) == (1, 1) and _groups(node) == 1:
            out.append((node, "conv1x1"))
        elif node.target == aten.linear.default and w.dim() == 2:
            out.append((node, "linear"))
    return out


def _groups(node: Any) -> int:
    from edgeconv.passes.fx import aten

    if node.target == aten.convolution.default:
        return int(node.args[8]) if len(node.args) > 8 else 1
    return int(node.args[6]) if len(node.args) > 6 else int(node.kwargs.get("groups", 1))


@PASSES.register("sparsify")
@reads("sparse.sparsity", "sparse.block")
def sparsify(graph: "Graph", ctx: "Context | None") -> PassResult:
    return prune(graph, options_from(ctx))


def prune(graph: "Graph", opts: SparseOptions) -> PassResult:
    from edgeconv.passes.fx import const, finish, new_const

    gm = graph.module()
    nodes = prunable_nodes(gm)
    if not nodes:
        raise UserError("the model has no 1x1 convs or linear layers to prune; the sparse targets are "
                        "for MobileNet-style nets (depthwise + 1x1 convs), use a dense target instead")
    changed, pointwise = [], []
    for node, kind in nodes:
        w = const(gm, node.args[1])
        pruned = w.detach() * block_mask(w, opts.sparsity, opts.block.value)
        if kind == "conv1x1":
            pointwise.append(pruned)
        if not bool((pruned == w).all()):
            args = list(node.args)
            args[1] = new_const(gm, node, "sparse_weight", pruned)
            node.args = tuple(args)
            changed.append(node.name)
    notes = (f"{len(nodes)} layers ({len(pointwise)} 1x1 convs, {len(nodes) - len(pointwise)} linear) at "
             f"{opts.sparsity:.0%} in {opts.block.value}x1 blocks; {len(changed)} changed",
             f"1x1 conv weights zero: {zero_fraction(pointwise):.1%} (XNNPACK needs > 66.7%)")
    if not changed:
        return PassResult(graph, False, notes)
    finish(gm)
    return PassResult(graph.with_module(gm), True, notes)


# --- gradual pruning during fine-tuning -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolynomialSchedule(Record):
    """s(t) = final + (initial − final)·(1 − (t − begin)/(end − begin))^power, held at `final` after
    `end_step`; masks are recomputed every `frequency` steps (Zhu & Gupta 2017, power 3)."""

    final: float = 0.8
    initial: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    power: float = 3.0

    def __post_init__(self) -> None:
        check_sparsity(self.final)
        if not 0.0 <= self.initial <= self.final:
            raise UserError(f"initial sparsity {self.initial} must be in [0, final={self.final}]")
        if self.end_step <= self.begin_step or self.frequency < 1:
            raise UserError("pruning schedule needs end_step > begin_step and frequency >= 1")

    def sparsity(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        t = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.final + (self.initial - self.final) * (1.0 - t) ** self.power

    def due(self, step: int) -> bool:
        return self.begin_step <= step and ((step - self.begin_step) % self.frequency == 0 or step == self.end_step)


def prunable_modules(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Module"]]:
    """The eager modules `sparsify` would prune: 1×1 Conv2d with groups 1, and Linear."""
    from torch import nn

    out = [(n, m) for n, m in model.named_modules()
           if (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1) or isinstance(m, nn.Linear)]
    if not out:
        raise UserError(f"{type(model).__name__} has no 1x1 convs or linear layers to prune")
    return out


class GradualPruner:
    """Prunes an eager model's 1×1 convs and linears along a schedule while the user trains it."""

    def __init__(self, model: "torch.nn.Module", schedule: PolynomialSchedule,
                 block: BlockSize = BlockSize.FOUR) -> None:
        self.schedule = schedule
        self.block = block
        self.targets = prunable_modules(model)
        self.masks: dict[str, "torch.Tensor"] = {}
        self.current = 0.0

    def step(self, step: int) -> float:
        """Recompute the masks when the schedule says so, apply them, return the sparsity in force."""
        import torch

        if self.schedule.due(step):
            self.current = self.schedule.sparsity(step)
            with torch.no_grad():
                for name, m in self.targets:
                    self.masks[name] = block_mask(m.weight, self.current, self.block.value)
        self.apply()
        return self.current

    def apply(self) -> None:
        """Zero the pruned weights again (after each optimizer step, which moves them)."""
        import torch

        with torch.no_grad():
            for name, m in self.targets:
                if name in self.masks:
                    m.weight.mul_(self.masks[name])

    def sparsity(self) -> float:
        return zero_fraction([m.weight.detach() for _, m in self.targets])
