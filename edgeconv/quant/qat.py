"""Quantization-aware training: prepare -> the user's own training loop -> convert -> the same exporters.

    qm = edgeconv.quant.qat.prepare(model, target="tflite-int8", example_inputs=(x,))
    opt = torch.optim.AdamW(qm.parameters(), lr=1e-3)
    for xb, yb in loader:                      # qm counts training steps
        loss = F.cross_entropy(qm(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
    graph = edgeconv.quant.qat.convert(qm)          # a quantized Graph, like the `quantize` pass makes

How (TECHNIQUES.md §3 QAT, §7 QAT): every eligible Conv -> BN pair is switched to the Tune-mode
form (edgeconv.prepare.tune_mode) so the BN is folded into the weight *before* fake-quant: c = γ·rsqrt(σ² + eps)
is recomputed each step inside autograd and the conv runs on fq(W·c) with bias β + c·(b − μ). The
model is captured with torch.export in train mode with a dynamic batch and prepared with
edgeconv's own PT2E annotator (the one calibration uses: full-integer) and litert-torch's QAT
fake-quant (straight-through estimator; per-channel or per-layer symmetric int8 weights, per-tensor
int8 activations). For the first `freeze_bn_after`
training steps the BN running statistics keep following the batch statistics of the fake-quantized
conv outputs (an EMA with the BN's momentum); then they freeze. After `freeze_observers_after`
steps the activation ranges stop moving. `convert` drops the statistics updates, runs
`convert_pt2e(fold_quantize=False)` (what litert-torch lowers to int8), folds the W·c and bias
arithmetic into constants, and re-captures at the model's example input: a Graph with `quantizer`
and `qparams` set, which every int8 exporter takes.

Why not `prepare_qat_pt2e`: in torch 2.13 / torchao 0.18 its conv-BN QAT rewrite (and litert-torch's
conv-BN QAT annotators) build their patterns with `torch.export.export(<function>)`, which torch
now refuses (`Expected mod to be an instance of torch.nn.Module`). Folding the BN in Tune-mode form
first leaves no conv-BN pattern to rewrite, and `prepare_pt2e` inserts the QAT fake-quant modules
the `is_qat=True` config names just the same.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from edgeconv.config import QATOptions
from edgeconv.errors import UserError

if TYPE_CHECKING:
    import torch

    from edgeconv.calib.data import DataSet
    from edgeconv.graph import Graph
    from edgeconv.models import ModelSpec


TRACK = "_edgeconv_track"  # per-BN buffer: 1 while its statistics follow the batch, 0 when frozen


class QATModel:
    """The fake-quantized model being trained. Call it like the model; hand `parameters()` to an
    optimizer; `train()` / `eval()` switch dropout and stop range/statistics updates for evaluation."""

    def __init__(self, module: Any, quantizer: Any, example_inputs: tuple[Any, ...], target: str,
                 options: QATOptions, tracks: tuple[str, ...], notes: tuple[str, ...]) -> None:
        self.module, self.quantizer, self.example_inputs = module, quantizer, example_inputs
        self.target, self.options, self.tracks, self.notes = target, options, tracks, notes
        self.steps = 0
        self.training = True
        self.bn_frozen = options.freeze_bn_after <= 0
        self.observers_frozen = False
        self._apply_flags()

    def __call__(self, *args: Any) -> Any:
        if self.training:
            if self.steps == self.options.freeze_bn_after:
                self.freeze_bn()
            if self.steps == self.options.freeze_observers_after:
                self.freeze_observers()
            self.steps += 1
        return self.module(*args)

    def parameters(self) -> Iterator["torch.nn.Parameter"]:
        return self.module.parameters()

    def train(self, mode: bool = True) -> "QATModel":
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        if mode != self.training:
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.module)
            self.training = mode
            self._apply_flags()
        return self

    def eval(self) -> "QATModel":
        return self.train(False)

    def freeze_bn(self) -> None:
        self.bn_frozen = True
        self._apply_flags()

    def freeze_observers(self) -> None:
        self.observers_frozen = True
        self._apply_flags()

    def _apply_flags(self) -> None:
        import operator

        from torchao.quantization.pt2e import disable_observer, enable_observer

        track = 1.0 if self.training and not self.bn_frozen else 0.0
        for name in self.tracks:
            operator.attrgetter(name)(self.module).fill_(track)
        observe = self.training and not self.observers_frozen
        self.module.apply(enable_observer if observe else disable_observer)


def prepare(model: "torch.nn.Module", target: str = "tflite-int8",
            example_inputs: tuple["torch.Tensor", ...] | None = None,
            options: QATOptions = QATOptions()) -> QATModel:
    """Fold BNs in Tune-mode form, capture in train mode with a dynamic batch, insert QAT fake-quant.
    `model` itself is not modified (a copy is prepared)."""
    import copy

    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    _check_target(target)
    if not example_inputs:
        raise UserError("edgeconv.quant.qat.prepare needs example_inputs, e.g. (torch.zeros(1, 3, 224, 224),)")
    model = copy.deepcopy(model)
    tracks, notes = _tune_for_qat(model, example_inputs)
    x = example_inputs[0]
    # Capture at batch 2 with the batch dimension dynamic: a static batch would make the program
    # refuse the training batch size (a shape guard), and export specialises a batch of 1.
    capture_x = x[:1].expand(2, *x.shape[1:]).clone()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    dyn = ({0: batch},) + tuple(None for _ in example_inputs[1:])
    try:
        program = torch.export.export(model, (capture_x, *example_inputs[1:]), dynamic_shapes=dyn, strict=False)
    except Exception as e:
        raise UserError(f"QAT cannot capture {type(model).__name__} in train mode with a dynamic batch: "
                        f"{str(e).strip().splitlines()[0][:160]}") from None
    prepared = prepare_pt2e(program.module(), _qat_quantizer(options.per_channel))
    return QATModel(prepared, _export_quantizer(options.per_channel), tuple(t[:1] for t in example_inputs),
                    target, options, tracks, notes)


def convert(qm: QATModel, notes: tuple[str, ...] = ()) -> "Graph":
    """The trained QAT model as a quantized Graph (program at batch 1, scales learned in QAT)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgeconv.graph import Graph
    from edgeconv.quant.qparams import read_qparams
    from edgeconv.results import StageRecord

    t0 = time.perf_counter()
    qm.eval()
    converted = convert_pt2e(qm.module, fold_quantize=False)  # fold=False: what litert lowers to int8
    _drop_side_effects(converted)
    _fold_constants(converted)
    qparams = read_qparams(converted)
    program = torch.export.export(converted, qm.example_inputs, strict=False)
    graph = Graph(program=program, example_inputs=qm.example_inputs, quantizer=qm.quantizer, qparams=qparams)
    granularity = "per-channel" if qm.options.per_channel else "per-layer"
    rec_notes = (f"QAT: {qm.steps} training steps, weights int8 {granularity} symmetric, activations int8 "
                 f"per-tensor; BN folded in Tune-mode form, statistics frozen after "
                 f"{qm.options.freeze_bn_after} steps, activation ranges after {qm.options.freeze_observers_after}",
                 ) + qm.notes + notes
    return graph.record(StageRecord("qat", True, round(time.perf_counter() - t0, 3), rec_notes))


