"""ConvBN Tune mode: fine-tune through frozen BatchNorm without keeping the conv output alive.

For a Conv -> BN(eval) pair whose conv output feeds only that BN (TECHNIQUES.md §1):

    before (Eval mode)                       after (Tune mode)
    z = conv(x, W, b)                        c   = γ · rsqrt(σ² + eps)     # inside autograd
    y = γ (z − μ) / sqrt(σ² + eps) + β       y   = conv(x, W·c, β + c·(b − μ))

Same values and the same gradients to W, b, γ, β, but autograd no longer saves `z` for the BN
backward: less activation memory. Plain eager PyTorch; W, b, γ, β stay the very same Parameter
objects (optimizers, state dicts and checkpoints keep working). The switch is an instance-level
`forward` on the conv and the BN, so `eval_mode(model)` undoes it exactly.

Pairs are found by tracing (torch.fx, or torch.export when `example_inputs` are given and the
model does not fx-trace) so that "the conv output is used only by the BN" is known, not guessed.

A ReLU6 / Hardtanh module that is the only user of a switched BN also gets an output-saving forward:
PyTorch's hardtanh keeps its whole float input for the backward, although the gradient needs only
where the input lay inside (min, max), which its output tells as well — and the output is kept
anyway as the next conv's input. Same values, same gradients; without it a MobileNet block keeps 2
of its 3 Eval-mode activations instead of 1.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.results import Record

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class TunePair(Record):
    conv: str
    bn: str
    reason: str = ""  # why the pair was left alone; empty when it was switched


@dataclasses.dataclass(frozen=True)
class TuneReport(Record):
    switched: tuple[TunePair, ...] = ()
    left_alone: tuple[TunePair, ...] = ()
    traced_with: str = "torch.fx"
    slim_activations: tuple[str, ...] = ()  # ReLU6/Hardtanh modules given the output-saving backward

    def summary(self) -> str:
        return (f"Tune mode: {len(self.switched)} conv-BN pairs switched, {len(self.left_alone)} left alone, "
                f"{len(self.slim_activations)} ReLU6/Hardtanh saving their output")


def tune_mode(model: "nn.Module", example_inputs: tuple[Any, ...] | None = None,
              slim_activations: bool = True) -> TuneReport:
    """Switch every eligible Conv -> BN(eval) pair of `model` to the Tune-mode forward, in place.

    Freeze the BNs first (`model.eval()`, or `bn.eval()` on each BN inside a `model.train()` loop).
    A pair whose BN is in training mode, whose conv output has another user, or whose modules are
    called more than once is left alone, with the reason in the report. Asking for Tune mode when
    every BN is in training mode is a UserError: nothing could be switched.
    """
    gm, traced_with = _trace(model, example_inputs)
    modules = dict(model.named_modules())
    switched, left = [], []
    for conv_name, bn_name, reason in _candidate_pairs(gm, modules, traced_with):
        conv, bn = modules[conv_name], modules[bn_name]
        reason = reason or _ineligible(conv, bn)
        if reason:
            left.append(TunePair(conv_name, bn_name, reason))
            continue
        conv.forward = functools.partial(_conv_tune_forward, conv, bn)
        bn.forward = functools.partial(_bn_tune_forward, bn)
        switched.append(TunePair(conv_name, bn_name))
    training = [p for p in left if p.reason == _TRAINING]
    if training and not switched:
        raise UserError(f"Tune mode needs frozen BatchNorm, but {len(training)} BN layers "
                        f"(e.g. {training[0].bn!r}) are in training mode; call model.eval() "
                        "(or .eval() on the BN modules) before tune_mode")
    slim = _slim_activations(gm, modules, {p.bn for p in switched}) if slim_activations and traced_with == "torch.fx" else ()
    return TuneReport(tuple(switched), tuple(left), traced_with, slim)


def _slim_activations(gm: Any, modules: dict[str, Any], bns: set[str]) -> tuple[str, ...]:
    """Give the output-saving forward to each Hardtanh/ReLU6 module that is the only user of a
    switched BN and is called once."""
    from torch import nn

    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    done = []
    for n in gm.graph.nodes:
        if n.op != "call_module" or n.target not in bns or len(n.users) != 1:
            continue
        (user,) = n.users
        act = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(act, nn.Hardtanh) and type(act).forward is nn.Hardtanh.forward and calls[user.target] == 1:
            act.forward = functools.partial(_hardtanh_output_saving_forward, act)
            done.append(user.target)
    return tuple(done)


def eval_mode(model: "nn.Module") -> int:
    """Undo `tune_mode`: every conv and BN gets its class forward back. Returns pairs restored."""
    restored = 0
    for m in model.modules():
        fwd = m.__dict__.get("forward")
        if isinstance(fwd, functools.partial) and fwd.func in (_conv_tune_forward, _bn_tune_forward,
                                                                _hardtanh_output_saving_forward):
            del m.__dict__["forward"]
            restored += fwd.func is _conv_tune_forward
    return restored


def is_tuned(module: "nn.Module") -> bool:
    fwd = module.__dict__.get("forward")
    return isinstance(fwd, functools.partial) and fwd.func is _conv_tune_forward


# --- the two forwards ---------------------------------------------------------------------------

def tune_weight_bias(conv: "nn.Module", bn: "nn.Module") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(W·c, β + c·(b − μ)) with c = γ·rsqrt(σ² + eps), differentiable in W, b, γ, β."""
    import torch

    coeff = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        coeff = bn.weight * coeff
    w = conv.weight * coeff.reshape([-1] + [1] * (conv.weight.dim() - 1))
    b = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    b = b * coeff
    if bn.bias is not None:
        b = b + bn.bias
    return w, b


