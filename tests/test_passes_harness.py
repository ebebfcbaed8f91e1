"""Every registered pass × the small nets of the test zoo, through the real pass manager (`graphcase`).

For each pair: the pass's `changed` flag is honest (False: the program's code and weights are
identical; True: they really differ), the pass leaves its input graph untouched, running it again
changes nothing (idempotence), and the numerics are what the pass promises — float passes compute
what the graph before computed (tight relative tolerance), `sparsify` zeroes the requested fraction
of whole 4×1 blocks of every 1×1 conv and linear, `quantize` yields a Q/DQ program within a loose
bound of float. Passes come from the registry: a newly registered pass is in the matrix at once and
fails until `EXPECT` says what it promises.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
import torch
from torch import nn

from edgeconv import registrations
from edgeconv.config import ExportOptions, Granularity, QuantOptions
from edgeconv.errors import UserError
from edgeconv.registry import PASSES
from graphcase import CALIB_SAMPLES, GraphCase, fingerprint

registrations.load()


# --- what each pass promises ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Expect:
    kind: str  # "float": same function; "sparse": pruned on purpose; "quant": int8 simulation
    tol: float = 1e-5  # relative max error against the graph before (float), or float (quant)
    options: ExportOptions | None = None  # the context's options for this pass (None: the harness's)


# Per-tensor weights make `check-quant` actually inspect the layers (per-channel returns at once).
PER_TENSOR = ExportOptions(quant=QuantOptions(weights=Granularity.PER_TENSOR, samples=CALIB_SAMPLES))

EXPECT: dict[str, Expect] = {
    "fold-conv-bn": Expect("float", 1e-5),
    "reparam-merge": Expect("float", 1e-4),  # the pass's own exactness limit (RTOL): fp32 rounding of merged kernels
    "cleanup": Expect("float", 0.0),
    "check-quant": Expect("float", 0.0, PER_TENSOR),
    "sparsify": Expect("sparse"),
    "quantize": Expect("quant", 0.1),  # int8 noise on these nets: 0.2-1.5 % at seed 0
}


# --- the nets ------------------------------------------------------------------------------------

def _zoo(name: str) -> Any:
    import zoo

    return getattr(zoo, name)()


def _rep(cls_name: str, *args: Any, shape: tuple[int, ...], **kw: Any) -> Callable[[], tuple[nn.Module, tuple]]:
    def make():
        import zoo_reparam

        torch.manual_seed(0)
        net = zoo_reparam.randomize_bn(getattr(zoo_reparam, cls_name)(*args, **kw)).eval()
        return net, (torch.randn(shape),)
    return make


def _plant():
    from zoo_planted import PlantNet

    torch.manual_seed(0)
    return PlantNet().eval(), (torch.randn(1, 3, 32, 32),)


def _inverted_residual():
    from zoo_reparam import randomize_bn
    from zoo_sparse import InvertedResidual

    torch.manual_seed(0)
    return randomize_bn(InvertedResidual(8, 8, stride=1, expand=4)).eval(), (torch.randn(1, 8, 8, 8),)


def _no_pointwise():
    from zoo_sparse import NoPointwise

    torch.manual_seed(0)
    return NoPointwise().eval(), (torch.randn(1, 3, 16, 16),)


class Windows(nn.Module):
    """Window partition and merge as HaloNet / Swin write them: permute, contiguous (or clone), view."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        win = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, c, 2, 2)
        win = self.conv(win)
        merged = win.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).clone(memory_format=torch.contiguous_format).view(b, c, h, w)
        return merged + x


def _windows():
    torch.manual_seed(0)
    return Windows().eval(), (torch.randn(1, 4, 6, 6),)


# name -> factory of a ModelSpec or of (module, example inputs); batch 1, as the pipeline captures.
NETS: dict[str, Callable[[], Any]] = {
    "conv-relu-bn": lambda: _zoo("conv_relu_bn"),
    "float-tail": lambda: _zoo("float_tail"),
    "depthwise": _rep("Depthwise", shape=(1, 4, 7, 7)),
    "bottleneck": _rep("Bottleneck", shape=(1, 8, 8, 8)),
    "conv-output-reused": _rep("ConvOutputReused", shape=(1, 3, 6, 6)),
    "shared-conv": _rep("SharedConv", shape=(1, 3, 6, 6)),
    "repvgg": _rep("RepVGGBlock", 8, 8, shape=(1, 8, 9, 9)),
    "dbb": _rep("DiverseBranchBlock", 6, shape=(1, 6, 9, 9)),
    "plantnet": _plant,
    "inverted-residual": _inverted_residual,  # zoo_sparse's MobileNetV2 block: 1x1 expand, dw, 1x1 project, add
    "no-pointwise": _no_pointwise,
    "windows": _windows,  # contiguous/clone before a view: cleanup must keep the view valid
}


