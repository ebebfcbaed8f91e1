"""Cross-format divergence: where does an int8 artifact start to differ from the torch quantized
simulation it was lowered from?

Every int8 activation of the torch program (each `quantize_per_tensor` node) is compared, as
integers, with the matching int8 tensor inside the artifact:

- ONNX: every activation QuantizeLinear output is added as an extra graph output (onnxruntime);
- TFLite: the interpreter keeps every intermediate (`experimental_preserve_all_tensors=True`);
- CoreML: the MIL evaluator keeps every `quantize` op's output.

Tensors are matched by name where the format keeps it (ONNX), else by order, scale, zero point and
size (names change in litert-torch and coremltools). A tensor that only exists before a fused
activation (conv -> quantize -> relu -> quantize with the same scale: formats fuse the pair) is
left out on every side. The report names the first layer whose tensor differs by more than N steps.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.errors import UserError
from edgeconv.results import Record

if TYPE_CHECKING:
    from edgeconv.graph import Graph

FUSABLE = ("relu", "hardtanh", "clamp", "clip", "Relu", "Clip", "relu6")


@dataclasses.dataclass(frozen=True)
class QTensor:
    name: str
    scale: float
    zero_point: int
    values: np.ndarray  # int values, one row per sample (N, ...)
    layer: str = ""
    qnode: str = ""  # torch side: the quantize node that produced it


@dataclasses.dataclass(frozen=True)
class TensorDrift(Record):
    tensor: str  # FX name of the float tensor torch quantized
    layer: str  # the conv/linear (module path) whose output it is, else the op
    artifact_tensor: str
    scale: float
    zero_point: int
    max_steps: float
    mean_steps: float
    share_off: float  # fraction of elements that differ at all
    share_over_one: float = 0.0  # fraction of elements off by more than one step


@dataclasses.dataclass(frozen=True)
class DivergenceReport(Record):
    artifact: str
    format: str
    threshold_steps: float
    samples: int
    matched: int
    unmatched: tuple[str, ...]  # torch tensors with no counterpart in the artifact
    tensors: tuple[TensorDrift, ...]
    first_divergent: TensorDrift | None
    # each layer in isolation: the simulation's layer fed the artifact's own int8 inputs (None: not run)
    isolated: tuple[TensorDrift, ...] | None = None

    @property
    def worst_isolated(self) -> TensorDrift | None:
        return max(self.isolated, key=lambda d: d.max_steps) if self.isolated else None

    def summary(self) -> str:
        head = f"{self.format} {Path(self.artifact).name}: {self.matched} int8 tensors compared on {self.samples} samples"
        if self.first_divergent is None:
            worst = max((t.max_steps for t in self.tensors), default=0.0)
            return (f"{head}; none drifts by more than {self.threshold_steps:g} steps (worst {worst:g})"
                    + self.isolated_summary())
        d = self.first_divergent
        return (f"{head}; first drift > {self.threshold_steps:g} steps at {d.layer or d.tensor} "
                f"(tensor {d.tensor}: max {d.max_steps:g} steps, {100 * d.share_off:.1f}% of values differ)"
                + self.isolated_summary())

    def isolated_summary(self) -> str:
        w = self.worst_isolated
        if w is None:
            return ""
        return (f"; each layer in isolation (fed the artifact's own inputs): worst {w.max_steps:g} steps at "
                f"{w.layer or w.tensor}")


# --- torch quantized simulation ------------------------------------------------------------------

def torch_tensors(graph: "Graph", x: np.ndarray, gm: Any = None) -> list[QTensor]:
    """Int8 activations of the torch quantized program, in graph order (fused pre-activations left out)."""
    import torch

    from edgeconv.quant.program import folded_simulation, is_q, module_path, producing_layer

    gm = gm if gm is not None else folded_simulation(graph)  # weights quantized once, not on every sample
    qnodes = [n for n in gm.graph.nodes if is_q(n) and "per_tensor" in str(n.target)
              and getattr(n.args[0], "op", None) != "get_attr"]
    fused = {q.name for q in qnodes if _torch_fused(q)}
    keep = [q for q in qnodes if q.name not in fused]
    rows: dict[str, list[np.ndarray]] = {q.name: [] for q in keep}

    class Record_(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name in rows:
                rows[n.name].append(out.detach().numpy().astype(np.int32))
            return out

    with torch.no_grad():
        for i in range(len(x)):
            Record_(gm).run(torch.from_numpy(x[i:i + 1]))
    out = []
    for q in keep:
        src = q.args[0]
        owner = producing_layer(src)
        layer = module_path(owner) if owner is not None else module_path(src) if hasattr(src, "meta") else ""
        out.append(QTensor(src.name if hasattr(src, "name") else q.name, float(q.args[1]), int(q.args[2]),
                           np.concatenate(rows[q.name]), layer or getattr(src, "name", ""), q.name))
    return out


def _torch_fused(q: Any) -> bool:
    """q quantizes a tensor whose only consumers are activations re-quantized with the same params."""
    from edgeconv.quant.program import is_dq, is_q

    users = [u for d in q.users if is_dq(d) for u in d.users]
    if not users or any(not is_dq(d) for d in q.users):
        return False
    for u in users:
        if not any(f in str(u.target) for f in FUSABLE):
            return False
        nxt = [w for w in u.users if is_q(w)]
        if len(nxt) != 1 or (float(nxt[0].args[1]), int(nxt[0].args[2])) != (float(q.args[1]), int(q.args[2])):
            return False
    return True


# --- artifacts ------------------------------------------------------------------------------------

def onnx_tensors(path: Path, x: np.ndarray) -> list[QTensor]:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    qnodes = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts
              and np.asarray(consts.get(n.input[1], np.zeros(2))).size == 1]
    fused = {n.output[0] for n in qnodes if _onnx_fused(n, g, consts)}
    keep = [n for n in qnodes if n.output[0] not in fused]
    existing = {o.name for o in g.output}
    for n in keep:
        if n.output[0] not in existing:
            zp = consts.get(n.input[2]) if len(n.input) > 2 else None
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(zp).dtype) if zp is not None else onnx.TensorProto.UINT8
            g.output.append(onnx.helper.make_tensor_value_info(n.output[0], elem, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # No graph optimisation: fusing QDQ pairs into QLinear ops would remove the tensors we read.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    names = [n.output[0] for n in keep]
    rows = [sess.run(names, {in_name: x[i:i + 1].astype(np.float32)}) for i in range(len(x))]
    out = []
    for j, n in enumerate(keep):
        zp = consts.get(n.input[2]) if len(n.input) > 2 else np.uint8(0)
        values = np.concatenate([r[j].astype(np.int32) for r in rows])
        # uint8 (onnx-int8-u8: q+128 with zero point z+128) compared in the int8 domain it encodes
        shift = 128 if np.asarray(zp).dtype == np.uint8 else 0
        out.append(QTensor(n.input[0], float(np.asarray(consts[n.input[1]]).ravel()[0]),
                           int(np.asarray(zp).ravel()[0]) - shift, values - shift))
    return out


def _onnx_fused(q: Any, g: Any, consts: dict) -> bool:
    by_input: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            by_input.setdefault(i, []).append(n)
    dqs = by_input.get(q.output[0], [])
    if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
        return False
    for d in dqs:
        for u in by_input.get(d.output[0], []):
            if u.op_type not in ("Relu", "Clip"):
                return False
            nxt = [w for w in by_input.get(u.output[0], []) if w.op_type == "QuantizeLinear"]
            if len(nxt) != 1 or not _same_params(nxt[0], q, consts):
                return False
    return True


def _same_params(a: Any, b: Any, consts: dict) -> bool:
    def params(n: Any) -> tuple:
        return tuple(np.asarray(consts.get(i, np.nan)).ravel().tolist() for i in n.input[1:3])
    return params(a) == params(b)


def tflite_tensors(path: Path, x: np.ndarray) -> list[QTensor]:
    from ai_edge_litert.interpreter import Interpreter

    from edgeconv.exporters.runtimes import quantize

    import warnings

    with warnings.catch_warnings():  # "intended for debugging": reading intermediates is what this is
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1)
    it.allocate_tensors()
    details = {d["index"]: d for d in it.get_tensor_details()}
    order: list[int] = []
    for op in it._get_ops_details():  # noqa: SLF001 — the only op-level view the Python API gives
        for t in op["outputs"]:
            d = details.get(int(t))
            if d is None or np.dtype(d["dtype"]) not in (np.int8, np.uint8):
                continue
            qp = d.get("quantization_parameters") or {}
            if len(qp.get("scales", [])) == 1 and int(t) not in order:
                order.append(int(t))
    inp = it.get_input_details()[0]
    rows: dict[int, list[np.ndarray]] = {t: [] for t in order}
    for i in range(len(x)):
        it.set_tensor(inp["index"], quantize(x[i:i + 1], inp))
        it.invoke()
        for t in order:
            rows[t].append(it.get_tensor(t).astype(np.int32))
    out = []
    for t in order:
        qp = details[t]["quantization_parameters"]
        v = np.concatenate(rows[t])  # NHWC inside a litert-torch model, mostly: `_align` decides
        out.append(QTensor(details[t]["name"], float(qp["scales"][0]), int(qp["zero_points"][0]), v))
    return out


def coreml_tensors(path: Path, x: np.ndarray) -> list[QTensor]:
    from edgeconv.exporters.coreml import MILRunner

    runner = MILRunner(path)
    prog = runner.program
    steps = [s for s in prog.steps if s.op_type == "quantize"]
    fused = {s.name for s in steps if _mil_fused(prog, s)}
    keep = [s for s in steps if s.name not in fused]
    rows: dict[str, list[np.ndarray]] = {s.outputs[0]: [] for s in keep}
    for i in range(len(x)):
        env = runner.intermediates(x[i:i + 1])
        for k in rows:
            rows[k].append(env[k].astype(np.int32))
    out = []
    for s in keep:
        scale = np.asarray(prog.consts[s.inputs["scale"]]).ravel()
        zp = np.asarray(prog.consts[s.inputs["zero_point"]]).ravel() if "zero_point" in s.inputs else np.zeros(1, int)
        if scale.size != 1:
            continue
        out.append(QTensor(s.name, float(scale[0]), int(zp[0]), np.concatenate(rows[s.outputs[0]])))
    return out


def _mil_fused(prog: Any, q: Any) -> bool:
    users = [s for s in prog.steps if q.outputs[0] in _inputs_of(s)]
    if not users or any(u.op_type != "dequantize" for u in users):
        return False
    for d in users:
        for u in [s for s in prog.steps if d.outputs[0] in _inputs_of(s)]:
            if u.op_type not in ("relu", "clip", "relu6"):
                return False
            nxt = [s for s in prog.steps if u.outputs[0] in _inputs_of(s) and s.op_type == "quantize"]
            if len(nxt) != 1 or _mil_params(prog, nxt[0]) != _mil_params(prog, q):
                return False
    return True


def _inputs_of(step: Any) -> set[str]:
    out: set[str] = set()
    for v in step.inputs.values():
        out.update(v if isinstance(v, tuple) else (v,))
    return out


def _mil_params(prog: Any, s: Any) -> tuple:
    zp = prog.consts[s.inputs["zero_point"]] if "zero_point" in s.inputs else 0
    return (np.asarray(prog.consts[s.inputs["scale"]]).ravel().tolist(), np.asarray(zp).ravel().tolist())


READERS = {".onnx": ("onnx", onnx_tensors), ".tflite": ("tflite", tflite_tensors),
           ".mlpackage": ("coreml", coreml_tensors)}


# --- matching and the report ----------------------------------------------------------------------

def _views(t: np.ndarray, a: np.ndarray) -> list[np.ndarray]:
    """The layouts the artifact tensor `a` may have relative to the torch tensor `t` (all samples
    stacked), each as an array of `t`'s shape; empty when they cannot be the same tensor.
    Inside a TFLite model most 4-D tensors are NHWC but a transposed copy is NCHW."""
    if a.size != t.size:
        return []
    views = [a] if a.shape == t.shape else []
    if a.ndim == 4 and t.ndim == 4 and a.shape[3] == t.shape[1] and a.transpose(0, 3, 1, 2).shape == t.shape:
        views.append(a.transpose(0, 3, 1, 2))
    if not views:
        views.append(a.reshape(t.shape))  # e.g. (1, 64) vs (1, 64, 1, 1) around a flatten
        if t.ndim >= 2 and t.shape[-1] != t.shape[-2]:  # or a transpose of the last two axes (k^T)
            views.append(a.reshape(t.shape[:-2] + (t.shape[-1], t.shape[-2])).swapaxes(-1, -2))
    return views


def _align(t: np.ndarray, a: np.ndarray) -> np.ndarray | None:
    """The artifact tensor `a` in the torch tensor's layout, or None if they cannot be the same:
    of the layouts that fit the shape, the one whose values are closer is the tensor's."""
    views = _views(t, a)
    return min(views, key=lambda v: _gap(t, v)) if views else None


