"""Tune mode equals Eval mode (values and gradients of W, b, γ, β) in float64 on a zoo of conv-BN
patterns, keeps the same Parameter objects, leaves ineligible pairs alone with a reason."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from edgeconv.errors import UserError
from edgeconv.prepare.tune_mode import TuneReport, eval_mode, is_tuned, tune_mode
from zoo_reparam import TUNE_ZOO, Bottleneck, ConvOutputReused, Plain, randomize_bn


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _fwd_bwd(model: nn.Module, x: torch.Tensor, g_seed: int = 1):
    out = model(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(g_seed), dtype=out.dtype)
    grads = torch.autograd.grad(out, list(model.parameters()) + [x], g)
    return out.detach(), grads


@pytest.mark.parametrize("name,factory,shape,n_switched,n_left", TUNE_ZOO, ids=[z[0] for z in TUNE_ZOO])
def test_tune_equals_eval_fp64(name, factory, shape, n_switched, n_left):
    torch.manual_seed(0)
    model = randomize_bn(factory()).double().eval()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params_before = [id(p) for p in model.parameters()]
    keys_before = list(model.state_dict())
    ref_out, ref_grads = _fwd_bwd(model, x)

    report = tune_mode(model, example_inputs=(x,))
    assert (len(report.switched), len(report.left_alone)) == (n_switched, n_left)
    assert all(p.reason for p in report.left_alone)
    out, grads = _fwd_bwd(model, x)
    assert _rel(out, ref_out) < 1e-10
    for g, r in zip(grads, ref_grads, strict=True):  # W, b, γ, β of every layer, and the input
        assert _rel(g, r) < 1e-10
    # Same Parameter objects, same state-dict keys: optimizers and checkpoints keep working.
    assert [id(p) for p in model.parameters()] == params_before
    assert list(model.state_dict()) == keys_before
    modules = dict(model.named_modules())
    assert all(is_tuned(modules[p.conv]) for p in report.switched)

    assert eval_mode(model) == n_switched
    assert not any(is_tuned(m) for m in model.modules())
    assert _rel(model(x), ref_out) < 1e-12


def test_tune_mode_actually_skips_the_bn_forward():
    """Guard against a Tune mode that only pretends: the BN op must be gone from the computation."""
    model = randomize_bn(Plain()).eval()
    tune_mode(model)
    with torch.profiler.profile() as prof:
        model(torch.randn(1, 3, 9, 9))
    names = {e.name for e in prof.events()}
    assert "aten::batch_norm" not in names and "aten::conv2d" in names


def test_training_loop_with_frozen_bn_and_optimizer():
    """The documented use: model.train() with BNs frozen; the optimizer made before the switch
    updates the same parameters, and the state dict round-trips into a plain model."""
    torch.manual_seed(0)
    model = randomize_bn(Bottleneck()).train()
    twin = copy.deepcopy(model)
    for m in (model, twin):
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1)
    report = tune_mode(model)
    assert len(report.switched) == 4
    x = torch.randn(4, 8, 8, 8)
    for m, o in ((model, opt), (twin, opt_twin)):
        for _ in range(3):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), k
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    plain = Bottleneck()
    plain.load_state_dict(torch.load(buf, weights_only=True))


def test_unfrozen_bn_after_switch_behaves_like_train_mode():
    torch.manual_seed(0)
    model = randomize_bn(Plain()).eval()
    twin = copy.deepcopy(model)
    tune_mode(model)
    model.train(), twin.train()
    x = torch.randn(4, 3, 9, 9)
    assert _rel(model(x), twin(x)) < 1e-6
    assert torch.equal(model[1].running_mean, twin[1].running_mean)  # stats updated identically


def test_all_bn_training_is_a_user_error():
    model = randomize_bn(Plain()).train()
    with pytest.raises(UserError, match="training mode.*model.eval"):
        tune_mode(model)


def test_mixed_training_bn_left_alone_with_reason():
    model = randomize_bn(Plain()).eval()
    model[4].train()
    report = tune_mode(model)
    assert [p.conv for p in report.switched] == ["0"]
    assert report.left_alone[0].bn == "4" and "training mode" in report.left_alone[0].reason


def test_reused_conv_output_reason_and_report_roundtrip():
    report = tune_mode(randomize_bn(ConvOutputReused()).eval())
    assert report.left_alone[0].conv == "conv" and "2 users" in report.left_alone[0].reason
    assert TuneReport.from_dict(report.to_dict()) == report


def test_untraceable_without_inputs_is_a_user_error():
    from zoo_reparam import ControlFlow

    with pytest.raises(UserError, match="example_inputs"):
        tune_mode(ControlFlow().eval())


def test_idempotent():
    model = randomize_bn(Bottleneck()).double().eval()
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    ref = model(x)
    tune_mode(model)
    r2 = tune_mode(model)
    assert len(r2.switched) == 4 and _rel(model(x), ref) < 1e-12


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def test_relu6_after_a_tuned_bn_keeps_no_extra_activation():
    from zoo_reparam import Depthwise

    torch.manual_seed(0)
    model = randomize_bn(Depthwise()).double().eval()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    x.data[0, 0, 0, :3] = torch.tensor([0.0, 6.0, -0.0])  # boundary values: gradient 0 exactly there
    ref_out, ref_grads = _fwd_bwd(model, x)
    eval_bytes = _saved_bytes(model, x)

    plain = tune_mode(model, example_inputs=(x,), slim_activations=False)
    assert plain.slim_activations == ()
    plain_bytes = _saved_bytes(model, x)
    eval_mode(model)

    report = tune_mode(model, example_inputs=(x,))
    assert len(report.slim_activations) == 1
    out, grads = _fwd_bwd(model, x)
    assert _rel(out, ref_out) < 1e-12
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel(g, r) < 1e-12
    slim_bytes = _saved_bytes(model, x)
    assert slim_bytes < plain_bytes < eval_bytes
    assert eval_mode(model) == len(report.switched)
    assert not any("forward" in m.__dict__ for m in model.modules())
