"""Reparameterization: the block library merged through the protocol and through the graph pass
(on copies with the merge methods removed), fp64 per block, fp32 whole model, and refusals."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeconv.errors import UserError
from edgeconv.graph import capture
from edgeconv.passes.reparam_merge import reparam_merge
from edgeconv.registry import PASSES
from edgeconv.prepare.reparam import algebra
from edgeconv.prepare.reparam.protocol import ProtocolReport, reparameterize_model
from graphcase import GraphCase
from zoo_reparam import BLOCK_ZOO, RepNet, randomize_bn, strip_methods

CONV, ADD = "aten.conv2d.default", "aten.add.Tensor"


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name,factory,shape", BLOCK_ZOO, ids=[z[0] for z in BLOCK_ZOO])
def test_block_fp64_protocol_and_graph_pass(name, factory, shape):
    torch.manual_seed(0)
    block = randomize_bn(factory()).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        ref = block(x)

    merged, report = reparameterize_model(block)
    assert report.calls and report.calls[0].startswith("<root>: ")  # the root is a block itself
    assert merged is not block and not hasattr(block, "reparam")     # the input is untouched
    with torch.no_grad():
        assert _rel(merged(x), ref) < 1e-9
    assert sum(isinstance(m, nn.Conv2d) for m in merged.modules()) == 1

    bare = strip_methods(copy.deepcopy(block))
    assert reparameterize_model(bare)[1].calls == ()   # the protocol has nothing to call
    case = GraphCase(bare, (x,)).capture().run("reparam-merge").changed(True).present(CONV, count=1).absent(ADD)
    notes = case.result.notes
    assert len(notes) == 2 and "-> one" in notes[0]
    assert notes[1].startswith("reparam-merge checked: merged vs original: ")
    with torch.no_grad():
        assert _rel(case.graph.module()(x), ref) < 1e-9
    case.idempotent()


def test_whole_model_fp32_both_ways():
    torch.manual_seed(0)
    model = randomize_bn(RepNet()).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    merged, report = reparameterize_model(model, example_inputs=(x,))
    assert len(report.calls) == 7 and report.max_rel_error < 1e-5
    with torch.no_grad():
        assert _rel(merged(x), ref) < 1e-5
    case = GraphCase(strip_methods(copy.deepcopy(model)), (x,)).capture().run("reparam-merge").present(CONV, count=7)
    assert len(case.result.notes) == 8
    with torch.no_grad():
        assert _rel(case.graph.module()(x), ref) < 1e-5
    # The merged-away branch weights are gone from the program, not carried as dead parameters.
    n_params = sum(t.numel() for t in case.graph.program.state_dict.values())
    assert n_params == sum(t.numel() for t in merged.state_dict().values())


class _TwoBranches(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) + self.b(x)


class _SeqWithBias(nn.Module):
    """1×1 conv with a bias feeding a padded 3×3: composing would be wrong at the border."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(4, 4, 1, bias=True)
        self.k = nn.Conv2d(4, 4, 3, padding=1)
        self.other = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.k(self.squeeze(x)) + self.other(x)


REFUSALS = [
    ("strides", _TwoBranches(nn.Conv2d(4, 4, 3, 1, 0), nn.Conv2d(4, 4, 3, 2, 2)), (1, 4, 6, 6), "strides differ"),
    ("groups", _TwoBranches(nn.Conv2d(4, 4, 3, 1, 1, groups=4), nn.Conv2d(4, 4, 1)), (1, 4, 6, 6), "groups differ"),
    ("padding", _TwoBranches(nn.Conv2d(4, 4, 3, 2, 1), nn.Conv2d(4, 4, 2, 2, 0)), (1, 4, 8, 8), "paddings do not centre"),
    ("bias-before-pad", _SeqWithBias(), (1, 4, 6, 6), "bias"),
]