def _same_values_other_layout(t: np.ndarray, a: np.ndarray) -> bool:
    """The same multiset of values (sorted, within a step on average) laid out differently: a copy
    of the tensor in a layout `_views` does not list — not a tensor to feed the simulation. Only
    meaningful against the simulation's value computed from the artifact's own inputs: against the
    end-to-end simulation, a deep net's cascaded rounding drift looks the same (values moved by
    many steps, the distribution unchanged)."""
    k = max(1, t.size // 16384)
    return _gap(t, a) > 2 and float(np.abs(np.sort(t.reshape(-1))[::k].astype(np.int64)
                                           - np.sort(a.reshape(-1))[::k].astype(np.int64)).mean()) <= 1


def _gap(t: np.ndarray, a: np.ndarray) -> float:
    """Mean |difference| in steps, on an evenly strided subset (a choice between layouts, not a score)."""
    k = max(1, t.size // 16384)
    return float(np.abs(t.reshape(-1)[::k].astype(np.int64) - a.reshape(-1)[::k].astype(np.int64)).mean())


# Ops that share their input's scale (pool, reshape, transpose) make runs of tensors with equal
# scale, zero point and size: among the next few such candidates, the closest values decide.
MATCH_WINDOW = 6


def match(ours: list[QTensor], theirs: list[QTensor]) -> list[tuple[QTensor, QTensor | None]]:
    """Pair each torch tensor with an artifact tensor of the same scale, zero point and size: the
    same-named one and the next few unused ones in order are candidates, the closest values win
    (a name the exporter reused for another tensor, or a run of shared-scale copies, cannot
    mislead it); the name wins a tie."""
    index = {id(t): j for j, t in enumerate(theirs)}
    by_name = {t.name: t for t in theirs}
    used: set[int] = set()
    pairs = []
    cursor = 0
    for q in ours:
        order = [j for j in list(range(cursor, len(theirs))) + list(range(0, cursor))
                 if id(theirs[j]) not in used and _compatible(q, theirs[j])]
        cands = order[:MATCH_WINDOW]
        hit = by_name.get(q.name)
        if hit is not None and id(hit) not in used and _compatible(q, hit):
            cands = [index[id(hit)]] + [j for j in cands if theirs[j] is not hit]
        if not cands:
            pairs.append((q, None))
            continue
        j = min(cands, key=lambda k: _gap(q.values, _align(q.values, theirs[k].values)))
        used.add(id(theirs[j]))
        if theirs[j] is not hit:
            cursor = j + 1
        pairs.append((q, theirs[j]))
    return pairs


def _compatible(q: QTensor, a: QTensor) -> bool:
    return (abs(q.scale - a.scale) <= 1e-6 * q.scale and q.zero_point == a.zero_point
            and q.values.size == a.values.size)


def check_artifact(artifact: Path | str) -> None:
    """A one-line UserError unless `artifact` is a kind divergence reads and opens in its runtime
    (checked before any quantization work, so a corrupt file fails at once)."""
    path = Path(artifact)
    if path.suffix not in READERS:
        raise UserError(f"cannot compare {path.name}: divergence reads {', '.join(READERS)} artifacts")
    if not path.exists():
        raise UserError(f"artifact {path} does not exist")
    fmt = READERS[path.suffix][0]
    if (fmt == "coreml") != path.is_dir():
        is_a, wants = ("a folder", "file") if path.is_dir() else ("a file", "package folder")
        raise UserError(f"artifact {path} is {is_a}, not a {path.suffix} {wants}; "
                        "give the artifact edgeconv export wrote")
    try:
        if fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            Interpreter(model_path=str(path), num_threads=1)
        elif fmt == "onnx":
            import onnx

            if not onnx.load(str(path), load_external_data=False).graph.node:  # b"" parses as an empty model
                raise ValueError("it holds no graph")
        else:
            from edgeconv.exporters.coreml import import_coremltools

            import_coremltools().models.MLModel(str(path), skip_model_load=True)
    except UserError:
        raise
    except Exception as e:  # each runtime has its own exception types for a corrupt file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} is not a readable {fmt} artifact ({type(e).__name__}: {first}); "
                        "give the file edgeconv export wrote") from None


def isolated_drifts(graph: "Graph", pairs: list[tuple[QTensor, QTensor | None]], x: np.ndarray,
                    gm: Any = None, theirs: list[QTensor] | None = None) -> tuple[TensorDrift, ...]:
    """Each layer judged alone: the torch simulation runs with every matched int8 tensor replaced by
    the artifact's own, so each quantize node computes from exactly the inputs the artifact's op
    saw. What remains is that op's lowering (requantization, rounding, kernel), not errors that
    rounding flips upstream cascaded into it — the check that separates a lowering bug from a
    deep net's accumulated rounding.

    Which artifact tensor (and layout) feeds a node is decided here, on the first sample, against
    the simulation's value computed from the artifact's inputs — never against the end-to-end
    simulation. Deep random-init and real nets cascade rounding into tens of steps end to end; a
    decision made on those values refused to feed correct tensors (their drift looked like "the
    same values in another layout" or an ambiguous slice), so the layer after them — e.g. the 1×1
    conv after a squeeze-excite MEAN — was judged on the simulation's own input and charged with
    the cascade (EfficientNet-B0: 8 steps on 60 % of values; fed the artifact's MEAN: 0).
    A node is not fed when no candidate comes within 2 steps and either several artifact tensors
    fit it (slices of one tensor: which one cannot be told) or the nearest holds the same values
    in a layout `_views` cannot undo."""
    import torch

    from edgeconv.quant.program import folded_simulation

    gm = gm if gm is not None else folded_simulation(graph)  # read-only here: the caller's may be shared
    # every layout of the matched artifact tensor over all samples at once (its rows need not be one
    # per sample), and the other artifact tensors it could be (same scale, zero point and size)
    cands: dict[str, tuple[QTensor, QTensor, list[np.ndarray], list[tuple[QTensor, list[np.ndarray]]]]] = {}
    for q, a in pairs:
        if a is None or not q.qnode:
            continue
        views = _views(q.values, a.values)
        if views:
            others = [(b, _views(q.values, b.values)) for b in theirs or () if b is not a and _compatible(q, b)]
            cands[q.qnode] = (q, a, views, others)
    chosen: dict[str, tuple[QTensor, np.ndarray] | None] = {}  # decided on the first sample
    diffs: dict[str, list[np.ndarray]] = {k: [] for k in cands}

    def sample(values: np.ndarray, i: int, shape: tuple) -> np.ndarray:
        # rows were stacked sample after sample: sample i is the i-th block of rows, whatever
        # the tensor's first axis means (a batch of 1, or the 3 of a stacked q/k/v)
        rows = values.shape[0] // len(x)
        return values[i * rows:(i + 1) * rows].reshape(shape)

    def decide(name: str, mine: np.ndarray, i: int) -> tuple[QTensor, np.ndarray] | None:
        q, a, views, others = cands[name]
        scored = [(_gap(mine, sample(v, i, mine.shape)), j, a, v) for j, v in enumerate(views)]
        gap, _, art, best = min(scored, key=lambda s: s[:2])
        if gap <= 2:
            return art, best
        if others:  # several tensors fit: the one the op's own inputs reproduce, if any
            alt = min(((_gap(mine, sample(v, i, mine.shape)), j, b, v) for j, (b, vs) in enumerate(others)
                       for v in vs), key=lambda s: s[:2])
            return (alt[2], alt[3]) if alt[0] <= 2 else None
        if _same_values_other_layout(mine, sample(best, i, mine.shape)):
            return None
        return art, best  # a real lowering difference: fed, so the layers after it are judged alone

    class Forced(torch.fx.Interpreter):
        def __init__(self, module: Any, i: int) -> None:
            super().__init__(module)
            self.i = i

        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name not in cands:
                return out
            mine = out.detach().numpy().astype(np.int64)
            if n.name not in chosen:
                chosen[n.name] = decide(n.name, mine, self.i)
            pick = chosen[n.name]
            if pick is None:
                return out
            theirs_i = sample(pick[1], self.i, mine.shape)
            diffs[n.name].append(np.abs(mine - theirs_i.astype(np.int64)).ravel())
            return torch.from_numpy(np.ascontiguousarray(theirs_i)).to(out.dtype)

    with torch.no_grad():
        for i in range(len(x)):
            Forced(gm, i).run(torch.from_numpy(x[i:i + 1]))
    out = []
    for name, pick in chosen.items():
        if pick is None or not diffs[name]:
            continue
        q, art = cands[name][0], pick[0]
        d = np.concatenate(diffs[name])
        out.append(TensorDrift(q.name, q.layer, art.name, q.scale, q.zero_point, float(d.max()), float(d.mean()),
                               float((d > 0).mean()), float((d > 1).mean())))
    return tuple(out)


def divergence(graph: "Graph", artifact: Path | str, x: np.ndarray, steps: float = 3.0,
               isolate: bool = False, ours: list[QTensor] | None = None, gm: Any = None) -> DivergenceReport:
    """Compare every int8 activation of `artifact` with the torch quantized simulation of `graph`."""
    path = Path(artifact)
    fmt_reader = READERS.get(path.suffix)
    if fmt_reader is None:
        raise UserError(f"cannot compare {path.name}: divergence reads {', '.join(READERS)} artifacts")
    if not graph.quantized:
        raise UserError("divergence compares int8 artifacts with the torch quantized simulation; "
                        "quantize the graph first")
    check_artifact(path)
    fmt, reader = fmt_reader
    ours = ours if ours is not None else torch_tensors(graph, x, gm)  # the caller's, when it compares several artifacts
    theirs = reader(path, x)
    drifts, unmatched = [], []
    pairs = match(ours, theirs)
    for q, a in pairs:
        if a is None:
            unmatched.append(q.name)
            continue
        av = _align(q.values, a.values)
        diff = np.abs(av.astype(np.int64) - q.values.astype(np.int64))
        drifts.append(TensorDrift(q.name, q.layer, a.name, q.scale, q.zero_point, float(diff.max()),
                                  float(diff.mean()), float((diff > 0).mean()), float((diff > 1).mean())))
    first = next((d for d in drifts if d.max_steps > steps), None)
    isolated = isolated_drifts(graph, pairs, x, gm, theirs) if isolate else None
    return DivergenceReport(str(path), fmt, steps, len(x), len(drifts), tuple(unmatched), tuple(drifts), first,
                            isolated)
