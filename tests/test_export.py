"""The spine end to end on the embedded demo: real converters, real runtimes."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgeconv.config import ExportOptions, Granularity, QuantOptions
from edgeconv.models import load_model
from edgeconv.pipeline import export

TARGETS = ("tflite-int8", "onnx-int8", "tflite", "onnx")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    manifest = export(load_model(None), ExportOptions(targets=TARGETS, out_dir=str(out)))
    return out, manifest


def _art(manifest, target):
    return next(a for a in manifest.artifacts if a.target == target)


def test_every_target_passes_parity_and_keeps_accuracy(demo_run):
    out, m = demo_run
    assert m.reference_accuracy is not None and m.reference_accuracy > 0.95
    assert [a.target for a in m.artifacts] == list(TARGETS)
    for a in m.artifacts:
        assert (out / a.path).is_file()
        assert a.parity.passed, (a.target, a.parity.diffs)
        # int8 within 1 point of fp32 on the held-out digits
        assert a.parity.accuracy >= m.reference_accuracy - 0.01, a.target


def test_int8_artifacts_match_torch_quant_sim_within_steps(demo_run):
    _, m = demo_run
    for t in ("tflite-int8", "onnx-int8"):
        sim = next(d for d in _art(m, t).parity.diffs if d.reference == "torch-quant-sim")
        assert sim.max_steps is not None and sim.max_steps <= 3.0
        assert sim.top1_agreement >= 0.98


def test_float_artifacts_match_fp32_closely(demo_run):
    _, m = demo_run
    for t in ("tflite", "onnx"):
        d = _art(m, t).parity.diffs[0]
        assert d.reference == "torch-fp32" and d.max_abs < 1e-4 and d.top1_agreement == 1.0


def test_per_channel_weights_one_scale_per_output_channel(demo_run):
    _, m = demo_run
    a = _art(m, "tflite-int8")
    convs = [w for w in a.weights if w.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(convs) >= 6
    for w in convs:
        assert w.dtype == "int8"
        channels = w.shape[3] if w.op == "DEPTHWISE_CONV_2D" else w.shape[0]
        assert w.num_scales == channels and w.axis == (3 if w.op == "DEPTHWISE_CONV_2D" else 0)
    onnx = _art(m, "onnx-int8")
    assert all(w.dtype == "int8" and w.num_scales == w.shape[0] for w in onnx.weights)
    # every weight scale vector in both files equals edgeconv's own
    for t in ("tflite-int8", "onnx-int8"):
        note = _art(m, t).scales_from
        n = len(_art(m, t).weights)
        assert f"{n}/{n} weight scale vectors equal edgeconv's" in note
        acts = re.search(r"(\d+)/(\d+) activation scales equal", note)
        assert acts and acts.group(1) == acts.group(2) and int(acts.group(1)) >= 10, note


def test_manifest_on_disk_round_trips(demo_run):
    from edgeconv.results import Manifest

    out, m = demo_run
    data = json.loads((out / "edgeconv.json").read_text())
    back = Manifest.from_dict(data)
    assert back == m
    a = data["artifacts"][0]
    assert len(a["sha256"]) == 64 and a["size_bytes"] > 0 and a["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert a["inputs"][0]["quant"]["dtype"] == "int8"  # full-integer TFLite I/O
    stages = [s["stage"] for s in data["stages"]]
    # one calibration shared by both int8 targets
    assert stages.count("quantize") == 1
    assert stages[:5] == ["prepare", "capture", "reparam-merge", "fold-conv-bn", "check-quant"]
    assert {"torch", "litert-torch", "onnxruntime"} <= set(data["tool_versions"])
    assert data["calibration"]["real"] is True and data["calibration"]["samples"] == 128


def test_per_layer_gives_one_scale_per_tensor(tmp_path):
    opts = ExportOptions(targets=("tflite-int8",), out_dir=str(tmp_path),
                         quant=QuantOptions(weights=Granularity.PER_TENSOR))
    m = export(load_model(None), opts)
    ws = m.artifacts[0].weights
    assert ws and all(w.num_scales == 1 and w.axis is None for w in ws)


def test_fold_refuses_bn_after_relu_and_stays_exact(tmp_path):
    m = export(load_model("zoo:conv_relu_bn"), ExportOptions(targets=("onnx",), out_dir=str(tmp_path),
                                                            calib=__import__("edgeconv.config", fromlist=["CalibSpec"]).CalibSpec(source="random")))
    fold = next(s for s in m.stages if s.stage == "fold-conv-bn")
    assert fold.changed
    assert any(n.startswith("folded 1 BatchNorm") for n in fold.notes)
    refused = [n for n in fold.notes if n.startswith("refused")]
    assert len(refused) == 1 and "relu" in refused[0] and "not a conv output" in refused[0]
    assert m.artifacts[0].parity.diffs[0].max_abs < 1e-4
    assert m.calibration["eval_real"] is False


def test_passes_are_idempotent():
    from edgeconv import registrations
    from edgeconv.context import Context
    from edgeconv.graph import capture
    from edgeconv.registry import PASSES

    registrations.load()
    spec = load_model(None)
    ctx = Context(options=ExportOptions(), model=spec)
    g = capture(spec.module, spec.example_inputs)
    for name in ("fold-conv-bn", "cleanup"):
        first = PASSES.get(name)(g, ctx)
        second = PASSES.get(name)(first.graph, ctx)
        assert second.changed is False, name
        g = first.graph
    import torch

    x = torch.randn(1, 3, 32, 32)
    np.testing.assert_allclose(g.module()(x).detach(), spec.module(x).detach(), atol=1e-4)


def test_float_output_program_is_judged_against_the_simulation(tmp_path):
    """A quantized program whose output is float (no output scale) still gets a real check against
    its simulation — an 8-bit grid over the output range plus a cosine floor — never a free pass."""
    from edgeconv.config import CalibSpec
    from zoo import float_tail

    m = export(float_tail(), ExportOptions(targets=("tflite-int8", "onnx-int8"), out_dir=str(tmp_path),
                                           calib=CalibSpec(source="random"), quant=QuantOptions(samples=32),
                                           eval_samples=32))
    for a in m.artifacts:
        sim = next(d for d in a.parity.diffs if d.reference == "torch-quant-sim")
        assert sim.step_unit == "range/255" and sim.max_steps is not None and sim.max_steps <= 3.0, a.target
        assert any("cosine" in c for c in sim.checked) and sim.cosine > 0.999
        assert a.parity.passed, (a.target, a.parity.diffs)


def test_manifest_records_the_host_and_the_engine_of_each_check(demo_run):
    out, m = demo_run
    assert m.host.get("machine") and m.host.get("isa_source")
    engines = {a.target: a.parity.runtime for a in m.artifacts}
    assert "reference kernels" in engines["onnx-int8"] and engines["tflite-int8"].startswith("ai-edge-litert")
    saved = json.loads((out / "edgeconv.json").read_text())
    assert saved["host"] == m.host


def test_onnx_takes_attention_on_5d_blocks(tmp_path):
    """torch.onnx translates scaled_dot_product_attention on 4-D only; block attention on 5-D (timm
    NesT, Hiera) failed the fp32 ONNX target. Written as MatMul/Softmax (what torch.onnx writes for
    4-D too): parity at float rounding, and the attention's Softmax is in the file."""
    import json

    import onnx
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "zoo:block_attention", "--calib", "random", "-t", "onnx",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (art,) = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert art["parity"]["passed"]
    model = onnx.load(str(tmp_path / art["path"]))
    assert any(n.op_type == "Softmax" for n in model.graph.node)
