"""The torch quantized simulation at the scales an int8 file carries: for files edgeconv did not write.

A file quantized elsewhere (ai-edge-quantizer from litert-torch's fp32 file, a vendor tool) carries
its own activation and weight scales. Judged against edgeconv's calibration it would differ
everywhere by the rounding of two grids, so the check rebuilds the simulation from the file's own
numbers: edgeconv's PT2E program (same graph, same fake-quant points) with each quantize node's
scale and zero point replaced by those of the file tensor it corresponds to. The file's int8
values are never used — only where its grids are — so a wrong weight, bias or kernel in the file
still differs from the simulation at its own layer.

Correspondence is found by value, not by name or scale: each activation quantize node's float input
(the simulation on a few samples) is compared with the file's int8 tensors of the same size,
dequantized, in order; the closest within REBASE_MAX_REL_L2 is that tensor. A node that only
re-lays out or clamps another with the same grid (a view, a fused ReLU, a pool) takes that node's
new grid. A node whose values no file tensor holds (the file computes that layer wrongly, or stores
its channels in another order — and so do the layers after it) pairs by place: the file tensor of
its size between those paired with its neighbours. Weights pair with the file's weight tensors in
execution order by element count; a scale vector that is edgeconv's own in another channel order
keeps edgeconv's (the torch weight is in torch's order). Every node left at edgeconv's own grid is
named with its reason.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeconv.exporters.formats import QTensor
    from edgeconv.graph import Graph
    from edgeconv.results import WeightQuant

# A file tensor is the one a quantize node feeds when their real values are this close (relative L2,
# float input clipped to the file tensor's range): two calibrations of one net differ by their
# rounding (a few %), different tensors of a net by tens of %.
REBASE_MAX_REL_L2 = 0.25
WINDOW = 8  # file tensors after the last match considered for the next node (pad/transpose copies sit between)


@dataclasses.dataclass(frozen=True)
class Rebased:
    graph: Graph
    activations: int  # activation quantize nodes now at a file tensor's grid
    activation_nodes: int
    weights: int  # weight scale vectors now the file's
    weight_nodes: int
    kept: tuple[str, ...]  # "node (layer): why it keeps edgeconv's own grid"
    by_place: int = 0  # activations paired by place and size (their values differ from the simulation's)

    def summary(self) -> str:
        return (f"simulation from the file's own scales: {self.activations}/{self.activation_nodes} activation "
                f"quantize nodes and {self.weights}/{self.weight_nodes} weight scale vectors take the file's grid"
                + (f" ({self.by_place} activations paired by place and size: their values differ from the "
                   "simulation's)" if self.by_place else "")
                + (f"; {len(self.kept)} keep edgeconv's: " + "; ".join(self.kept[:3])
                   + (f"; … (+{len(self.kept) - 3})" if len(self.kept) > 3 else "") if self.kept else ""))


def rebase(graph: Graph, theirs: list[QTensor], weights: list[tuple[WeightQuant, np.ndarray | None]],
           x: np.ndarray) -> Rebased:
    """`graph`'s quantized program at the grids of the file whose int8 activations on `x` are
    `theirs` and whose weight scales are `weights` (Format.int8_tensors, Format.read_weights)."""
    from edgeconv.quant.program import is_dq, is_q, module_path
    from edgeconv.quant.qparams import read_qparams

    gm = graph.module()
    acts = [n for n in gm.graph.nodes if is_q(n) and "per_tensor" in str(n.target)
            and getattr(n.args[0], "op", None) != "get_attr"]
    floats = _q_inputs(gm, acts, x)
    grids: dict[str, tuple[float, int]] = {}
    tensor_of: dict[str, int] = {}  # quantize node -> the file tensor whose grid it took
    kept: list[str] = []
    misses: dict[str, str] = {}  # quantize node -> why no file tensor holds its values
    by_place: list[str] = []
    used: set[int] = set()
    cursor = 0
    for q in acts:
        parent = _same_grid_parent(q)
        if parent is not None and parent.name in tensor_of:
            # a view, a fused ReLU or a pool of a matched tensor: the same file tensor if it holds
            # this node's values too (a format keeps one), else its own (a tool may requantize a pool)
            j = tensor_of[parent.name]
            if _rel_l2(floats[q.name], theirs[j]) <= REBASE_MAX_REL_L2:
                grids[q.name], tensor_of[q.name] = grids[parent.name], j
                continue
        hit, why = _closest(floats[q.name], theirs, used, cursor)
        if hit is None and parent is not None and parent.name in grids:
            grids[q.name] = grids[parent.name]  # no tensor of its own: the grid it shares in edgeconv's program
            continue
        if hit is None:
            misses[q.name] = why
            continue
        used.add(hit)
        cursor = hit + 1
        grids[q.name], tensor_of[q.name] = (theirs[hit].scale, theirs[hit].zero_point), hit
    # A layer whose values are wrong in the file (a transposed kernel, a permuted channel order) has no
    # tensor close to the simulation's, nor have the layers after it: those pair by place instead —
    # the file tensors of their size between the tensors paired to their neighbours, in order — so the
    # file's own grid still applies and the wrong layer is judged (and named) at its place.
    for name, j in _by_place(acts, floats, theirs, tensor_of, used).items():
        grids[name], tensor_of[name] = (theirs[j].scale, theirs[j].zero_point), j
        by_place.append(name)
    for q in acts:
        if q.name in misses and q.name not in grids:
            parent = _same_grid_parent(q)
            if parent is not None and parent.name in grids:
                grids[q.name] = grids[parent.name]
                continue
            kept.append(f"{q.args[0].name} ({module_path(q.args[0]) if hasattr(q.args[0], 'meta') else ''}): "
                        f"{misses[q.name]}")
    for q in acts:
        if q.name in grids:
            s, z = grids[q.name]
            for n in [q] + [d for d in q.users if is_dq(d)]:
                n.args = (n.args[0], s, z, *n.args[3:])
    w_done, w_nodes, w_kept = _weights(gm, weights)
    gm.recompile()
    rebased = graph.with_module(gm, qparams=read_qparams(gm))
    return Rebased(rebased, len(grids), len(acts), w_done, w_nodes, tuple(kept + w_kept), len(by_place))


def _q_inputs(gm: Any, acts: list[Any], x: np.ndarray) -> dict[str, np.ndarray]:
    """The float value each activation quantize node rounds, on every sample (stacked)."""
    import torch

    want = {q.args[0].name: q.name for q in acts}
    rows: dict[str, list[np.ndarray]] = {q.name: [] for q in acts}

    class Record_(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name in want:
                rows[want[n.name]].append(out.detach().float().numpy())
            return out

    from edgeconv.exporters.formats import join_samples
    from edgeconv.inputs import count, torch_rows

    with torch.no_grad():
        for i in range(count(x)):  # every input of the net (edgeconv.inputs)
            Record_(gm).run(*torch_rows(x, i, i + 1))
    return {k: join_samples(v) for k, v in rows.items() if v}


def _same_grid_parent(q: Any) -> Any:
    """The quantize node whose grid `q` shares in edgeconv's program across one single-input op
    (q0 → dq → relu/view/pool/pad → q with the same scale and zero point), or None."""
    from edgeconv.quant.program import is_dq, is_q

    src = q.args[0]
    if getattr(src, "op", None) != "call_function":
        return None
    ins = [a for a in src.all_input_nodes if getattr(a, "op", None) != "get_attr"]
    if len(ins) != 1 or not is_dq(ins[0]) or not is_q(ins[0].args[0]):
        return None
    before = ins[0].args[0]
    same = (float(before.args[1]), int(before.args[2])) == (float(q.args[1]), int(q.args[2]))
    return before if same else None


def _closest(f: np.ndarray, theirs: list[QTensor], used: set[int], cursor: int) -> tuple[int | None, str]:
    """The unused file tensor after `cursor` (then anywhere) whose dequantized values are closest to
    the float values `f`, if within REBASE_MAX_REL_L2."""
    order = list(range(cursor, len(theirs))) + list(range(cursor))
    cands = [j for j in order if j not in used and theirs[j].values.size == f.size][:WINDOW]
    if not cands:
        return None, "no tensor of the file has its size"
    err, best = min((_rel_l2(f, theirs[j]), j) for j in cands)
    if err > REBASE_MAX_REL_L2:
        return None, (f"no tensor of the file of its size holds its values (nearest: relative L2 {err:.2f} > "
                      f"{REBASE_MAX_REL_L2})")
    return best, ""


def _by_place(acts: list[Any], floats: dict[str, np.ndarray], theirs: list[QTensor], tensor_of: dict[str, int],
              used: set[int]) -> dict[str, int]:
    """Quantize nodes no file tensor holds the values of, each paired with an unused file tensor of
    its size lying between the file tensors paired with its neighbours, in execution order on both
    sides (the k-th such node of a run takes the next such tensor after the one before)."""
    out: dict[str, int] = {}
    taken = set(used)
    for i, q in enumerate(acts):
        if q.name in tensor_of or q.name not in floats:
            continue
        lo = max((tensor_of[a.name] for a in acts[:i] if a.name in tensor_of), default=-1)
        lo = max([lo] + [out[a.name] for a in acts[:i] if a.name in out])
        hi = min((tensor_of[a.name] for a in acts[i + 1:] if a.name in tensor_of), default=len(theirs))
        j = next((j for j in range(lo + 1, hi) if j not in taken and theirs[j].values.size == floats[q.name].size), None)
        if j is not None:
            out[q.name] = j
            taken.add(j)
    return out


def _rel_l2(f: np.ndarray, t: QTensor) -> float:
    """Relative L2 between float values `f` (clipped to the file tensor's range) and the file tensor
    `t` dequantized, in the best layout that fits; inf when the sizes differ."""
    from edgeconv.quant.divergence import _views

    if t.values.size != f.size:
        return float("inf")
    ref = np.clip(f, (-128 - t.zero_point) * t.scale, (127 - t.zero_point) * t.scale)
    norm = float(np.linalg.norm(ref)) or 1.0
    return min((float(np.linalg.norm((v.astype(np.float64) - t.zero_point) * t.scale - ref)) / norm
                for v in _views(np.zeros(f.shape, np.int8), t.values)), default=float("inf"))


def _weights(gm: Any, weights: list[tuple[WeightQuant, np.ndarray | None]]) -> tuple[int, int, list[str]]:
    """Each per-channel weight quantization takes the scale vector of the file's weight tensor it
    pairs with (execution order, same element count). Returns (set, nodes, reasons kept)."""
    import torch

    from edgeconv.quant.program import _get_attr, is_dq, is_q

    nodes = [n for n in gm.graph.nodes if is_q(n) and "per_channel" in str(n.target)
             and getattr(n.args[0], "op", None) == "get_attr"]
    files = [(w, s) for w, s in weights if s is not None]
    done, kept, k = 0, [], 0
    for q in nodes:
        w = _get_attr(gm, q.args[0].target)
        j = next((j for j in range(k, len(files)) if int(np.prod(files[j][0].shape)) == w.numel()), None)
        if j is None:
            kept.append(f"{q.args[0].target}: no weight of the file after the last one paired has its size")
            continue
        k = j + 1
        scale = np.asarray(files[j][1], np.float64)
        channels = w.shape[int(q.args[3])]
        if scale.size == 1:
            scale = np.full(channels, float(scale[0]))
        if scale.size != channels:
            kept.append(f"{q.args[0].target}: the file's {files[j][0].tensor} has {scale.size} scales for "
                        f"{channels} channels")
            continue
        old = _get_attr(gm, q.args[1].target)
        mine = old.detach().double().numpy().reshape(-1)
        if mine.size == scale.size and np.allclose(np.sort(mine), np.sort(scale), rtol=1e-6, atol=0):
            done += 1  # edgeconv's own grid, in the file's channel order: kept as the torch weight's order
            continue
        new = torch.tensor(scale, dtype=old.dtype)
        name = f"_edgeconv_file_scale_{k}"
        gm.register_buffer(name, new)
        with gm.graph.inserting_before(q):
            attr = gm.graph.get_attr(name)
        for n in [q] + [d for d in q.users if is_dq(d)]:
            n.replace_input_with(n.args[1], attr)
        done += 1
    return done, len(nodes), kept
