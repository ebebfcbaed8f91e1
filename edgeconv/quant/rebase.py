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
new grid. Weights pair with the file's weight tensors in execution order by element count.
Every node left at edgeconv's own grid is named with its reason.
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

    def summary(self) -> str:
        return (f"simulation from the file's own scales: {self.activations}/{self.activation_nodes} activation "
                f"quantize nodes and {self.weights}/{self.weight_nodes} weight scale vectors take the file's grid"
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
            kept.append(f"{q.args[0].name} ({module_path(q.args[0]) if hasattr(q.args[0], 'meta') else ''}): {why}")
            continue
        used.add(hit)
        cursor = hit + 1
        grids[q.name], tensor_of[q.name] = (theirs[hit].scale, theirs[hit].zero_point), hit
    for q in acts:
        if q.name in grids:
            s, z = grids[q.name]
            for n in [q] + [d for d in q.users if is_dq(d)]:
                n.args = (n.args[0], s, z, *n.args[3:])
    w_done, w_nodes, w_kept = _weights(gm, weights)
    gm.recompile()
    rebased = graph.with_module(gm, qparams=read_qparams(gm))
    return Rebased(rebased, len(grids), len(acts), w_done, w_nodes, tuple(kept + w_kept))


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

    with torch.no_grad():
        for i in range(len(x)):
            Record_(gm).run(torch.from_numpy(x[i:i + 1]))
    return {k: np.concatenate(v) for k, v in rows.items() if v}


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
        new = torch.tensor(scale, dtype=old.dtype)
        name = f"_edgeconv_file_scale_{done}"
        gm.register_buffer(name, new)
        with gm.graph.inserting_before(q):
            attr = gm.graph.get_attr(name)
        for n in [q] + [d for d in q.users if is_dq(d)]:
            n.replace_input_with(n.args[1], attr)
        done += 1
    return done, len(nodes), kept