def _has_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _prunable(module: nn.Module) -> bool:
    return any((isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1) or isinstance(m, nn.Linear)
               for m in module.modules())


_NET_CACHE: dict[str, tuple[Any, Any]] = {}


def _net(name: str) -> tuple[Any, Any]:
    """(net or spec, example inputs or None), built once per net."""
    if name not in _NET_CACHE:
        made = NETS[name]()
        _NET_CACHE[name] = made if isinstance(made, tuple) else (made, None)
    return _NET_CACHE[name]


def _module(name: str) -> nn.Module:
    net, _ = _net(name)
    return getattr(net, "module", net)


_GRAPHS: dict[str, Any] = {}


def _case(name: str, options: ExportOptions | None = None) -> GraphCase:
    """A fresh case on the net's shared capture (one torch.export per net for the whole matrix)."""
    net, x = _net(name)
    case = GraphCase(net, x, options=options, name=name)
    if name not in _GRAPHS:
        _GRAPHS[name] = case.capture().graph
        return case
    return case.capture(_GRAPHS[name])


# --- known bugs (strict: the matrix fails once they are fixed, so the marks come off) -------------

def _known_bug(pass_name: str, net: str) -> str | None:
    """Known pass bugs, as strict xfails (they come off when fixed); none open."""
    return None


def _matrix() -> list[Any]:
    params = []
    for p in PASSES.names():
        for n in NETS:
            bug = _known_bug(p, n)
            marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug)] if bug else []
            params.append(pytest.param(p, n, marks=marks, id=f"{p}-{n}"))
    return params


# --- the matrix ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pass_name,net", _matrix())
def test_pass_on_zoo_net(pass_name: str, net: str) -> None:
    expect = EXPECT.get(pass_name)
    if expect is None:
        pytest.fail(f"registered pass {pass_name!r} has no entry in test_passes_harness.EXPECT: say what it "
                    "promises (float / sparse / quant and a tolerance) so the matrix can check it")
    case = _case(net, expect.options)
    given = fingerprint(case.graph)

    if expect.kind == "sparse" and not _prunable(_module(net)):
        case.refuses(pass_name, "no 1x1 convs or linear layers to prune", UserError)
        assert fingerprint(case.graph) == given
        return

    case.run(pass_name).honest().pure()
    if expect.kind == "float":
        case.quantized(False).matches_before(expect.tol)
    elif expect.kind == "sparse":
        case.changed(True).block_sparse().quantized(False)
    elif expect.kind == "quant":
        case.changed(True).quantized().matches_before(expect.tol)
    else:
        pytest.fail(f"EXPECT[{pass_name!r}].kind {expect.kind!r} is not float, sparse or quant")
    case.idempotent()


def _unexpected(names: list[str]) -> str | None:
    missing = [n for n in names if n not in EXPECT]
    if missing:
        return f"registered pass(es) with no entry in test_passes_harness.EXPECT: {', '.join(missing)}"
    stale = [n for n in EXPECT if n not in names]
    return f"EXPECT names pass(es) that are not registered: {', '.join(stale)}" if stale else None


def test_every_registered_pass_has_an_expectation() -> None:
    problem = _unexpected(PASSES.names())
    assert problem is None, problem
    # a newcomer is named (the matrix picks it up from the registry and fails its cases too)
    assert _unexpected([*PASSES.names(), "fuse-everything"]).endswith("EXPECT: fuse-everything")


# --- the harness on its own: pass-specific expectations, and its messages ------------------------

def test_fold_conv_bn_folds_what_it_can_and_says_why_not():
    _case("conv-relu-bn").run("fold-conv-bn").present("batch_norm", count=1).present("conv2d", count=2) \
        .notes_contain("refused batch_norm").changed(True).idempotent().matches_eager(1e-5)
    _case("bottleneck").run("fold-conv-bn").absent("batch_norm").present("conv", count=4) \
        .changed(True).matches_eager(1e-5)


def test_reparam_merge_leaves_one_conv_per_block():
    _case("repvgg").run("reparam-merge").present("conv2d", count=1).absent("add").absent("batch_norm") \
        .notes_contain("-> one 3x3 conv").changed(True).idempotent().matches_eager(1e-5)


def test_a_target_chain_runs_in_order():
    chain = ("reparam-merge", "fold-conv-bn", "check-quant", "quantize", "cleanup")
    case = _case("dbb").run(*chain)
    assert [r.stage for r in case.results] == list(chain) and case.result.stage == "cleanup"
    assert [r.changed for r in case.results][:4] == [True, False, False, True]  # merge took the BNs along
    case.quantized().absent("batch_norm").present("conv2d", count=1)
    assert case.rel_error() < EXPECT["quantize"].tol


