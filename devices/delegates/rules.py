"""A small rule engine over delegate support tables (the `*.toml` files beside this module).

A table names its delegate, the file format it reads, the ops it accepts at all (anything else
falls back with the table's `unsupported-op` rule) and a list of rules. A rule names the ops it
applies to, one check (a predicate below, with its arguments), an optional `when` (another check:
the rule applies only where that one passes), why it exists, and where the fact comes from.
Sources are written once in the table's `[sources]` and referred to by key.

An op runs on the delegate when its type is in the table and no rule for it fails. Partitions are
counted the way TFLite's `PartitionGraphIntoIndependentNodeSubsets` (tensorflow/lite/graph_info.cc)
builds them: epochs over the execution plan, each epoch taking every node of one kind (delegated
or not) whose inputs are ready, the first ready node fixing the kind. A delegated partition is an
epoch of supported nodes, so two supported runs split by a CPU op are two partitions unless data
flow lets them merge (parallel branches do). Where a delegate delegates only its N largest
partitions by default (GPU: 1, NNAPI: 3), the others run on the CPU under that table rule.
"""
from __future__ import annotations

import builtins
import dataclasses
import tomllib
from importlib import resources
from typing import Any, Callable

from edgeconv.errors import UserError
from edgeconv.opview import OpView, TensorView
from edgeconv.results import Record

CHECKS: dict[str, Callable[..., str | None]] = {}
_META = {"id", "ops", "check", "when", "why", "source"}


