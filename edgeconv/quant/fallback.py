"""Automatic float fallback: `--max-drop X` keeps the fewest, most sensitive conv/linear layers in
float until the task metric drops by at most X from the float model.

The search runs on the quantized simulation (edgeconv.quant.sensitivity: bypassing a layer's dequantize
nodes is that layer in float, same calibration), in the order `analyze` ranks the layers: add
layers until the drop is within budget, then drop any that the budget does not need. The result
is `Graph.float_nodes`; the quantize pass then leaves those nodes unannotated (`keep_float`), so
every exporter lowers them in float.

The metric, higher is better: a user's `module:fn` called as `fn(outputs, data) -> float`
(`outputs` the model's outputs as a numpy array, `data` the DataSet with `.x` and `.y`), or the
built-in label accuracy (data with labels) / top-1 agreement with the float model (logits
without labels) / 1 - relative L2 error (anything else).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from edgeconv.errors import UserError
from edgeconv.results import Record

if TYPE_CHECKING:
    from edgeconv.config import QuantConfig
    from edgeconv.quant.sensitivity import SensitivityReport
    from edgeconv.calib.data import DataSet
    from edgeconv.graph import Graph

Metric = Callable[[np.ndarray, "DataSet"], float]


@dataclasses.dataclass(frozen=True)
class FallbackStep(Record):
    node: str
    module: str
    score: float  # metric with this and every earlier layer in float


@dataclasses.dataclass(frozen=True)
class FallbackResult(Record):
    metric: str
    max_drop: float
    float_score: float
    int8_score: float
    final_score: float
    float_nodes: tuple[str, ...]
    float_modules: tuple[str, ...]
    steps: tuple[FallbackStep, ...]
    # layers that read a float layer's output, so compute in float too (their outputs stay int8)
    float_readers: tuple[str, ...] = ()

    @property
    def drop(self) -> float:
        return self.float_score - self.final_score


# --- metrics -------------------------------------------------------------------------------------

def load_evaluator(ref: str | None) -> tuple[str, Metric | None]:
    """(name, fn) for `module:fn`; (builtin name, None) when no reference is given."""
    if not ref:
        return "built-in", None
    from edgeconv.models import resolve_ref

    fn = resolve_ref(ref, "--evaluator", "taking (outputs, data) and returning a number")
    return ref, fn


def builtin_name(data: "DataSet", ref: np.ndarray) -> str:
    if data.y is not None and ref.ndim == 2 and ref.shape[1] > 1:
        return "label accuracy"
    if ref.ndim == 2 and ref.shape[1] > 1:
        return "top-1 agreement with float"
    return "1 - relative L2 error vs float"


def score(outputs: np.ndarray, data: "DataSet", ref: np.ndarray, fn: Metric | None, name: str) -> float:
    """The metric of `outputs` (higher is better), checked to be a finite number."""
    if fn is None:
        from edgeconv.quant.sensitivity import rel_error

        kind = builtin_name(data, ref)
        if kind == "label accuracy":
            return float((outputs.argmax(1) == np.asarray(data.y)).mean())
        if kind.startswith("top-1"):
            return float((outputs.argmax(1) == ref.argmax(1)).mean())
        return 1.0 - rel_error(outputs, ref)
    try:
        value = fn(outputs, data)
    except Exception as e:
        raise UserError(f"evaluator {name} raised {type(e).__name__}: {e}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or (np.ndim(value) != 0):
        raise UserError(f"evaluator {name} returned {type(value).__name__} {value!r:.60}, not a number; "
                        "it must return one float (higher is better)")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"evaluator {name} returned {value}, not a finite number")
    return value


# --- the search ----------------------------------------------------------------------------------

def choose_float_nodes(quantized: "Graph", data: "DataSet", report: "SensitivityReport", max_drop: float,
                       evaluator: str | None = None) -> FallbackResult:
    """The fewest most-sensitive layers to keep float so that float score - int8 score <= max_drop."""
    from edgeconv.quant.program import all_dq, find_layers, forward, simulate

    if not max_drop >= 0:
        raise UserError(f"--max-drop {max_drop} must be a number >= 0 (in the metric's units)")
    name, fn = load_evaluator(evaluator)
    gm = quantized.module()
    layers = {lay.node: lay for lay in find_layers(gm)}
    every = all_dq(gm)
    ref = forward(simulate(gm, every), data.x)
    metric = name if fn else builtin_name(data, ref)

    def run(float_layers: Iterable[str]) -> float:
        return score(forward(simulate(gm, island(gm, layers, float_layers)), data.x), data, ref, fn, name)

    float_score = score(ref, data, ref, fn, name)
    int8_score = run(())
    order = [r.node for r in report.layers if r.node in layers]
    chosen: list[str] = []
    steps: list[FallbackStep] = []
    current = int8_score
    for node in order:
        if float_score - current <= max_drop:
            break
        chosen.append(node)
        current = run(chosen)
        steps.append(FallbackStep(node, layers[node].module, current))
    if float_score - current > max_drop:
        raise UserError(
            f"--max-drop {max_drop:g} cannot be met: with all {len(order)} conv/linear layers in float the "
            f"model scores {current:.4g} ({metric}) against {float_score:.4g} for the float model "
            f"(drop {float_score - current:.4g}); raise --max-drop or improve calibration")
    # Fewest: a layer added early may be unnecessary once later ones are float.
    for node in list(reversed(chosen[:-1])):
        trial = [n for n in chosen if n != node]
        s = run(trial)
        if float_score - s <= max_drop:
            chosen, current = trial, s
    weights_float = island(gm, layers, chosen)
    readers = tuple(lay.module or n for n, lay in layers.items() if n not in chosen and lay.dq_nodes & weights_float)
    return FallbackResult(metric=metric, max_drop=max_drop, float_score=float_score, int8_score=int8_score,
                          final_score=current, float_nodes=tuple(chosen),
                          float_modules=tuple(layers[n].module for n in chosen), steps=tuple(steps),
                          float_readers=readers)


def island(gm: Any, layers: dict, float_layers: Iterable[str]) -> set[str]:
    """The dequantize nodes to bypass for `float_layers` in float, as the quantize pass will build
    them (`strip_annotations`): each layer's weights and output float, and the weights of every
    layer that reads that float output (it computes in float; its own output stays int8)."""
    from edgeconv.quant.program import compute_name, is_dq, is_q

    chosen = tuple(float_layers)
    bypass = set().union(*(layers[n].dq_nodes for n in chosen)) if chosen else set()
    nodes = {n.name: n for n in gm.graph.nodes}
    todo = [u for dq in bypass for u in nodes[dq].users if not _is_weight_dq(nodes[dq])]
    seen: set[str] = set()
    while todo:
        u = todo.pop()
        if u.name in seen:
            continue
        seen.add(u.name)
        if compute_name(u) and u.name in layers and u.name not in chosen:
            bypass |= {d for d in layers[u.name].dq_nodes if _is_weight_dq(nodes[d])}
        elif not compute_name(u) and u.op == "call_function" and not (is_q(u) or is_dq(u)) \
                and any(p in str(u.target) for p in PASS_THROUGH):
            todo.extend(u.users)
    return bypass


def _is_weight_dq(dq: Any) -> bool:
    return getattr(dq.args[0].args[0], "op", None) == "get_attr"


# --- making the quantizer honour Graph.float_nodes ---------------------------------------------

PASS_THROUGH = ("relu", "hardtanh", "clamp", "relu6", "max_pool", "avg_pool", "adaptive_avg_pool",
                "mean", "flatten", "view", "reshape", "squeeze", "unsqueeze", "permute", "transpose",
                "hardswish", "hardsigmoid", "sigmoid", "tanh", "silu", "gelu", "dropout", "batch_norm",
                "select", "slice", "expand", "clone", "contiguous")


def float_region(gm: Any, names: Iterable[str]) -> set[str]:
    """The named nodes plus the single-input ops after them (relu, pool, reshape...) up to the next
    conv/linear or multi-input op: the tensors that a float layer's output flows through unchanged."""
    names = set(names)
    nodes = {n.name: n for n in gm.graph.nodes}
    region = set()
    todo = [nodes[n] for n in names if n in nodes]
    while todo:
        n = todo.pop()
        if n.name in region:
            continue
        region.add(n.name)
        for user in n.users:
            if user.op == "call_function" and any(p in str(user.target) for p in PASS_THROUGH) \
                    and sum(hasattr(a, "op") for a in user.args) == 1:
                todo.append(user)
    return region


