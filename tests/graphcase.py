"""A fluent harness for graph-pass tests, in the manner of ExecuTorch's XNNPACK `Tester`:

    GraphCase(net).capture().run("fold-conv-bn").absent("batch_norm").present("conv2d", count=3) \\
        .notes_contain("refused").changed(True).idempotent().matches_eager(1e-5)

One case is one net followed through the real pass manager (`run_passes`) with one `Context` built
once by the harness: the net (a module, a `ModelSpec`, or a zero-argument factory of either), its
example inputs, and real calibration data — the spec's bundled data when it has some, otherwise a
small seeded N(0,1) `DataSet` shaped like the example (marked `real=False`, as the pipeline's
`random` source is). Every assertion raises AssertionError naming where the graph came from
(`capture`, or the pass(es) of the last `run`), the op and what was found.

Exporters use the same harness, one stage further: `export(target)` runs the target's own pass
chain from the captured graph and writes its artifact (a temp folder, removed with the case),
`loads()` opens it in the format's real runtime, `parity_ok()` runs the pipeline's verification
(`edgeconv.verify.verify`) on held-out inputs and asserts the verdict passed:

    GraphCase(net).capture().export("tflite-int8").loads().parity_ok()

Building: `capture([graph])`, `float_nodes(*names)`, `run(*passes)`. Assertions (chainable):
`changed(flag)` (and `honest()`: the flag tells the truth either way), `unchanged()`, `pure()` (the
input graph was not edited in place), `idempotent()`, `present(op, count=)`, `absent(op)`,
`notes_contain(text)`, `quantized([flag])`, `block_sparse([sparsity, block])`, `matches_eager(tol)`,
`matches_before(tol)`, `refuses(pass, match, exc)`, `export(target)`, `loads()`, `parity_ok()`. Queries: `count(op)`, `rel_error(reference)`,
`.graph`, `.before`, `.result` (the last pass's StageRecord), `.results`, `.ctx`, `.eager`,
`.artifact` (the last export: target, program, path, ExportInfo), `.verdict` (the last parity).

Op names match the aten ops of the captured program: a query matches an op when its `_`-separated
words appear in order, contiguously, in the op's name, so "batch_norm" matches `aten.batch_norm`
and `aten._native_batch_norm_legit_no_training` but "add" does not match `addmm`; "conv" matches
every convolution; a fully qualified "aten.conv2d" or "aten.conv2d.default" matches only that op.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from edgeconv.calib.data import DataSet
from edgeconv.config import ExportOptions, QuantOptions
from edgeconv.context import Context
from edgeconv.graph import Graph, capture
from edgeconv.models import ModelSpec, set_eval
from edgeconv.passes.manager import run_passes
from edgeconv.results import StageRecord

CALIB_SAMPLES = 8
EVAL_SAMPLES = 16  # held-out inputs for parity_ok(): never the calibration ones
SEED = 0

# Families of ops that a short query names (beyond the word-sequence rule).
ALIASES = {
    "conv": {"conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d"},
    "q": {"quantize_per_tensor", "quantize_per_channel"},
    "dq": {"dequantize_per_tensor", "dequantize_per_channel"},
}


# --- ops -----------------------------------------------------------------------------------------

def op_parts(node: torch.fx.Node) -> tuple[str, str, str] | None:
    """(namespace, op name, overload) of a call_function node on a torch op; None for anything else."""
    if node.op != "call_function":
        return None
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        ns, name = target._schema.name.split("::")
        return ns, name, target._overloadname
    name = getattr(target, "__name__", str(target))
    return getattr(target, "__module__", "") or "", name, ""


def op_matches(query: str, node: torch.fx.Node) -> bool:
    parts = op_parts(node)
    if parts is None:
        return False
    ns, name, overload = parts
    if "." in query:  # fully qualified: aten.conv2d or aten.conv2d.default
        return query in (f"{ns}.{name}", f"{ns}.{name}.{overload}")
    if name in ALIASES.get(query, ()):
        return True
    want, have = query.strip("_").split("_"), name.strip("_").split("_")
    return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


def op_nodes(graph: Graph, query: str) -> list[torch.fx.Node]:
    return [n for n in graph.program.graph.nodes if op_matches(query, n)]


def op_summary(graph: Graph) -> str:
    counts: dict[str, int] = {}
    for n in graph.program.graph.nodes:
        parts = op_parts(n)
        if parts:
            counts[parts[1]] = counts.get(parts[1], 0) + 1
    return ", ".join(f"{k}×{v}" for k, v in sorted(counts.items())) or "no ops"


# --- numerics ------------------------------------------------------------------------------------

def seeded_inputs(example: Sequence[Any], seed: int = SEED) -> tuple[Any, ...]:
    """N(0,1) tensors shaped (and typed) like the float example inputs; other inputs as they are."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=g, dtype=t.dtype)
                 if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in example)