def check(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        CHECKS[name] = fn
        return fn
    return deco


@dataclasses.dataclass(frozen=True)
class Rule(Record):
    id: str
    ops: tuple[str, ...]  # ("*",) for every op in the table
    check: str
    args: dict[str, Any]
    why: str
    source: str
    when: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Table(Record):
    name: str
    title: str
    format: str  # the artifact format the table reads: "tflite", "onnx" or "coreml"
    ops: tuple[str, ...]
    rules: tuple[Rule, ...]
    unsupported: Rule  # the op type is not in the table
    max_partitions: int = 0  # delegated partitions by default, largest first; 0: all
    partition_rule: Rule | None = None
    level: int | None = None  # default feature level (NNAPI), when the table uses levels
    level_name: str = ""
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Fallback(Record):
    op: str
    index: int
    label: str
    rule: str
    why: str
    detail: str
    source: str


@dataclasses.dataclass(frozen=True)
class Verdict(Record):
    """How one delegate takes one file: per op, and the partitions it would build."""

    delegate: str
    subject: str
    kind: str  # "predicted" (from the table) or "measured" (from the runtime)
    ops: int
    delegated: tuple[int, ...]  # op indices the delegate takes
    partitions: tuple[tuple[int, ...], ...]  # delegated partitions, op indices each
    fallbacks: tuple[Fallback, ...]
    level: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def cpu_ops(self) -> int:
        return self.ops - len(self.delegated)

    @property
    def whole(self) -> bool:
        return self.cpu_ops == 0

    def summary(self) -> str:
        lvl = f", feature level {self.level}" if self.level is not None else ""
        return (f"{self.subject}: {self.delegate} ({self.kind}{lvl}): {len(self.delegated)}/{self.ops} ops delegated, "
                f"{len(self.partitions)} partition(s), {self.cpu_ops} CPU op(s) -> "
                + ("runs whole" if self.whole else "does NOT run whole"))

    def lines(self) -> list[str]:
        """One line per op left on the CPU (the rule, why, what failed, the source), then the summary."""
        out = [f"  {f.label}: [{f.rule}] {f.why}{' (' + f.detail + ')' if f.detail else ''} -- {f.source}"
               for f in self.fallbacks]
        return out + [self.summary()]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(cpu_ops=self.cpu_ops, whole=self.whole)
        return d


# --- loading the tables -----------------------------------------------------------------------

def table_names() -> tuple[str, ...]:
    from edgeconv.devices.delegates import names

    return names()


def load_table(name: str) -> Table:
    names = table_names()
    if name not in names:
        raise UserError(f"unknown delegate {name!r}; choose one of: {', '.join(names)}")
    raw = tomllib.loads(resources.files(__package__).joinpath(f"{name}.toml").read_text())
    sources: dict[str, str] = raw.get("sources", {})
    d = raw["delegate"]

    def rule(r: dict[str, Any]) -> Rule:
        src = r["source"]
        if src not in sources:
            raise KeyError(f"{name}.toml: rule {r['id']} names source {src!r}, not in [sources]")
        if r["check"] not in CHECKS:
            raise KeyError(f"{name}.toml: rule {r['id']} uses unknown check {r['check']!r}")
        args = {k: v for k, v in r.items() if k not in _META}
        return Rule(r["id"], tuple(r.get("ops", ["*"])), r["check"], args, r["why"], sources[src], r.get("when"))

    unsupported = Rule(f"{name}.unsupported-op", ("*",), "never", {}, d["unsupported_why"], sources[d["unsupported_source"]])
    part = None
    if d.get("max_partitions"):
        part = Rule(f"{name}.max-delegated-partitions", ("*",), "never", {}, d["partitions_why"],
                    sources[d["partitions_source"]])
    return Table(name, d["title"], d["format"], tuple(d["ops"]), tuple(rule(r) for r in raw.get("rule", [])),
                 unsupported, int(d.get("max_partitions", 0)), part, d.get("level"), d.get("level_name", ""),
                 tuple(d.get("notes", ())))


# --- evaluating -------------------------------------------------------------------------------

def evaluate(table: Table, ops: tuple[OpView, ...], subject: str, level: int | None = None) -> Verdict:
    level = table.level if level is None else level
    reasons: dict[int, Fallback] = {}
    for op in ops:
        why = judge(table, op, level)
        if why is not None:
            reasons[op.index] = why
    supported = {op.index for op in ops} - set(reasons)
    parts = partition(ops, supported)
    if table.max_partitions and len(parts) > table.max_partitions:
        keep = sorted(parts, key=lambda p: (-len(p), p[0]))[: table.max_partitions]
        for p in parts:
            if p not in keep:
                for i in p:
                    r = table.partition_rule
                    assert r is not None
                    reasons[i] = Fallback(ops[i].op, i, ops[i].label(), r.id, r.why,
                                          f"partition of {len(p)} op(s) beyond the largest {table.max_partitions}",
                                          r.source)
        parts = sorted(keep, key=lambda p: p[0])
    delegated = tuple(sorted(i for p in parts for i in p))
    fallbacks = tuple(reasons[i] for i in sorted(reasons))
    return Verdict(table.name, subject, "predicted", len(ops), delegated, tuple(parts), fallbacks,
                   level if table.level is not None else None, table.notes)


def judge(table: Table, op: OpView, level: int | None) -> Fallback | None:
    """None when the delegate takes `op`, else the first rule that excludes it."""
    if "*" not in table.ops and op.op not in table.ops:
        r = table.unsupported
        return Fallback(op.op, op.index, op.label(), r.id, r.why, f"{op.op} is not in the table", r.source)
    for r in table.rules:
        if r.ops != ("*",) and op.op not in r.ops:
            continue
        if r.when is not None and _run(r.when, op, level) is not None:
            continue  # the condition does not hold: the rule does not apply
        detail = _run({"check": r.check, **r.args}, op, level)
        if detail is not None:
            return Fallback(op.op, op.index, op.label(), r.id, r.why, detail, r.source)
    return None


def _run(spec: dict[str, Any], op: OpView, level: int | None) -> str | None:
    """Run one check; `negate = true` turns a pass into a failure and back (for `when` conditions)."""
    args = {k: v for k, v in spec.items() if k not in ("check", "negate")}
    out = CHECKS[spec["check"]](op, level=level, **args)
    if spec.get("negate"):
        return None if out is not None else f"not {spec['check']}"
    return out


def partition(ops: tuple[OpView, ...], supported: set[int]) -> list[tuple[int, ...]]:
    """Delegated node subsets, as TFLite's graph_info.cc epochs build them (see module docstring)."""
    produced = {t.index: op.index for op in ops for t in op.outputs}
    epoch_of_tensor: dict[int, int] = {}
    done: set[int] = set()
    subsets: list[tuple[bool, list[int]]] = []
    while len(done) < len(ops):
        kind: bool | None = None
        members: list[int] = []
        progress = True
        while progress:
            progress = False
            for op in ops:
                if op.index in done:
                    continue
                ready = all(t is None or t.index not in produced or t.index in epoch_of_tensor for t in op.inputs)
                if not ready:
                    continue
                this = op.index in supported
                if kind is None:
                    kind = this
                if this != kind:
                    continue
                done.add(op.index)
                members.append(op.index)
                for t in op.outputs:
                    epoch_of_tensor[t.index] = len(subsets)
                progress = True
        if not members:  # a cycle or a dangling input: stop rather than spin
            break
        subsets.append((bool(kind), members))
    return [tuple(sorted(m)) for k, m in subsets if k]


# --- checks: each returns None when the op passes, else what failed ---------------------------

def _sel(op: OpView, which: str) -> list[TensorView]:
    """Tensors named by a selector: inputs, outputs, activations, act_inputs, in0, in1, out0 ..."""
    if which == "inputs":
        return [t for t in op.inputs if t is not None]
    if which == "outputs":
        return list(op.outputs)
    if which == "activations":
        return list(op.activations)
    if which == "act_inputs":
        return [t for t in op.inputs if t is not None and not t.const]
    if which.startswith("in") and which[2:].isdigit():
        i = int(which[2:])
        return [op.inputs[i]] if i < len(op.inputs) and op.inputs[i] is not None else []
    if which.startswith("out") and which[3:].isdigit():
        i = int(which[3:])
        return [op.outputs[i]] if i < len(op.outputs) else []
    raise KeyError(f"unknown tensor selector {which!r}")


@check("never")
def _never(op: OpView, level: int | None = None) -> str | None:
    return "excluded"


@check("dtype")
def _dtype(op: OpView, tensors: str, allowed: list[str], level: int | None = None) -> str | None:
    bad = sorted({t.dtype for t in _sel(op, tensors) if t.dtype not in allowed})
    return f"{tensors} {'/'.join(bad)} not in {'/'.join(allowed)}" if bad else None


@check("const")
def _const(op: OpView, input: int, optional: bool = False, level: int | None = None) -> str | None:
    t = op.inputs[input] if input < len(op.inputs) else None
    if t is None:
        return None if optional else f"input {input} is absent"
    return None if t.const else f"input {input} ({t.dtype}{list(t.shape)}) is computed, not a constant"


@check("not_const")
def _not_const(op: OpView, input: int, level: int | None = None) -> str | None:
    t = op.inputs[input] if input < len(op.inputs) else None
    return f"input {input} is a constant" if t is not None and t.const else None


@check("present")
def _present(op: OpView, input: int, level: int | None = None) -> str | None:
    return None if input < len(op.inputs) and op.inputs[input] is not None else f"input {input} (bias) is absent"


@check("inputs")
def _inputs(op: OpView, count: int | None = None, runtime: list[int] | None = None, const_max: int | None = None,
            level: int | None = None) -> str | None:
    present = [t for t in op.inputs if t is not None]
    n_rt = sum(not t.const for t in present)
    if count is not None and len(present) != count:
        return f"{len(present)} inputs, needs {count}"
    if runtime is not None and n_rt not in runtime:
        return f"{n_rt} computed input(s), needs {' or '.join(map(str, runtime))}"
    if const_max is not None and len(present) - n_rt > const_max:
        return f"{len(present) - n_rt} constant input(s), at most {const_max}"
    return None


@check("option")
def _option(op: OpView, key: str | list[str], allowed: list[Any] | None = None, max: float | None = None,
            min: float | None = None, any: bool = False, default: Any = None, level: int | None = None) -> str | None:
    """Every key (or, with any=true, at least one) within the constraints; a missing option takes
    `default` and passes when that is unset (the file does not say, so the rule cannot exclude)."""
    def ok(v: Any) -> bool:
        return v is None or ((allowed is None or v in allowed) and (max is None or v <= max)
                             and (min is None or v >= min))

    keys = [key] if isinstance(key, str) else list(key)
    values = {k: op.options.get(k, default) for k in keys}
    passed = [ok(v) for v in values.values()]
    if (builtins.any(passed) if any else all(passed)):
        return None
    return ", ".join(f"{k}={v!r}" for (k, v), p in zip(values.items(), passed) if not p)


@check("rank")
def _rank(op: OpView, tensors: str, max: int | None = None, min: int | None = None,
          allowed: list[int] | None = None, level: int | None = None) -> str | None:
    for t in _sel(op, tensors):
        if (max is not None and t.rank > max) or (min is not None and t.rank < min) or \
                (allowed is not None and t.rank not in allowed):
            return f"{t.dtype}{list(t.shape)} has rank {t.rank}"
    return None


@check("version")
def _version(op: OpView, max: int, level: int | None = None) -> str | None:
    return None if op.version <= max else f"op version {op.version} > {max}"


@check("level")
def _level(op: OpView, min: int, level: int | None = None) -> str | None:
    return None if level is None or level >= min else f"needs feature level {min}, device has {level}"


@check("scale_ratio")
def _scale_ratio(op: OpView, num: list[str], den: str, min: float | None = None, max: float | None = None,
                 level: int | None = None) -> str | None:
    """Per-tensor quantized only: prod(scales of `num`) / scale of `den` within [min, max)."""
    ts = [t for s in num for t in _sel(op, s)]
    d = _sel(op, den)
    if not d or not ts or not all(t.quantized for t in ts + d):
        return None
    r = 1.0
    for t in ts:
        r *= t.scale[0]
    r /= d[0].scale[0]
    if (min is not None and r < min) or (max is not None and r >= max):
        return f"scale ratio {r:.3g} outside [{min:g}, {max:g})"
    return None


@check("same_quant")
def _same_quant(op: OpView, a: str, b: str, level: int | None = None) -> str | None:
    ta, tb = _sel(op, a), _sel(op, b)
    if not ta or not tb or not ta[0].quantized:
        return None
    x, y = ta[0], tb[0]
    if x.scale[:1] == y.scale[:1] and x.zero_point[:1] == y.zero_point[:1]:
        return None
    return (f"{a} scale/zero point {x.scale[0]:.4g}/{x.zero_point[0] if x.zero_point else 0} != "
            f"{b} {y.scale[0]:.4g}/{y.zero_point[0] if y.zero_point else 0}")


@check("per_tensor_quant")
def _per_tensor(op: OpView, tensors: str, level: int | None = None) -> str | None:
    for t in _sel(op, tensors):
        if len(t.scale) > 1:
            return f"{len(t.scale)} scales (per-channel)"
    return None


@check("axes")
def _axes(op: OpView, allowed: list[list[int]], level: int | None = None) -> str | None:
    axes = op.options.get("axes")
    if axes is None:
        return "axes are not a constant"
    return None if sorted(axes) in [sorted(a) for a in allowed] else f"axes {axes}"


@check("broadcast_one_side")
def _broadcast(op: OpView, level: int | None = None) -> str | None:
    """Two inputs of equal rank where neither is at least as large as the other in every dim."""
    ins = [t for t in op.inputs if t is not None]
    if len(ins) != 2 or ins[0].rank != ins[1].rank:
        return None
    a, b = ins[0].shape, ins[1].shape
    if any(x < y for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
        return f"{list(a)} x {list(b)} broadcast both ways"
    return None


@check("kernel_area")
def _kernel_area(op: OpView, max: int, level: int | None = None) -> str | None:
    h, w = op.options.get("filter_height", 1), op.options.get("filter_width", 1)
    return None if h * w <= max else f"pool window {h}x{w} > {max} elements"


@check("pool_1x1_stride")
def _pool_1x1(op: OpView, level: int | None = None) -> str | None:
    o = op.options
    if o.get("filter_height") == 1 and o.get("filter_width") == 1 and (o.get("stride_h", 1) != 1 or o.get("stride_w", 1) != 1):
        return "1x1 pooling with a stride"
    return None


@check("qdq_unit")
def _qdq_unit(op: OpView, passthrough: list[str] = (), level: int | None = None) -> str | None:
    """ONNX QDQ: the node computes on integers only when every computed input comes from
    DequantizeLinear and every output goes (only) to QuantizeLinear."""
    if op.op in passthrough:
        return None
    for t in op.inputs:
        if t is not None and not t.const and t.dtype.startswith(("float", "bfloat")) and t.producer != "DequantizeLinear":
            return f"float input {t.name or t.index} not from DequantizeLinear"
    for t in op.outputs:
        if t.dtype.startswith(("float", "bfloat")) and (not t.consumers or any(c != "QuantizeLinear" for c in t.consumers)):
            return f"float output {t.name or t.index} not (only) quantized"
    return None


@check("dim")
def _dim(op: OpView, tensors: str, axis: int, allowed: list[int], level: int | None = None) -> str | None:
    for t in _sel(op, tensors):
        if t.rank and t.shape[axis] not in allowed:
            return f"{t.dtype}{list(t.shape)}: dim {axis} is {t.shape[axis]}"
    return None


@check("values")
def _values(op: OpView, input: int, max: float, level: int | None = None) -> str | None:
    t = op.inputs[input] if input < len(op.inputs) else None
    if t is None or t.values is None:
        return None
    big = [v for v in t.values if v > max]
    return f"input {input} values {[int(v) for v in t.values]} exceed {max:g}" if big else None


@check("values_min")
def _values_min(op: OpView, input: int, min: float, level: int | None = None) -> str | None:
    t = op.inputs[input] if input < len(op.inputs) else None
    if t is None or t.values is None:
        return None
    low = [v for v in t.values if v < min]
    return f"input {input} has values below {min:g}: {[int(v) for v in low][:4]}" if low else None


@check("static_shape")
def _static_shape(op: OpView, level: int | None = None) -> str | None:
    for t in op.activations:
        if any(d < 0 for d in t.shape):
            return f"{t.name or t.index} has a dynamic shape {list(t.shape)}"
    return None


@check("qdq_pairs")
def _qdq_pairs(op: OpView, allowed: list[list[str]], level: int | None = None) -> str | None:
    """The integer types two DequantizeLinear-fed inputs carry, as a pair, must be allowed."""
    types = (op.options.get("qdq_input_types") or [])[:2]
    if len(types) < 2 or None in types:
        return None
    return None if list(types) in [list(a) for a in allowed] else f"quantized input types ({types[0]}, {types[1]})"


@check("same_quant_inputs")
def _same_quant_inputs(op: OpView, level: int | None = None) -> str | None:
    """Every quantized computed input carries the output's scale and zero point."""
    out = op.outputs[0] if op.outputs else None
    if out is None or not out.quantized:
        return None
    for i, t in enumerate(op.inputs):
        if t is None or t.const or not t.quantized:
            continue
        if t.scale[:1] != out.scale[:1] or t.zero_point[:1] != out.zero_point[:1]:
            return f"input {i} scale {t.scale[0]:.4g} / zero point {t.zero_point[:1]} vs output {out.scale[0]:.4g} / {out.zero_point[:1]}"
    return None