def train_qat(spec: "ModelSpec", data: "DataSet", epochs: int, per_channel: bool = True,
              target: str = "tflite-int8", batch: int = 32, lr: float = 1e-3, seed: int = 0,
              progress: Any = None) -> "Graph":
    """QAT of `spec.module` on labelled `data` for `epochs` (cross-entropy, AdamW, cosine LR).

    For `edgeconv export --qat-epochs N [--train-data module:fn]`; BN statistics freeze after the
    first third of the steps, observers after two thirds. The returned Graph goes to the int8
    exporters in place of the `quantize` pass's output.
    """
    import copy

    import torch

    if epochs < 1:
        raise UserError(f"--qat-epochs {epochs} must be at least 1")
    check_train_data(data, spec)
    torch.manual_seed(seed)
    steps_per_epoch = (len(data) + batch - 1) // batch
    total = epochs * steps_per_epoch
    opts = QATOptions(per_channel=per_channel, freeze_bn_after=max(1, total // 3),
                      freeze_observers_after=max(2, 2 * total // 3))
    qm = prepare(copy.deepcopy(spec.module), target, spec.example_inputs, opts)
    opt = torch.optim.AdamW(qm.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    x, y = torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            if len(idx) < 2:  # a batch of one has no batch statistics
                continue
            loss = torch.nn.functional.cross_entropy(qm(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return convert(qm, (f"QAT data: {data.source}, {len(data)} samples, {epochs} epochs at lr {lr:g}, "
                        f"{time.perf_counter() - t0:.0f} s",))


# --- training data ------------------------------------------------------------------------------

def check_train_data(data: Any, spec: "ModelSpec") -> None:
    """One-line errors for training data that cannot train this model."""
    x, y = getattr(data, "x", None), getattr(data, "y", None)
    if not isinstance(x, np.ndarray) or x.ndim < 2:
        raise UserError("QAT training data must be a DataSet with x: a float32 array of model inputs (N, C, H, W)")
    if tuple(x.shape[1:]) != tuple(spec.input_shape[1:]):
        raise UserError(f"QAT training data has inputs of shape {list(x.shape[1:])} per sample but "
                        f"{spec.name} takes {list(spec.input_shape[1:])}; preprocess to the model's input shape")
    if y is None or len(y) != len(x):
        raise UserError("QAT needs labelled training data: DataSet.y with one integer class per input")
    if not np.issubdtype(np.asarray(y).dtype, np.integer) or int(np.min(y)) < 0:
        raise UserError("QAT training labels must be non-negative integer class indices")
    if len(x) < 2:
        raise UserError(f"QAT training data has {len(x)} sample(s); give at least a few batches")


def load_train_data(ref: str, spec: "ModelSpec") -> "DataSet":
    """`--train-data package.module:fn`: fn() returns a DataSet (or an (x, y) pair of arrays)."""
    from edgeconv.calib.data import DataSet

    from edgeconv.models import call_ref

    out = call_ref(ref, "--train-data")
    if isinstance(out, tuple) and len(out) == 2:
        out = DataSet(np.asarray(out[0], dtype=np.float32), np.asarray(out[1]), source=ref)
    if not isinstance(out, DataSet):
        raise UserError(f"--train-data {ref} returned {type(out).__name__}, not a DataSet or an (x, y) pair")
    check_train_data(out, spec)
    return out


def demo_train_data() -> "DataSet":
    from edgeconv.demo import training

    return training()


def _check_target(target: str) -> None:
    from edgeconv.registrations import load
    from edgeconv.registry import TARGETS

    load()
    cls = TARGETS.get(target)  # unknown names list the choices
    if not getattr(cls, "quantized", False):
        int8 = [n for n, c in TARGETS.items() if getattr(c, "quantized", False)]
        raise UserError(f"QAT needs an int8 target; {target} is float. Choose one of: {', '.join(int8)}")


# --- the QAT graph ------------------------------------------------------------------------------

def _tune_for_qat(model: "torch.nn.Module", example_inputs: tuple[Any, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Switch conv-BN pairs to the Tune-mode QAT forward; every BN frozen (eval), the rest train."""
    import functools

    import torch

    from edgeconv.prepare.tune_mode import tune_mode

    model.eval()
    # plain activations: the QAT program is captured with torch.export and annotated by op type
    report = tune_mode(model, example_inputs, slim_activations=False)
    modules = dict(model.named_modules())
    tracks = []
    for pair in report.switched:
        conv, bn = modules[pair.conv], modules[pair.bn]
        bn.register_buffer(TRACK, torch.ones((), dtype=bn.running_mean.dtype))
        conv.forward = functools.partial(_qat_conv_forward, conv, bn)
        tracks.append(f"{pair.bn}.{TRACK}")
    model.train()  # dropout and the like train; BatchNorm does not (statistics as documented above)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    notes = tuple(f"BN {p.bn} stays unfused with frozen statistics: {p.reason}" for p in report.left_alone)
    return tuple(tracks), notes


def _qat_conv_forward(conv: Any, bn: Any, x: "torch.Tensor") -> "torch.Tensor":
    """Tune-mode conv (the weight W·c is what gets fake-quantized) plus the EMA update of the BN
    statistics from this batch, scaled by the BN's track flag (0 once frozen)."""
    import torch

    from edgeconv.prepare.tune_mode import tune_weight_bias

    w, b = tune_weight_bias(conv, bn)
    y = conv._conv_forward(x, w, b)
    # Statistics only (no gradient): the conv output before BN, z = (y − b_t) / c + b.
    shape = [1, -1] + [1] * (y.dim() - 2)
    c = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        c = c * bn.weight.detach()
    c = torch.where(c == 0, torch.ones_like(c), c)
    z = (y.detach() - b.detach().reshape(shape)) / c.reshape(shape)
    if conv.bias is not None:
        z = z + conv.bias.detach().reshape(shape)
    dims = [0] + list(range(2, y.dim()))
    m = bn.momentum * getattr(bn, TRACK)
    bn.running_mean.mul_(1 - m).add_(m * z.mean(dims))
    bn.running_var.mul_(1 - m).add_(m * z.var(dims))  # unbiased, as BatchNorm keeps it
    return y


def _qat_quantizer(per_channel: bool) -> Any:
    """edgeconv's PT2E quantizer (`edgeconv.calib.annotate`, as post-training calibration uses: every
    residual ADD, norm and attention op int8) with litert-torch's QAT fake-quant config; the arithmetic
    on parameters (W·c, the folded bias, the statistics updates) is not activation and is not annotated."""
    import dataclasses as dc

    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    from edgeconv.calib.observers import quantizer_class

    class _QATQuantizer(quantizer_class()):
        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            for node in _not_activations(model):
                node.meta.pop("quantization_annotation", None)
            return model

    # is_qat=False only skips the conv-BN QAT annotators (there is no conv-BN left); the
    # fake-quant constructors are those of the QAT config.
    config = dc.replace(get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=True), is_qat=False)
    return _QATQuantizer().set_global(config)


def _export_quantizer(per_channel: bool) -> Any:
    """What the exporters hand litert-torch (it selects static Q/DQ lowering, it is not re-run)."""
    from edgeconv.calib.observers import quantizer

    return quantizer(per_channel=per_channel)


def _not_activations(gm: Any) -> list[Any]:
    """Nodes computed from parameters only, and nodes that do not reach the output (statistics)."""
    const: set[Any] = set()
    for n in gm.graph.nodes:
        if n.op == "get_attr" or (n.op == "call_function" and n.all_input_nodes
                                  and all(i in const for i in n.all_input_nodes)):
            const.add(n)
    from edgeconv.calib.annotate import reaching_output

    live = reaching_output(gm)
    return [n for n in gm.graph.nodes if n.op == "call_function" and (n in const or n not in live)]


def _drop_side_effects(gm: Any) -> None:
    """Remove the BN statistics updates (they do not reach the output) before deployment."""
    from edgeconv.calib.annotate import reaching_output

    live = reaching_output(gm)
    for n in reversed(list(gm.graph.nodes)):
        if n.op == "call_function" and n not in live and not n.users:
            gm.graph.erase_node(n)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _fold_constants(gm: Any) -> int:
    """Evaluate arithmetic on parameters (W·c, the folded bias) into constants, stopping at the
    quantize ops so weights stay float in front of their quantize node (fold_quantize=False)."""
    import operator

    import torch

    qd = torch.ops.quantized_decomposed
    keep = {qd.quantize_per_tensor.default, qd.quantize_per_channel.default}
    vals: dict[Any, Any] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            vals[n] = operator.attrgetter(n.target)(gm)
        elif (n.op == "call_function" and n.target not in keep and n.all_input_nodes
              and all(i in vals for i in n.all_input_nodes)):
            args = torch.fx.node.map_arg(n.args, lambda a: vals[a])
            kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: vals[a])
            with torch.no_grad():
                vals[n] = n.target(*args, **kwargs)
    folded = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in vals or all(u in vals for u in n.users):
            continue
        name = f"_edgeconv_folded_{folded}"
        gm.register_buffer(name, vals[n].detach().clone())
        with gm.graph.inserting_before(n):
            n.replace_all_uses_with(gm.graph.get_attr(name))
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return folded