def strip_annotations(gm: Any, names: Iterable[str]) -> list[str]:
    """Remove PT2E quantization annotations from the float region of `names` and from every edge
    into or out of it; returns the nodes changed. Run after a quantizer's annotate().

    An op that reads the region's float output computes in float too, its weights included; only
    its own output stays int8. That is what every format does with it: a QUANTIZE after the float
    op would let the TFLite converter fold the float op back into an int8 kernel (DQ → op → Q), so
    the edge stays float, and a conv or linear reading a float tensor is lowered as a float op with
    its float weights (TFLite) — a simulation that kept its int8 weights was another program than
    the file (timm CAFormer with float LayerNorm: 17 steps at an MLP's first linear, in isolation)."""
    region = float_region(gm, names)
    changed: list[str] = []
    grew = True
    while grew:  # an op whose output shared the region's qparams (a select, a slice) is float now too
        grew = False
        for n in gm.graph.nodes:
            ann = n.meta.get("quantization_annotation")
            if ann is None:
                continue
            if n.name in region:
                del n.meta["quantization_annotation"]
                changed.append(n.name)
                continue
            reads_float = any(getattr(inp, "name", None) in region or _shares_region(spec, region)
                              for inp, spec in ann.input_qspec_map.items())
            if reads_float:
                ann.input_qspec_map.clear()  # every input float: the activations and the weights
                changed.append(n.name)
            if _shares_region(ann.output_qspec, region):
                ann.output_qspec = None
                region.add(n.name)
                grew = True
    return list(dict.fromkeys(changed))