def test_int8_target_chain_keeps_a_shared_conv_output_intact():
    """The pass chain of every int8 target: fold-conv-bn refuses the BN (its conv output is shared),
    then quantize must not fold it either."""
    case = _case("conv-output-reused").run("reparam-merge", "fold-conv-bn", "check-quant", "quantize", "cleanup")
    case.quantized().notes_contain("also used by")
    case.matches_eager(EXPECT["quantize"].tol)


def test_quantize_keeps_float_nodes_float():
    case = _case("plantnet")
    conv = next(n.name for n in case.graph.module().graph.nodes if n.target is torch.ops.aten.conv2d.default)
    case.float_nodes(conv).run("quantize").quantized().changed(True)
    gm = case.graph.module()
    first = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.conv2d.default)
    assert "dequantize" not in str(first.args[1].target), "the float conv's weight went through Q/DQ"


def test_messages_name_the_pass_the_op_and_what_was_found():
    case = _case("conv-relu-bn").run("fold-conv-bn")
    with pytest.raises(AssertionError, match=r"conv-relu-bn: pass 'fold-conv-bn': expected no 'batch_norm' op, "
                                             r"found 1: \['batch_norm'\]"):
        case.absent("batch_norm")
    with pytest.raises(AssertionError, match=r"pass 'fold-conv-bn': expected 3 'conv2d' op\(s\), found 2"):
        case.present("conv2d", count=3)
    with pytest.raises(AssertionError, match=r"expected changed=False, but fold-conv-bn reported changed=True"):
        case.changed(False)
    with pytest.raises(AssertionError, match=r"no note contains 'merged'"):
        case.notes_contain("merged")
    with pytest.raises(AssertionError, match=r"expected a quantized program"):
        case.quantized()
    pruned = _case("plantnet").run("sparsify")
    with pytest.raises(AssertionError, match=r"plantnet: pass 'sparsify': output differs from the graph before "
                                             r"the run by .* relative \(tolerance 1e-05\)"):
        pruned.matches_before(1e-5)
    with pytest.raises(RuntimeError, match="capture"):
        GraphCase(*_net("shared-conv")).count("conv")


def test_the_harness_catches_dishonest_unstable_and_impure_passes(monkeypatch):
    import edgeconv.passes.manager as manager
    from edgeconv.passes import PassResult
    from edgeconv.registry import Registry

    def scaled(graph, factor):
        gm = graph.module()
        with torch.no_grad():
            gm.conv.weight.mul_(factor)
        return graph.with_module(gm)

    fakes = Registry("pass")
    fakes.add("claims-change", lambda g, ctx: PassResult(g, True, ("did a lot",)))
    fakes.add("hides-change", lambda g, ctx: PassResult(scaled(g, 2.0), False))
    fakes.add("halves-again", lambda g, ctx: PassResult(scaled(g, 0.5), True))

    def in_place(g, ctx):
        with torch.no_grad():
            next(t for k, t in g.program.state_dict.items() if k == "conv.weight").mul_(3.0)
        return PassResult(g, True)
    fakes.add("edits-input", in_place)
    monkeypatch.setattr(manager, "PASSES", fakes)

    net = lambda: _zoo("conv_relu_bn")  # noqa: E731  (fresh weights: edits-input scales them in place)
    with pytest.raises(AssertionError, match=r"pass 'claims-change' reported changed=True but the program's "
                                             r"code and weights are identical \(notes: \('did a lot',\)\)"):
        GraphCase(net).capture().run("claims-change").honest()
    with pytest.raises(AssertionError, match=r"pass 'hides-change' reported changed=False but changed the "
                                             r"program:\n\(code identical; only weights differ\)"):
        GraphCase(net).capture().run("hides-change").honest()
    case = GraphCase(net).capture().run("halves-again").changed(True)
    with pytest.raises(AssertionError, match=r"pass 'halves-again' run again: not idempotent, halves-again "
                                             r"reported changed=True"):
        case.idempotent()
    with pytest.raises(AssertionError, match=r"pass 'edits-input' modified the graph it was given"):
        GraphCase(net).capture().run("edits-input").pure()


def test_op_matching_on_aten_names():
    case = _case("conv-relu-bn")
    assert case.count("batch_norm") == 2 and case.count("aten.batch_norm.default") == 2
    assert case.count("conv") == case.count("conv2d") == case.count("aten.conv2d") == 2
    assert case.count("norm") == 2 and case.count("batch") == 2 and case.count("atch_norm") == 0
    assert case.count("linear") == 1 and case.count("lin") == 0


def test_int8_chain_keeps_window_views_valid():
    """The int8 pass chain on a window partition (permute, contiguous, view): in the quantized program
    the view reads the permuted tensor through a Q/DQ pair, and cleanup still leaves it valid."""
    case = _case("windows").run("fold-conv-bn", "quantize", "cleanup")
    case.quantized()
    case.matches_eager(EXPECT["quantize"].tol)
