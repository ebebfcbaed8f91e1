"""Quantization-friendliness check: does per-layer (per-tensor) int8 weight quantization wreck a layer?

After a reparameterization merge (or any BN fold), a layer's output channels can have wildly
different weight ranges: RepVGG-A0 drops from ~72 % to 52 % top-1 under per-tensor int8 because one
scale per layer leaves the small channels a handful of levels (TECHNIQUES.md §2-3). Per output
channel c with range r_c = max|W_c| this reports

    spread       = max_c r_c / median_c r_c
    SQNR_c       = 10·log10(‖W_c‖² / ‖W_c − Q(W_c)‖²)   for Q per-tensor and per-channel symmetric int8

and flags a layer when its 10th-percentile channel SQNR under per-tensor quantization is below
`min_sqnr_db` (default 20 dB: fewer than ~4 effective bits left for a tenth of its channels).
Every output channel matters on its own (the next layer reads each one), so the figure is per
channel, not over the whole tensor where the big channels hide the small ones.

Registered as the pass `check-quant`: it never changes the graph; it reads the requested weight
granularity from the options and, when per-layer int8 is asked for, notes a warning naming the
layers and suggesting per-channel weights or a float fallback (`Graph.float_nodes`).

Before / after: the same graph; with --per-layer the stage notes gain e.g. "per-layer int8 weights
would wreck 2 of 9 layers (stage.0.conv.weight: spread 95x, SQNR 8 dB per-layer vs 41 dB
per-channel; ...); use per-channel weights (drop --per-layer) or keep these layers in float"."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.passes import PassResult, reads
from edgeconv.registry import PASSES
from edgeconv.results import Record

if TYPE_CHECKING:
    import torch

    from edgeconv.context import Context
    from edgeconv.graph import Graph

MIN_SQNR_DB = 20.0


@dataclasses.dataclass(frozen=True)
class LayerSpread(Record):
    name: str  # FX node name of the conv/linear (what `Graph.float_nodes` takes)
    weight: str  # the parameter it reads, e.g. "features.3.reparam.weight"
    kind: str  # conv, depthwise, linear
    channels: int
    spread: float
    sqnr_per_tensor_db: float  # 10th-percentile channel
    sqnr_per_channel_db: float  # 10th-percentile channel
    wrecked: bool


@dataclasses.dataclass(frozen=True)
class QuantCheck(Record):
    layers: tuple[LayerSpread, ...] = ()
    min_sqnr_db: float = MIN_SQNR_DB

    @property
    def wrecked(self) -> tuple[LayerSpread, ...]:
        return tuple(layer for layer in self.layers if layer.wrecked)

    def warning(self) -> str | None:
        bad = self.wrecked
        if not bad:
            return None
        shown = "; ".join(f"{b.weight or b.name}: spread {b.spread:.0f}x, SQNR {b.sqnr_per_tensor_db:.0f} dB "
                          f"per-layer vs {b.sqnr_per_channel_db:.0f} dB per-channel" for b in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return (f"per-layer int8 weights would wreck {len(bad)} of {len(self.layers)} layers ({shown}{more}); "
                "use per-channel weights (drop --per-layer) or keep these layers in float")


def channel_sqnr_db(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """SQNR of each output channel (axis 0) under symmetric int8 in [-127, 127]."""
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.full((len(w), 1), np.abs(w).max())
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    err = w - np.clip(np.round(w / scale), -127, 127) * scale
    sig = (w ** 2).sum(axis=1)
    noise = np.maximum((err ** 2).sum(axis=1), 1e-300)
    return np.where(sig > 0, 10 * np.log10(np.maximum(sig, 1e-300) / noise), np.inf)


def layer_spread(name: str, weight_name: str, w: np.ndarray, groups: int = 1,
                 min_sqnr_db: float = MIN_SQNR_DB) -> LayerSpread:
    ranges = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    live = ranges[ranges > 0]
    spread = float(live.max() / np.median(live)) if live.size else 1.0
    t = channel_sqnr_db(w, per_channel=False)
    c = channel_sqnr_db(w, per_channel=True)
    p10_t = float(np.percentile(t[np.isfinite(t)], 10)) if np.isfinite(t).any() else float("inf")
    p10_c = float(np.percentile(c[np.isfinite(c)], 10)) if np.isfinite(c).any() else float("inf")
    kind = "linear" if w.ndim == 2 else ("depthwise" if groups > 1 and w.shape[1] == 1 else "conv")
    return LayerSpread(name, weight_name, kind, int(w.shape[0]), spread, p10_t, p10_c, p10_t < min_sqnr_db)


def per_layer_weight_check(graph: "Graph", min_sqnr_db: float = MIN_SQNR_DB) -> QuantCheck:
    """Every conv/linear of the captured program, an eval BN right after a conv folded in first."""
    return check_module(graph.module(), min_sqnr_db)


def check_module(gm: "torch.fx.GraphModule", min_sqnr_db: float = MIN_SQNR_DB) -> QuantCheck:
    import torch

    aten = torch.ops.aten
    layers = []
    for n in gm.graph.nodes:
        if n.target not in (aten.conv2d.default, aten.conv1d.default, aten.linear.default):
            continue
        w_node = n.args[1]
        if getattr(w_node, "op", None) != "get_attr":
            continue
        w = _attr(gm, w_node.target)
        groups = int(n.args[6]) if n.target is not aten.linear.default and len(n.args) > 6 else 1
        w = _fold_following_bn(gm, n, w)
        layers.append(layer_spread(n.name, w_node.target, w.numpy(), groups, min_sqnr_db))
    return QuantCheck(tuple(layers), min_sqnr_db)


def _fold_following_bn(gm: Any, conv: Any, w: "torch.Tensor") -> "torch.Tensor":
    import torch

    users = list(conv.users)
    if len(users) != 1 or users[0].target is not torch.ops.aten.batch_norm.default or users[0].args[5]:
        return w
    bn = users[0]
    var = _attr(gm, bn.args[4].target)
    c = torch.rsqrt(var + float(bn.args[7]))
    if bn.args[1] is not None:
        c = c * _attr(gm, bn.args[1].target)
    return w * c.reshape(-1, *([1] * (w.dim() - 1)))


def _attr(gm: Any, target: str) -> "torch.Tensor":
    import operator

    import torch

    return operator.attrgetter(target)(gm).detach().to(torch.float64)


@PASSES.register("check-quant")
@reads("quant.weights")
def check_quant(graph: "Graph", ctx: "Context | None" = None) -> PassResult:
    """Notes (never changes the graph) when per-layer int8 is requested on layers it would wreck."""
    from edgeconv.config import Granularity

    if ctx is None or ctx.options.quant.weights is not Granularity.PER_TENSOR:
        return PassResult(graph, False)
    warning = per_layer_weight_check(graph).warning()
    return PassResult(graph, False, (warning,) if warning else ())