def _conv_tune_forward(conv: "nn.Module", bn: "nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    if bn.training:  # the user unfroze the BN after switching: behave exactly like Eval/Train mode
        return type(conv).forward(conv, x)
    w, b = tune_weight_bias(conv, bn)
    return conv._conv_forward(x, w, b)


def _bn_tune_forward(bn: "nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    # The conv already applied the BN affine map; a training BN sees the raw conv output instead.
    return type(bn).forward(bn, x) if bn.training else x


def _hardtanh_output_saving_forward(act: "nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    return _hardtanh_output_saving_fn().apply(x, act.min_val, act.max_val)


@functools.cache
def _hardtanh_output_saving_fn() -> Any:
    import torch

    class HardtanhSavingOutput(torch.autograd.Function):
        """clamp(x, lo, hi) that saves its *output*, not its input: the gradient is 1 strictly
        inside (lo, hi) and 0 elsewhere — exactly PyTorch's hardtanh_backward — and lo < y < hi
        holds exactly where lo < x < hi. The output is the next conv's input, which autograd keeps
        anyway, so the activation costs no extra memory (an in-place edit of it later is caught by
        autograd's version check, never silently wrong)."""

        @staticmethod
        def forward(ctx: Any, x: "torch.Tensor", lo: float, hi: float) -> "torch.Tensor":
            y = x.clamp(lo, hi)
            ctx.save_for_backward(y)
            ctx.bounds = (lo, hi)
            return y

        @staticmethod
        def backward(ctx: Any, grad: "torch.Tensor") -> tuple[Any, None, None]:
            (y,) = ctx.saved_tensors
            # hardtanh_backward masks by lo < arg < hi: fed the output, it gives the same mask.
            return torch.ops.aten.hardtanh_backward(grad, y, *ctx.bounds), None, None

    return HardtanhSavingOutput


# --- eligibility --------------------------------------------------------------------------------

_TRAINING = "BN is in training mode (batch statistics); freeze it with .eval() to tune it"


def _ineligible(conv: "nn.Module", bn: "nn.Module") -> str | None:
    from torch import nn

    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return f"{type(conv).__name__} is not a Conv1d/2d/3d (transposed convs keep Eval mode)"
    if type(conv).forward not in (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward):
        return f"{type(conv).__name__} overrides forward; its computation is not a plain conv"
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or isinstance(bn, nn.SyncBatchNorm):
        return f"{type(bn).__name__} is not a BatchNorm1d/2d/3d"
    if type(bn).forward is not nn.modules.batchnorm._BatchNorm.forward:
        return f"{type(bn).__name__} overrides forward"
    if bn.num_features != conv.out_channels:
        return f"BN has {bn.num_features} features, conv has {conv.out_channels} output channels"
    if not bn.track_running_stats or bn.running_var is None:
        return "BN has no running statistics (track_running_stats=False): it always uses batch stats"
    if bn.training:
        return _TRAINING
    return None


# --- tracing ------------------------------------------------------------------------------------

def _trace(model: "nn.Module", example_inputs: tuple[Any, ...] | None) -> tuple[Any, str]:
    import torch

    try:
        return torch.fx.symbolic_trace(model), "torch.fx"
    except Exception as fx_error:  # data-dependent control flow and the like
        if example_inputs is None:
            raise UserError(f"{type(model).__name__} does not trace with torch.fx "
                            f"({type(fx_error).__name__}); pass example_inputs to tune_mode "
                            "so it can be traced with torch.export") from None
    try:
        return torch.export.export(model, tuple(example_inputs), strict=False).module(), "torch.export"
    except Exception as e:
        raise UserError(f"{type(model).__name__} traces neither with torch.fx nor with torch.export "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def _candidate_pairs(gm: Any, modules: dict[str, Any], traced_with: str) -> list[tuple[str, str, str]]:
    """(conv name, bn name, reason-or-empty) for every node pair conv -> BN in the traced graph."""
    if traced_with == "torch.fx":
        calls = [(n, n.target) for n in gm.graph.nodes if n.op == "call_module"]
    else:
        calls = [(n, _owner(n)) for n in gm.graph.nodes if n.op == "call_function"]
        calls = [(n, name) for n, name in calls if name is not None]
    uses: dict[str, int] = {}
    for _, name in calls:
        uses[name] = uses.get(name, 0) + 1
    out = []
    for node, name in calls:
        if not _is_conv(modules.get(name)):
            continue
        consumers = list(node.users)
        bns = [(u, _name_of(u, traced_with)) for u in consumers]
        bns = [(u, b) for u, b in bns if _is_bn(modules.get(b)) and u.args and u.args[0] is node]
        if not bns:
            continue
        bn_node, bn_name = bns[0]
        reason = ""
        if len(consumers) > 1:
            reason = f"conv output has {len(consumers)} users (the BN and others): it must stay alive"
        elif uses[name] > 1 or uses[bn_name] > 1:
            reason = "the conv or BN module is called more than once in forward"
        if (name, bn_name) not in {(c, b) for c, b, _ in out}:
            out.append((name, bn_name, reason))
    return out


def _name_of(node: Any, traced_with: str) -> str | None:
    if traced_with == "torch.fx":
        return node.target if node.op == "call_module" else None
    return _owner(node) if node.op == "call_function" else None


def _owner(node: Any) -> str | None:
    """Module path owning an exported conv/BN node: the path of its weight (or running-mean) attr."""
    import torch

    aten = torch.ops.aten
    convs = (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
             aten.convolution.default)
    if node.target in convs:
        cand = [node.args[1]]
    elif node.target is aten.batch_norm.default:
        cand = [node.args[i] for i in (1, 3) if len(node.args) > i]
    else:
        return None
    for a in cand:
        if getattr(a, "op", None) == "get_attr":
            return a.target.rpartition(".")[0]
    return None


def _is_conv(m: Any) -> bool:
    from torch import nn

    return isinstance(m, nn.modules.conv._ConvNd)


def _is_bn(m: Any) -> bool:
    from torch import nn

    return isinstance(m, nn.modules.batchnorm._BatchNorm)