@pytest.mark.parametrize("name,model,shape,reason", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_leave_the_graph_and_say_why(name, model, shape, reason):
    GraphCase(model.eval(), (torch.randn(shape),)).capture().run("reparam-merge").unchanged().notes_contain(reason)


def test_partial_merge_keeps_the_other_terms():
    """conv3x3(x) + conv1x1(x) + relu(x): the two convs merge, the nonlinear term stays added."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.a(x) + torch.relu(x) + self.b(x)

    torch.manual_seed(0)
    m = M().double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    case = GraphCase(m, (x,)).capture().run("reparam-merge").changed(True).present(CONV, count=1).present(ADD, count=1)
    assert _rel(case.graph.module()(x), m(x)) < 1e-12


def test_pass_is_registered():
    assert PASSES.get("reparam-merge") is reparam_merge


def test_protocol_fuse_convention_and_nested_blocks():
    """timm's fuse() returns the replacement module; nested blocks are visited once each."""

    class Fusable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x))

        def fuse(self):
            k, b = algebra.fuse_bn(self.conv.weight, self.conv.bias, self.bn.running_mean,
                                   self.bn.running_var, self.bn.weight, self.bn.bias, self.bn.eps)
            out = nn.Conv2d(3, 3, 3, padding=1)
            out.weight.data, out.bias.data = k.detach(), b.detach()
            return out

    model = randomize_bn(nn.Sequential(Fusable(), nn.ReLU(), Fusable())).eval()
    x = torch.randn(1, 3, 6, 6)
    merged, report = reparameterize_model(model, example_inputs=(x,))
    assert report.calls == ("0: fuse()", "2: fuse()")
    assert isinstance(merged[0], nn.Conv2d) and report.max_rel_error < 1e-6
    assert ProtocolReport.from_dict(report.to_dict()) == report


class _Rescaled(nn.Module):
    """A block whose "merge" scales its conv by `factor`: not the same function."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.conv, self.factor = nn.Conv2d(3, 3, 1), factor

    def forward(self, x):
        return self.conv(x)

    def switch_to_deploy(self):
        self.conv.weight.data.mul_(self.factor)
        self.conv.bias.data.mul_(self.factor)


def test_protocol_bad_merge_is_a_user_error():
    class Broken(_Rescaled):
        def switch_to_deploy(self):
            raise ValueError("kernel sizes 2 and 3 do not pad to one centre")

    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(UserError, match="changed the model's output.*switch_to_deploy"):
        reparameterize_model(_Rescaled(2.0), example_inputs=(x,))
    with pytest.raises(UserError, match=r"<root>.switch_to_deploy\(\) failed.*cannot merge"):
        reparameterize_model(Broken())


def test_algebra_identity_and_dilation_kernels():
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    ident = algebra.identity_kernel(6, 3, torch.float64, (3, 3))
    assert torch.equal(nn.functional.conv2d(x, ident, padding=1, groups=3), x)
    k = torch.randn(6, 1, 3, 3, dtype=torch.float64)
    dense = algebra.dilate(k, (2, 2))
    assert dense.shape[-2:] == (5, 5)
    a = nn.functional.conv2d(x, k, padding=2, dilation=2, groups=6)
    assert _rel(nn.functional.conv2d(x, dense, padding=2, groups=6), a) < 1e-14


def test_quantized_program_is_left_alone():
    import dataclasses

    from edgeconv.prepare.reparam.blocks import RepVGGBlock

    block = RepVGGBlock(4, 4).eval()
    graph = dataclasses.replace(capture(block, (torch.randn(1, 4, 5, 5),)), quantizer=object())
    result = reparam_merge(graph, None)
    assert not result.changed and result.graph is graph and "already quantized" in result.notes[0]


# --- exactness is checked on inputs that can tell (never only the all-zeros example) ---------------

class _ZeroedKernelRep(nn.Module):
    """A deliberately broken merge: kernels zeroed, bias kept. On an all-zeros input the original
    outputs only its biases too, so a check on the zeros example cannot see the difference."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.merged = None

    def forward(self, x):
        return self.merged(x) if self.merged is not None else self.a(x) + self.b(x)

    def switch_to_deploy(self):
        conv = nn.Conv2d(3, 4, 3, padding=1)
        conv.weight.data.zero_()
        conv.bias.data = (self.a.bias + self.b.bias).detach()
        self.merged = conv