def flat_output(out: Any) -> torch.Tensor:
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in leaves])


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got − ref| / max |ref| (the reference's largest magnitude, never below 1e-30)."""
    if got.shape != ref.shape:
        raise AssertionError(f"output shapes differ: {tuple(got.shape)} vs {tuple(ref.shape)}")
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def run_graph(graph: Graph, inputs: tuple[Any, ...]) -> torch.Tensor:
    with torch.no_grad():
        return flat_output(graph.module()(*inputs))


def fingerprint(graph: Graph) -> str:
    """The program's code, its parameters', buffers' and constants' values, and the graph's float/quant
    settings: equal fingerprints compute the same function the same way."""
    h = hashlib.sha256(graph.program.graph_module.code.encode())
    tensors = dict(graph.program.state_dict)
    tensors.update(getattr(graph.program, "constants", {}) or {})
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr((graph.quantized, graph.float_nodes, sorted(graph.qparams))).encode())
    return h.hexdigest()


def code_diff(a: Graph, b: Graph, limit: int = 8) -> str:
    import difflib

    lines = list(difflib.unified_diff(a.program.graph_module.code.splitlines(),
                                      b.program.graph_module.code.splitlines(), lineterm="", n=0))
    lines = [ln for ln in lines if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    return "\n".join(lines[:limit]) + (f"\n... {len(lines) - limit} more" if len(lines) > limit else "") \
        if lines else "(code identical; only weights differ)"


# --- the case ------------------------------------------------------------------------------------

Net = "torch.nn.Module | ModelSpec | Callable[[], torch.nn.Module | ModelSpec]"


@dataclasses.dataclass(frozen=True)
class Exported:
    target: Any  # the Target instance
    graph: Graph  # the program it lowered (after its pass chain)
    path: Any  # pathlib.Path of the artifact
    info: Any  # its ExportInfo


class GraphCase:
    """One net, captured once, followed through passes; every method but the queries returns self."""

    def __init__(self, net: Any, example_inputs: tuple[Any, ...] | None = None,
                 calib: DataSet | np.ndarray | None = None, options: ExportOptions | None = None,
                 calib_samples: int = CALIB_SAMPLES, name: str | None = None, eval_samples: int = EVAL_SAMPLES) -> None:
        if callable(net) and not isinstance(net, torch.nn.Module):
            net = net()
        spec = net if isinstance(net, ModelSpec) else None
        module = spec.module if spec else net
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"GraphCase needs an nn.Module or a ModelSpec, got {type(module).__name__}")
        example = tuple(example_inputs) if example_inputs is not None else (spec.example_inputs if spec else None)
        if not example:
            raise ValueError(f"{type(module).__name__}: give example_inputs (the net is not a ModelSpec)")
        set_eval(module)
        self.spec = spec or ModelSpec(module=module, example_inputs=example, name=type(module).__name__)
        if name:
            self.spec = dataclasses.replace(self.spec, name=name)
        self.example_inputs = example
        # The eager reference is a copy: a pass that edited weights in place could not hide behind it.
        self.eager = copy.deepcopy(module)
        data = self._calib(calib, spec, example, calib_samples)
        options = options or ExportOptions(quant=QuantOptions(samples=len(data)))
        self.ctx = Context(options=options, model=self.spec, calib=data)
        self.graph: Graph | None = None
        self.before: Graph | None = None  # the graph the last `run` started from
        self.results: tuple[StageRecord, ...] = ()  # the records of the last `run`, one per pass
        self.last: tuple[str, ...] = ()
        self._given = ""  # fingerprint of `before` when the last run started
        self.artifact: Exported | None = None
        self.verdict: Any = None
        self._held_out = eval_samples

    @staticmethod
    def _calib(calib: Any, spec: ModelSpec | None, example: tuple[Any, ...], n: int) -> DataSet:
        if isinstance(calib, DataSet):
            return calib
        if calib is not None:
            return DataSet(np.asarray(calib), None, source="graphcase arrays")
        if spec is not None and spec.data is not None:
            return spec.data().take(0, n)
        x = example[0]
        g = torch.Generator().manual_seed(SEED)
        arr = torch.randn((n, *x.shape[1:]), generator=g, dtype=x.dtype).numpy()
        return DataSet(arr, None, source=f"graphcase seeded N(0,1) x{n}", real=False)

    # --- building ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def result(self) -> StageRecord:
        """The record of the last pass of the last `run` (changed, seconds, notes)."""
        self._need_run()
        return self.results[-1]

    def capture(self, graph: Graph | None = None) -> "GraphCase":
        """torch.export the net (or adopt `graph`, an already captured program of this same net, so
        a parametrized matrix captures each net once)."""
        self.graph = graph if graph is not None else capture(self.spec.module, self.example_inputs)
        self.before, self.results, self.last = None, (), ()
        return self

    def float_nodes(self, *names: str) -> "GraphCase":
        """Keep these FX nodes float in a later `quantize` (what `--max-drop` chooses)."""
        self._need_graph()
        self.graph = dataclasses.replace(self.graph, float_nodes=tuple(names))
        return self

    def run(self, *names: str) -> "GraphCase":
        """The passes `names`, in order, through the pass manager, with the harness's context."""
        self._need_graph()
        if not names:
            raise ValueError("run() needs at least one pass name")
        self.before, self._given = self.graph, fingerprint(self.graph)
        self.graph = run_passes(self.graph, self.ctx, tuple(names))
        self.results, self.last = self.graph.history[-len(names):], tuple(names)
        return self

    def pure(self) -> "GraphCase":
        """The last run left the graph it was given as it was (no weight edited in place)."""
        self._need_run()
        if fingerprint(self.before) != self._given:
            raise AssertionError(f"{self._where()} modified the graph it was given (its code or weights)")
        return self

    def refuses(self, name: str, match: str = "", exc: type[BaseException] = Exception) -> "GraphCase":
        """Running `name` raises `exc` whose message contains `match`; the graph stays as it was."""
        self._need_graph()
        try:
            run_passes(self.graph, self.ctx, (name,))
        except exc as e:
            if match not in str(e):
                raise AssertionError(f"pass {name!r} on {self.name} raised {type(e).__name__} without "
                                     f"{match!r}: {e}") from e
            return self
        raise AssertionError(f"pass {name!r} on {self.name} ran without raising {exc.__name__} ({match!r})")

    # --- queries ------------------------------------------------------------------------------

    def count(self, op: str) -> int:
        self._need_graph()
        return len(op_nodes(self.graph, op))

    def rel_error(self, reference: str | Graph = "eager", seed: int = SEED) -> float:
        """Relative max error of this graph's output against the eager net ("eager"), the graph
        the last run started from ("before"), or another Graph, on seeded N(0,1) inputs."""
        self._need_graph()
        x = seeded_inputs(self.example_inputs, seed)
        got = run_graph(self.graph, x)
        return rel_error(got, self._reference(reference, x))

    def _reference(self, reference: str | Graph, x: tuple[Any, ...]) -> torch.Tensor:
        if isinstance(reference, Graph):
            return run_graph(reference, x)
        if reference == "eager":
            with torch.no_grad():
                return flat_output(self.eager(*x))
        if reference == "before":
            self._need_run()
            return run_graph(self.before, x)
        raise ValueError(f"reference must be 'eager', 'before' or a Graph, not {reference!r}")

    # --- assertions ---------------------------------------------------------------------------

    def present(self, op: str, count: int | None = None) -> "GraphCase":
        nodes = op_nodes(self._need_graph(), op)
        if (count is None and not nodes) or (count is not None and len(nodes) != count):
            want = "at least one" if count is None else str(count)
            raise AssertionError(f"{self._where()}: expected {want} {op!r} op(s), found {len(nodes)} "
                                 f"{[n.name for n in nodes]}; the graph has {op_summary(self.graph)}")
        return self

    def absent(self, op: str) -> "GraphCase":
        nodes = op_nodes(self._need_graph(), op)
        if nodes:
            raise AssertionError(f"{self._where()}: expected no {op!r} op, found {len(nodes)}: "
                                 f"{[n.name for n in nodes]}")
        return self

    def changed(self, expected: bool = True) -> "GraphCase":
        """Every pass of the last run reported `changed == expected`, and honestly so: an unchanged
        pass left the graph's code and weights as they were, a changed one really changed them (for
        a run of several passes the flag is checked per pass, the honesty over the whole run)."""
        self._need_run()
        wrong = [r for r in self.results if r.changed is not expected]
        if wrong:
            raise AssertionError(f"{self._where()}: expected changed={expected}, but "
                                 + "; ".join(f"{r.stage} reported changed={r.changed} (notes: {r.notes})" for r in wrong))
        return self.honest()

    def honest(self) -> "GraphCase":
        """The changed flag of the last run tells the truth about the program (either value)."""
        self._need_run()
        any_changed = any(r.changed for r in self.results)
        # Against the fingerprint taken when the run started: unlifted modules share their weights
        # with the program (and the eager net), so a pass editing one in place edits `before` too.
        same = self._given == fingerprint(self.graph)
        if any_changed and same:
            raise AssertionError(f"{self._where()} reported changed=True but the program's code and weights "
                                 f"are identical (notes: {self._notes()})")
        if not any_changed and not same:
            raise AssertionError(f"{self._where()} reported changed=False but changed the program:\n"
                                 f"{code_diff(self.before, self.graph)}")
        return self

    def unchanged(self) -> "GraphCase":
        """The last run reported no change and handed back the very same program."""
        self.changed(False)
        if self.graph.program is not self.before.program:
            raise AssertionError(f"{self._where()} reported no change but returned a different program object")
        return self

    def notes_contain(self, text: str) -> "GraphCase":
        self._need_run()
        if not any(text in n for n in self._notes()):
            raise AssertionError(f"{self._where()}: no note contains {text!r}; notes: {self._notes()}")
        return self

    def idempotent(self, tol: float = 0.0) -> "GraphCase":
        """Running the last run's passes again changes nothing: every pass says changed=False, the
        program's code and weights stay identical and its output stays within `tol` (0: equal)."""
        self._need_run()
        now = fingerprint(self.graph)
        again = run_passes(self.graph, self.ctx, self.last)
        records = again.history[-len(self.last):]
        where = f"{self._where()} run again"
        moved = [r for r in records if r.changed]
        if moved:
            raise AssertionError(f"{where}: not idempotent, " + "; ".join(
                f"{r.stage} reported changed=True (notes: {r.notes})" for r in moved))
        if fingerprint(again) != now:
            raise AssertionError(f"{where}: reported no change but the program differs:\n{code_diff(self.graph, again)}")
        err = self._err(again, self.graph)
        if err > tol:
            raise AssertionError(f"{where}: output moved by {err:.2e} relative (tolerance {tol:.0e})")
        return self

    def matches_eager(self, tol: float = 1e-5) -> "GraphCase":
        return self._matches("eager", tol)

    def matches_before(self, tol: float = 1e-5) -> "GraphCase":
        """This graph computes what the graph the last run started from computed (within `tol`)."""
        return self._matches("before", tol)

    def quantized(self, expected: bool = True) -> "GraphCase":
        """The graph is (or is not) a PT2E int8 program: quantizer set, quantize and dequantize ops present."""
        g = self._need_graph()
        q, dq = len(op_nodes(g, "q")), len(op_nodes(g, "dq"))
        if expected and not (g.quantized and q and dq):
            raise AssertionError(f"{self._where()}: expected a quantized program, found quantizer="
                                 f"{type(g.quantizer).__name__ if g.quantized else None}, {q} quantize and "
                                 f"{dq} dequantize ops")
        if not expected and (g.quantized or q or dq):
            raise AssertionError(f"{self._where()}: expected a float program, found quantized={g.quantized}, "
                                 f"{q} quantize and {dq} dequantize ops")
        return self

    def block_sparse(self, sparsity: float | None = None, block: int | None = None,
                     tol: float = 0.02) -> "GraphCase":
        """Every prunable weight (1×1 conv with groups 1, linear) is zero on whole `block`-channel
        groups (blocks are fully zero or not zero at all) and about `sparsity` of its blocks are zero;
        defaults from the context's sparse options."""
        from edgeconv.passes.sparsify import prunable_nodes

        opts = self.ctx.options.sparse
        sparsity = opts.sparsity if sparsity is None else sparsity
        block = opts.block.value if block is None else block
        gm = self._need_graph().module()
        nodes = prunable_nodes(gm)
        if not nodes:
            raise AssertionError(f"{self._where()}: no 1x1 conv or linear weight to check")
        for node, kind in nodes:
            w = getattr_path(gm, node.args[1].target).detach()
            zero = w.reshape(w.shape[0], -1) == 0
            pad = (-len(zero)) % block  # a last partial block: its missing rows count for neither side
            all_zero = torch.cat([zero, zero.new_ones(pad, zero.shape[1])]).reshape(-1, block, zero.shape[1]).all(1)
            any_zero = torch.cat([zero, zero.new_zeros(pad, zero.shape[1])]).reshape(-1, block, zero.shape[1]).any(1)
            partial = any_zero & ~all_zero
            if bool(partial.any()):
                raise AssertionError(f"{self._where()}: {kind} {node.name} has {int(partial.sum())} "
                                     f"{block}x1 block(s) only partly zero")
            frac = float(all_zero.float().mean())
            if abs(frac - sparsity) > tol + 1.0 / all_zero.numel():
                raise AssertionError(f"{self._where()}: {kind} {node.name} has {frac:.1%} of its {block}x1 "
                                     f"blocks zero, asked for {sparsity:.0%}")
        return self

    # --- exporting --------------------------------------------------------------------------------

    def export(self, target: str) -> "GraphCase":
        """Run `target`'s pass chain from the captured graph and write its artifact."""
        import shutil
        import tempfile
        import weakref
        from pathlib import Path

        from edgeconv import registrations
        from edgeconv.registry import TARGETS

        registrations.load()
        self._need_graph()
        t = TARGETS.get(target)()
        graph = run_passes(self.graph, self.ctx, t.passes)
        folder = Path(tempfile.mkdtemp(prefix="graphcase-"))
        weakref.finalize(self, shutil.rmtree, folder, True)
        path = folder / f"{self.name}-{t.name}{t.suffix}"
        info = t.export(graph, self.ctx, path)
        if not path.exists():
            raise AssertionError(f"{self.name}: target {target} wrote no file at {path.name}")
        self.artifact = Exported(t, graph, path, info)
        self.verdict = None
        return self

    def loads(self) -> "GraphCase":
        """The last export opens in its format's runtime, with one input and one output."""
        a = self._need_artifact()
        try:
            runner = a.target.load(a.path)
        except Exception as e:
            raise AssertionError(f"{self.name}: the {a.target.name} artifact does not load in "
                                 f"{a.target.runtime}: {type(e).__name__}: {e}") from e
        if not runner.inputs or not runner.outputs:
            raise AssertionError(f"{self.name}: the {a.target.name} artifact loads with inputs {runner.inputs} "
                                 f"and outputs {runner.outputs}")
        return self

    def parity_ok(self) -> "GraphCase":
        """The pipeline's verdict on the last export — its runtime on held-out inputs against torch
        fp32 and, for int8, the simulation and each layer in isolation — passed."""
        from edgeconv.verify import ProgramRuns, torch_outputs, verify

        a = self._need_artifact()
        held = self._held_out_data()
        ref = torch_outputs(self.eager, held.x, self.ctx.progress, "torch fp32 reference")
        self.verdict = verify(a.target, a.path, a.graph, self.ctx, held, ref, ProgramRuns())
        report = self.verdict.report
        if not report.passed:
            raise AssertionError(f"{self.name}: {a.target.name} parity failed in {report.runtime}: "
                                 + "; ".join(self.verdict.record.notes))
        return self

    def _held_out_data(self) -> DataSet:
        n = self._held_out
        if self.spec.data is not None:
            data = self.spec.data()
            start = len(self.ctx.calib) if self.ctx.calib is not None else 0
            if len(data) >= start + n:
                return data.take(start, start + n)
        x = self.example_inputs[0]
        g = torch.Generator().manual_seed(SEED + 1)  # other inputs than the calibration's seed
        arr = torch.randn((n, *x.shape[1:]), generator=g, dtype=x.dtype).numpy()
        return DataSet(arr, None, source=f"graphcase held-out N(0,1) x{n}", real=False)

    def _need_artifact(self) -> "Exported":
        if self.artifact is None:
            raise RuntimeError("call export(target) first")
        return self.artifact

    # --- helpers -------------------------------------------------------------------------------

    def _matches(self, reference: str, tol: float) -> "GraphCase":
        err = self.rel_error(reference)
        if not err <= tol:
            what = "eager net" if reference == "eager" else "graph before the run"
            raise AssertionError(f"{self._where()}: output differs from the {what} by {err:.2e} relative "
                                 f"(tolerance {tol:.0e}) on seeded N(0,1) inputs")
        return self

    def _err(self, a: Graph, b: Graph) -> float:
        x = seeded_inputs(self.example_inputs)
        return rel_error(run_graph(a, x), run_graph(b, x))

    def _notes(self) -> tuple[str, ...]:
        return tuple(n for r in self.results for n in r.notes)

    def _where(self) -> str:
        if self.last:
            return f"{self.name}: pass {' → '.join(repr(n) for n in self.last)}"
        return f"{self.name}: capture"

    def _need_graph(self) -> Graph:
        if self.graph is None:
            raise RuntimeError("call capture() first")
        return self.graph

    def _need_run(self) -> None:
        self._need_graph()
        if not self.last:
            raise RuntimeError("call run(...) first")


def getattr_path(obj: Any, target: str) -> Any:
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
