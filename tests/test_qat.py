"""QAT: Tune-mode BN fold before fake-quant, BN statistics frozen after N steps, convert to a
quantized Graph that the real tflite-int8 exporter lowers with the QAT-learned scales."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edgeconv.quant import qat
from edgeconv.calib.data import DataSet
from edgeconv.demo import demo, heldout
from edgeconv.errors import UserError

MUL = torch.ops.aten.mul.Tensor
CONV = torch.ops.aten.conv2d.default


@pytest.fixture(scope="module")
def spec():
    torch.set_num_threads(1)
    return demo()


@pytest.fixture(scope="module")
def trained(spec):
    """A short real QAT run on the digits training split (per-channel), its QATModel and Graph."""
    data = qat.demo_train_data()
    opts = qat.QATOptions(per_channel=True, freeze_bn_after=5, freeze_observers_after=8)
    qm = qat.prepare(spec.module, "tflite-int8", spec.example_inputs, opts)
    opt = torch.optim.AdamW(qm.parameters(), lr=1e-3)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    stats = []
    for i in range(12):
        idx = torch.arange(i * 16, (i + 1) * 16)  # batch 16: the capture's batch dimension is dynamic
        loss = torch.nn.functional.cross_entropy(qm(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats.append(dict(qm.module.named_buffers())["stem.1.running_var"].clone())
    qm.eval()
    with torch.no_grad():
        fq_out = qm(torch.from_numpy(heldout().x[:8]))
    return qm, stats, fq_out, qat.convert(qm)


def test_bn_folded_in_tune_mode_form_before_fake_quant(spec):
    qm = qat.prepare(spec.module, "tflite-int8", spec.example_inputs)
    g = qm.module.graph
    assert not [n for n in g.nodes if "batch_norm" in str(n.target)]
    convs = [n for n in g.nodes if n.target is CONV]
    assert len(convs) == 7 and len(qm.tracks) == 7
    for conv in convs:
        fq = conv.args[1]  # the weight goes through a fake-quant module...
        assert fq.op == "call_module" and "FakeQuantize" in type(getattr(qm.module, fq.target)).__name__
        mul = fq.args[0]  # ...whose input is W·c computed from the parameters every step
        assert mul.target is MUL and mul.args[0].op == "get_attr" and mul.args[0].target.endswith(".weight")
    assert [p for p in spec.module.modules() if "forward" in p.__dict__] == []  # the user's model untouched


def test_bn_statistics_follow_the_batch_then_freeze(trained):
    qm, stats, _, _ = trained
    assert qm.bn_frozen and qm.observers_frozen and qm.steps == 12
    moved = [float((b - a).abs().max()) for a, b in zip(stats, stats[1:])]
    assert all(m > 0 for m in moved[:4])           # steps 1-5 update the running statistics
    assert all(m == 0 for m in moved[5:])          # from step 6 on they are frozen


def test_convert_gives_a_clean_quantized_graph(trained):
    qm, _, fq_out, graph = trained
    assert graph.quantized and graph.history[-1].stage == "qat"
    ops = [str(n.target) for n in graph.program.graph.nodes if n.op == "call_function"]
    assert not [o for o in ops if "batch_norm" in o or o.endswith("_.Tensor") or "var" in o]
    per_channel = [q for q in graph.qparams.values() if q.axis == 0]
    assert len(per_channel) == 8  # 7 convs (BN folded) and the linear
    assert graph.program.module()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with torch.no_grad():  # the real Q/DQ program tracks the fake-quant model it came from
        out = torch.cat([graph.program.module()(torch.from_numpy(heldout().x[i:i + 1])) for i in range(8)])
    step = graph.qparams["__output__"].scale[0]
    assert torch.equal(out.argmax(1), fq_out.argmax(1))
    assert float((out - fq_out).abs().max()) <= 6 * step  # fake-quant rounds in float: a few steps


def test_tflite_artifact_carries_the_qat_scales(trained, tmp_path, spec):
    from edgeconv.registrations import load
    from edgeconv.context import Context
    from edgeconv.config import ExportOptions
    from edgeconv.registry import TARGETS

    _, _, _, graph = trained
    load()
    target = TARGETS.get("tflite-int8")()
    path = tmp_path / "qat.tflite"
    target.export(graph, Context(options=ExportOptions(), model=spec), path)
    weights = target.weights(path)
    assert [w.dtype for w in weights] == ["int8"] * 8
    conv_scales = sorted(q.scale[0] for q in graph.qparams.values() if q.axis == 0)
    from edgeconv.exporters.tflite.read import read_weights

    file_scales = sorted(float(s[0]) for _, s in read_weights(path) if s is not None)
    assert np.allclose(file_scales, conv_scales, rtol=1e-6)
    x = heldout().x[:16]
    ref = torch.cat([graph.program.module()(torch.from_numpy(x[i:i + 1])) for i in range(16)]).detach().numpy()
    out = target.load(path)(x)
    step = graph.qparams["__output__"].scale[0]
    assert np.abs(out - ref).max() <= 2 * step + 1e-6


def test_train_qat_keeps_accuracy(spec):
    data = qat.demo_train_data().take(0, 320)
    graph = qat.train_qat(spec, data, epochs=1, per_channel=False)
    held = heldout().take(0, 100)
    m = graph.program.module()
    pred = [int(m(torch.from_numpy(held.x[i:i + 1])).argmax()) for i in range(len(held))]
    assert np.mean(np.asarray(pred) == held.y) >= 0.9
    assert any("per-layer" in n for n in graph.history[-1].notes)


def test_the_learning_rate_is_the_one_asked_for(spec):
    """A rate too small to move a weight keeps the fp32 net's function (what the int8 grid allows);
    a large one moves it: fine-tuning a pretrained net needs the small one (--qat-lr)."""
    data = qat.demo_train_data().take(0, 128)
    held = torch.from_numpy(heldout().x[:32])
    with torch.no_grad():
        ref = spec.module.eval()(held)

    def cos_to_fp32(lr):
        graph = qat.train_qat(spec, data, epochs=1, lr=lr)
        assert any(f"at lr {lr:g}" in n for n in graph.history[-1].notes)
        m = graph.program.module()
        with torch.no_grad():
            out = torch.cat([m(held[i:i + 1]) for i in range(len(held))])
        return float(torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), 0))

    still, moved = cos_to_fp32(1e-9), cos_to_fp32(0.3)
    assert still >= 0.98 and moved < still - 0.02, (still, moved)


def test_bad_input_is_one_line(spec):
    with pytest.raises(UserError, match="QAT needs an int8 target; tflite is float"):
        qat.prepare(spec.module, "tflite", spec.example_inputs)
    with pytest.raises(UserError, match="unknown target"):
        qat.prepare(spec.module, "tflite-int4", spec.example_inputs)
    with pytest.raises(UserError, match="example_inputs"):
        qat.prepare(spec.module, "tflite-int8", None)
    good = qat.demo_train_data().take(0, 8)
    wrong_shape = dataclasses.replace(good, x=good.x[:, :, :16, :16])
    with pytest.raises(UserError, match=r"shape \[3, 16, 16\].*takes \[3, 32, 32\]"):
        qat.train_qat(spec, wrong_shape, epochs=1)
    with pytest.raises(UserError, match="labelled"):
        qat.train_qat(spec, dataclasses.replace(good, y=None), epochs=1)
    with pytest.raises(UserError, match="at least 1"):
        qat.train_qat(spec, good, epochs=0)
    with pytest.raises(UserError, match="package.module:function"):
        qat.load_train_data("nocolon", spec)
    with pytest.raises(UserError, match="cannot import .edgeconv.nonexistent. for --train-data"):
        qat.load_train_data("edgeconv.nonexistent:fn", spec)


def _pairs():  # a user's training-data function returning (x, y)
    d = qat.demo_train_data().take(0, 4)
    return d.x, d.y


def test_load_train_data_accepts_pairs(spec):
    data = qat.load_train_data("test_qat:_pairs", spec)
    assert isinstance(data, DataSet) and data.x.shape == (4, 3, 32, 32) and len(data.y) == 4


class _InPlaceResidual(torch.nn.Module):
    """timm's BasicBlock tail: `x += shortcut; x = act(x)` with an in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.short = torch.nn.Conv2d(3, 8, 1)
        self.act = torch.nn.ReLU(inplace=True)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y += self.short(x)
        return self.head(self.act(y).mean((2, 3)))


def test_an_in_place_residual_add_carries_its_relu():
    """QAT captures in train mode, where `x += shortcut` stays aten.add_: the ReLU after it runs inside
    the file's ADD, so the add's own output must not be quantized (TFLite had 2 steps at the fused pair)."""
    torch.manual_seed(0)
    model = _InPlaceResidual().eval()
    qm = qat.prepare(model, "tflite-int8", (torch.zeros(1, 3, 8, 8),), qat.QATOptions(freeze_bn_after=1))
    qm(torch.randn(4, 3, 8, 8))
    nodes = list(qat.convert(qm).program.graph.nodes)
    relus = [n for n in nodes if n.op == "call_function" and "relu" in str(n.target)]
    assert len(relus) == 1, [str(n.target) for n in nodes]
    src = relus[0].args[0]
    assert "add" in str(src.target), f"the ReLU reads {src.name} ({src.target}): the add was quantized before it"