def test_protocol_zeroed_kernel_merge_is_caught_on_random_inputs_despite_zeros_example():
    torch.manual_seed(0)
    zeros = torch.zeros(1, 3, 6, 6)
    with pytest.raises(UserError, match=r"changed the model's output by .* relative on seeded N\(0,1\) inputs "
                                        r".*<root>: switch_to_deploy\(\)"):
        reparameterize_model(_ZeroedKernelRep(), example_inputs=(zeros,))


def test_protocol_zeroed_kernel_merge_is_caught_on_calibration_inputs():
    # no example input at all: the calibration samples alone catch it
    calib = torch.randn(5, 3, 6, 6).numpy()
    with pytest.raises(UserError, match=r"relative on calibration inputs"):
        reparameterize_model(_ZeroedKernelRep(), calib_inputs=calib)


def test_protocol_reports_both_relative_errors():
    torch.manual_seed(0)
    model = randomize_bn(RepNet()).eval()
    calib = torch.randn(6, 3, 32, 32).numpy()
    _, report = reparameterize_model(model, example_inputs=(torch.zeros(2, 3, 32, 32),), calib_inputs=calib)
    assert report.rel_error_random is not None and 0 < report.rel_error_random < 1e-5
    assert report.rel_error_calib is not None and 0 < report.rel_error_calib < 1e-5
    assert report.calib_samples == 6  # three batches of the example's batch size 2
    assert report.max_rel_error == max(report.rel_error_random, report.rel_error_calib)
    assert report.summary().startswith("merged vs original: ") and "on 6 calibration inputs" in report.summary()
    assert ProtocolReport.from_dict(report.to_dict()) == report
    _, alone = reparameterize_model(model, example_inputs=(torch.zeros(1, 3, 32, 32),))
    assert alone.rel_error_calib is None and "no calibration inputs" in alone.summary()


def test_pass_undoes_a_zeroed_kernel_merge_and_says_so(monkeypatch):
    """The graph pass checks its own rewrite the same way: a broken combine is undone, with a note."""
    import edgeconv.passes.reparam_merge as rm

    real = rm._combine

    def zero_kernels(branches):
        kernel, bias, *rest = real(branches)
        return (torch.zeros_like(kernel), bias, *rest)

    monkeypatch.setattr(rm, "_combine", zero_kernels)
    m = _TwoBranches(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)).eval()
    # the zeros example the pipeline captures with
    case = GraphCase(m, (torch.zeros(1, 3, 6, 6),)).capture().run("reparam-merge").unchanged()
    assert case.result.notes[-1].startswith("reparam-merge FAILED its exactness check and was undone")
    assert "relative on seeded N(0,1) inputs" in case.result.notes[-1]


def test_pass_checks_on_the_context_calibration_data():
    torch.manual_seed(0)
    m = _TwoBranches(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)).eval()
    case = GraphCase(m, (torch.zeros(1, 3, 6, 6),), calib=torch.randn(4, 3, 6, 6).numpy())
    note = case.capture().run("reparam-merge").changed(True).result.notes[-1]
    assert note.startswith("reparam-merge checked: merged vs original: ")
    assert "relative on seeded N(0,1) inputs" in note and "on 4 calibration inputs" in note


def test_merge_limit_follows_the_nets_own_float32_rounding():
    """A merge is allowed ROUNDING_FACTOR × what float32 rounding alone moves the original (its fp32 output
    against its fp64 one) when that is above the plain limit: a deep net that amplifies rounding. A
    merge that is wrong still fails: its error is orders of magnitude above that floor."""
    from edgeconv.prepare.reparam.exactness import ROUNDING_FACTOR, check_sets, rounding_floor, run_sets

    torch.manual_seed(0)
    deep = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(4)]).eval()
    x = torch.randn(1, 8, 8, 8)
    sets = check_sets((x,))
    floor = rounding_floor(deep, sets, run_sets(deep, sets))
    assert floor is not None and 0 < floor.max_rel_error < 1e-5  # float32 vs float64 of the same net

    with pytest.raises(UserError, match=r"changed the model.s output by 3\.00e-04.*limit 1\.0e-04"):
        reparameterize_model(_Rescaled(1 + 3e-4), example_inputs=(torch.randn(1, 3, 4, 4),))
    assert ROUNDING_FACTOR * floor.max_rel_error < 1e-4  # this shallow net's own floor does not widen it