def _shares_region(spec: Any, region: set[str]) -> bool:
    edge = getattr(spec, "edge_or_node", None)
    if edge is None:
        return False
    parts = edge if isinstance(edge, tuple) else (edge,)
    return any(getattr(p, "name", None) in region for p in parts)


def keep_float(quantizer: Any, names: Iterable[str], op_types: Iterable[str] = ()) -> Any:
    """The same quantizer, except that `names` (FX node names), every node of the `op_types` (as a
    quant config names them: `layer_norm`, `gelu`, `softmax`...) and their outputs stay float.

    Returns an instance of a subclass of the quantizer's own class (litert-torch checks the type
    it is handed), sharing its configuration. With neither, the quantizer itself.
    """
    names, op_types = tuple(names), frozenset(op_types)
    if not names and not op_types:
        return quantizer
    base = type(quantizer)

    class KeepFloat(base):  # type: ignore[misc, valid-type]
        float_nodes = names
        float_op_types = op_types

        def annotate(self, model: Any) -> Any:
            from edgeconv.calib.annotate import op_type
            from edgeconv.quant.program import layer_kinds

            model = base.annotate(self, model)
            typed = tuple(n.name for n in model.graph.nodes if n.op == "call_function"
                          and not self.float_op_types.isdisjoint((op_type(n), *layer_kinds(n))))
            strip_annotations(model, self.float_nodes + typed)
            return model

    KeepFloat.__name__ = KeepFloat.__qualname__ = f"KeepFloat{base.__name__}"
    q = object.__new__(KeepFloat)
    q.__dict__.update(quantizer.__dict__)
    return q


def with_float_nodes(graph: "Graph", result: FallbackResult) -> "Graph":
    return dataclasses.replace(graph, float_nodes=tuple(result.float_nodes))


# --- the choice as data: a QuantConfig ----------------------------------------------------------

def compute_layers(graph: "Graph") -> list[tuple[str, tuple[str, ...], str]]:
    """(FX node name, op types, layer name) of every conv/linear of a graph; the op types most specific
    first (`layer_kinds`). The layer name is the module path where it names one node only, else the
    node name (two calls in one module)."""
    from edgeconv.quant.program import layer_kinds, module_path

    nodes = [(n.name, layer_kinds(n), module_path(n)) for n in graph.module().graph.nodes if layer_kinds(n)]
    paths = [p for _, _, p in nodes]
    return [(name, op, path if path and paths.count(path) == 1 else name) for name, op, path in nodes]


def float_nodes_for(config: "QuantConfig", graph: "Graph") -> tuple[str, ...]:
    """The FX nodes `config` keeps float in `graph`; a layer name it lists that the graph lacks is an
    error (a config replayed on another model must not silently quantize everything)."""
    layers = compute_layers(graph)
    known = {k for name, _, layer in layers for k in (name, layer)}
    missing = sorted(n for n, _ in config.layer if n not in known)
    if missing:
        raise UserError(f"quant config names layer(s) this model does not have: {', '.join(missing[:5])}; "
                        "was it written for another model? (`edgeconv analyze` lists the layers)")
    return tuple(name for name, kinds, layer in layers if config.setting(layer, name, kinds) is None)


def config_for(graph: "Graph", float_nodes: Iterable[str], float_op_types: Iterable[str] = ()) -> "QuantConfig":
    """The QuantConfig that keeps exactly `float_nodes` of `graph`, and every node of
    `float_op_types`, in float."""
    from edgeconv.config import QuantConfig

    keep = set(float_nodes)
    return QuantConfig(op_type=tuple(sorted((op, None) for op in set(float_op_types))),
                       layer=tuple(sorted((layer, None) for name, _, layer in compute_layers(graph) if name in keep)))


def read_quant_config(path: str) -> "QuantConfig":
    """A QuantConfig from a file: the config itself, or an edgeconv.json whose `quant_config` it is."""
    import json

    from edgeconv.config import QuantConfig

    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except OSError as e:
        raise UserError(f"--quant-config {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--quant-config {path} is not JSON ({e}); pass a quant config or an edgeconv.json") from None
    if isinstance(data, dict) and "artifacts" in data and "quant_config" in data:
        if data["quant_config"] is None:
            raise UserError(f"--quant-config {path}: that manifest has no int8 artifact, so no quant config")
        data = data["quant_config"]
    return QuantConfig.from_file(data, f"--quant-config {path}")
