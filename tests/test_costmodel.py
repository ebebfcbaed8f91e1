"""The roofline cost model: op counting, the fit's held-out error, parsing real artifacts, predict().

Published measurements come from qai-hub-models 0.65.0 perf.yaml, extracted into
devices/costmodel/published.json by bench/fit_costmodel.py (so these tests need no extra package).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgeconv.devices.costmodel import fit as F
from edgeconv.costops import OpClass
from edgeconv.devices.costmodel.ops import totals
from edgeconv.devices.costmodel.roofline import Constants, model_seconds
from edgeconv.devices.costmodel.zoo import ZOO
from edgeconv.devices.predict import FITTED, constants_for, predict
from edgeconv.errors import UserError
from edgeconv.results import LatencyReport

COSTMODEL = Path(FITTED).parent


def _published() -> list[F.Measurement]:
    data = json.loads((COSTMODEL / "published.json").read_text())
    return [F.Measurement(**m) for m in data["measurements"]]


# --- counting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, gmacs, mparams", [
    # torchvision's published figures (GFLOPS there are multiply-accumulates; params without BN)
    ("mobilenet_v2", 0.301, 3.47), ("resnet50", 4.09, 25.50), ("resnet18", 1.81, 11.68),
    ("efficientnet_b0", 0.386, 5.25), ("regnet", 3.18, 15.24), ("convnext_tiny", 4.46, 28.56),
    ("densenet121", 2.83, 7.95), ("mobilenet_v3_large", 0.217, 5.45), ("googlenet", 1.50, 6.60),
])
def test_zoo_counts_match_published_macs_and_parameters(name, gmacs, mparams):
    t = totals(ZOO[name]())
    assert t["macs"] / 1e9 == pytest.approx(gmacs, rel=0.02)
    assert t["weights"] / 1e6 == pytest.approx(mparams, rel=0.02)


def test_op_classes_of_mobilenet_v2():
    ops = ZOO["mobilenet_v2"]()
    counts = {c: sum(o.cls is c for o in ops) for c in OpClass}
    # 17 inverted residual blocks: 17 depthwise, 16 expansions + 17 projections + the 1280 head = 34 1×1
    assert counts[OpClass.DEPTHWISE] == 17
    assert counts[OpClass.CONV1X1] == 34
    assert counts[OpClass.CONV] == 1 and counts[OpClass.FC] == 1
    assert counts[OpClass.ELEMENTWISE] == 10  # residual adds


# --- the fit -----------------------------------------------------------------------------------

def test_held_out_error_recomputed_from_the_shipped_constants():
    fitted = json.loads(FITTED.read_text())
    held_out = set(fitted["held_out_models"])
    assert len(held_out) >= 6 and not held_out & set(fitted["fit_models"])
    graphs = {m: ZOO[m]() for m in ZOO}
    errors, by_group = [], {}
    for m in _published():
        e = fitted["entries"].get(f"{m.device}|{m.unit}|{m.precision}")
        if e is None or m.model not in held_out:
            continue
        assert m.model not in e["fit_models"]
        pred = 1e3 * model_seconds(graphs[m.model], Constants.from_dict(e["constants"]))
        errors.append(F.ape(pred, m.ms))
        by_group.setdefault(m.precision, []).append(errors[-1])
    s = F.summarize(errors)
    assert s["n"] >= 100
    # measured 13.9 % median / 55 % p90 (bench/results/costmodel_fit.json); the issue asks ≤ 25 %
    assert s["median_ape"] <= 20.0
    assert s["p90_ape"] <= 70.0
    assert np.median(by_group["fp16"]) <= 15.0  # float on the NPU: 11.7 % measured
    assert s == pytest.approx(fitted["held_out_overall"], rel=1e-3)  # the script rounds to 0.1 µs


def test_fit_recovers_published_latencies_on_a_few_devices():
    """Refit a small group from scratch: the fit set is reproduced, held-out models are predicted."""
    held = set(json.loads(FITTED.read_text())["held_out_models"])
    devices = {"Samsung Galaxy S24", "Samsung Galaxy S25", "Snapdragon XR2 Gen 2"}
    meas = [m for m in _published() if m.device in devices and m.unit == "NPU" and m.precision == "fp16"]
    graphs = {m: ZOO[m]() for m in ZOO}
    consts = F.fit_group([m for m in meas if m.model not in held], graphs)
    assert set(consts) == devices
    err = {"fit": [], "held": []}
    for m in meas:
        pred = 1e3 * model_seconds(graphs[m.model], consts[m.device])
        err["held" if m.model in held else "fit"].append(F.ape(pred, m.ms))
    assert np.median(err["fit"]) < 10.0
    assert np.median(err["held"]) < 25.0


# --- artifacts ---------------------------------------------------------------------------------

def _tiny():
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 3, 2, 1)
            self.dw = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16)
            self.pw = torch.nn.Conv2d(16, 24, 1)
            self.fc = torch.nn.Linear(24, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = self.pw(torch.nn.functional.relu6(self.dw(x)))
            return self.fc(torch.nn.functional.hardswish(x).mean((2, 3)))

    return Tiny().eval(), (torch.randn(1, 3, 32, 32),)


# stem 16·16·16 outputs × 27, depthwise 16·16·16 × 9, pointwise 16·16·24 × 16, fc 24 × 10
TINY_MACS = 4096 * 27 + 4096 * 9 + 6144 * 16 + 240


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    model, args = _tiny()
    d = tmp_path_factory.mktemp("costmodel")
    torch.onnx.export(model, args, str(d / "tiny.onnx"), dynamo=True)
    import litert_torch

    litert_torch.convert(model, args).export(str(d / "tiny.tflite"))
    return d


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_predict_on_real_artifact_gives_per_op_breakdown_summing_to_total(artifacts, suffix):
    path = artifacts / f"tiny{suffix}"
    r = predict(path, "galaxy-s24")
    assert r.method == "predicted" and r.device == "galaxy-s24"
    assert r.artifact_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert r.basis.startswith("calibrated on Samsung Galaxy S24 (15 models")
    assert "held-out median APE" in r.basis
    assert sum(p["ms"] for p in r.per_op) == pytest.approx(r.p50_ms, rel=1e-9)
    assert r.p90_ms is None and json.loads(r.to_json())["p90_ms"] is None  # one number: no invented spread
    classes = [p["class"] for p in r.per_op]
    assert classes.count("depthwise") == 1 and classes.count("conv1x1") == 1 and classes.count("fc") == 1
    assert int(r.environment["macs"]) == TINY_MACS
    assert r.environment["stored_precision"] == "fp32"
    assert LatencyReport.from_dict(json.loads(r.to_json())) == r


def test_onnx_and_tflite_parse_to_the_same_work(artifacts):
    from edgeconv.devices.costmodel.parse import load_ops

    onnx_ops, _ = load_ops(artifacts / "tiny.onnx")
    tfl_ops, _ = load_ops(artifacts / "tiny.tflite")
    for cls in (OpClass.CONV, OpClass.DEPTHWISE, OpClass.CONV1X1, OpClass.FC):
        a = [(o.macs, o.weights) for o in onnx_ops if o.cls is cls]
        b = [(o.macs, o.weights) for o in tfl_ops if o.cls is cls]
        assert a == b, cls


def test_uncalibrated_device_says_so_and_scales_with_precision(artifacts):
    fp32 = predict(artifacts / "tiny.tflite", "pixel")
    int8 = predict(artifacts / "tiny.tflite", "pixel", precision="int8")
    assert fp32.device == "pixel-7"
    assert fp32.basis.startswith("uncalibrated: from published peak rates")
    assert "Tensor G2" in fp32.basis
    assert int8.p50_ms < fp32.p50_ms  # 4x the MAC rate and a quarter of the bytes


def test_larger_model_predicts_slower_on_every_calibrated_device():
    small, big = ZOO["mobilenet_v2"](), ZOO["resnet101"]()
    for dev in ("galaxy-s24", "samsung-galaxy-s22-5g", "dragonwing-q-8750"):
        assert predict(big, dev, "int8").p50_ms > 1.5 * predict(small, dev, "int8").p50_ms


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"unknown device 'nokia-3310' for prediction; choose one of: .*galaxy-s24"):
        constants_for("nokia-3310", "fp32")
    with pytest.raises(UserError, match="host has no cost-model constants"):
        constants_for("host", "fp32")
    with pytest.raises(UserError, match="precision 'int4'"):
        constants_for("galaxy-s24", "int4")
    with pytest.raises(UserError, match="does not exist"):
        predict(tmp_path / "missing.tflite", "galaxy-s24")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a readable .onnx model"):
        predict(bad, "galaxy-s24")
    pt = tmp_path / "weights.pt"
    pt.write_bytes(b"x")
    with pytest.raises(UserError, match=r"weights.pt is not an artifact edgeconv reads \(known: .*\.onnx, \.tflite\)"):
        predict(pt, "galaxy-s24")


def test_qdq_int8_onnx_parses_to_the_same_ops_as_float(artifacts, tmp_path):
    """onnxruntime's own static quantizer (QDQ, per-channel): Q/DQ glue is not counted as ops."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from edgeconv.devices.costmodel.parse import load_ops

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"x": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    import onnx

    name = onnx.load(str(artifacts / "tiny.onnx")).graph.input[0].name
    assert name == "x"
    q = tmp_path / "tiny-int8.onnx"
    quantize_static(str(artifacts / "tiny.onnx"), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    f_ops, f_prec = load_ops(artifacts / "tiny.onnx")
    q_ops, q_prec = load_ops(q)
    assert (f_prec, q_prec) == ("fp32", "int8")
    key = [(o.cls, o.macs, o.weights) for o in f_ops if o.cls is not OpClass.MOVE]
    assert [(o.cls, o.macs, o.weights) for o in q_ops if o.cls is not OpClass.MOVE] == key
    r = predict(q, "galaxy-s24")
    assert "NPU int8" in r.basis and r.environment["precision"] == "int8"


def test_real_mobilenet_v2_export_parses_to_the_zoo_description():
    """The ops the cost model reads from a user's artifact are the ops it was fitted on."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from edgeconv.devices.costmodel.parse import load_ops
    from examples.mobilenet_v2 import MobileNetV2

    torch.manual_seed(0)
    model = MobileNetV2().eval()

    def fold(module):  # the deploy fold edgeconv's fold-conv-bn pass does before export
        for child in module.children():
            if isinstance(child, torch.nn.Sequential) and len(child) >= 2 and \
                    isinstance(child[0], torch.nn.Conv2d) and isinstance(child[1], torch.nn.BatchNorm2d):
                child[0] = fuse_conv_bn_eval(child[0], child[1])
                child[1] = torch.nn.Identity()
            else:
                fold(child)

    fold(model)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mobilenet_v2.onnx"
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=True)
        ops, _ = load_ops(path)
        report = predict(path, "galaxy-s24", precision="fp16")
    zoo = ZOO["mobilenet_v2"]()
    count = lambda xs: sorted((c.value, sum(o.cls is c for o in xs)) for c in OpClass)  # noqa: E731
    assert count(ops) == count(zoo)
    assert totals(ops)["macs"] == totals(zoo)["macs"] == 300_774_272
    published = [m.ms for m in _published() if m.model == "mobilenet_v2" and m.device == "Samsung Galaxy S24"
                 and m.precision == "fp16"]
    assert published == [0.601]
    # a fitted model, so this checks the parse path end to end, not held-out accuracy
    assert report.p50_ms == pytest.approx(published[0], rel=0.15)


def test_delegate_picks_the_compute_unit_and_its_basis():
    ops = ZOO["mobilenet_v2"]()
    npu = predict(ops, "galaxy-s24", "int8")
    assert predict(ops, "galaxy-s24", "int8", delegate="qnn").p50_ms == npu.p50_ms
    cpu = predict(ops, "galaxy-s24", "int8", delegate="xnnpack")
    assert cpu.basis.startswith("uncalibrated: from published peak rates (big CPU cluster 434 GOP/s int8")
    assert cpu.p50_ms > 3 * npu.p50_ms  # the NPU is the faster unit by far, as published
    with pytest.raises(UserError, match="pixel-7 has neither calibrated nor published NPU rates"):
        predict(ops, "pixel", "int8", delegate="nnapi")
    with pytest.raises(UserError, match="iphone-15-pro has no published CPU peak rates"):
        predict(ops, "iphone", "fp16", delegate="cpu")
    with pytest.raises(UserError, match="no compute unit for delegate 'cuda'"):
        predict(ops, "galaxy-s24", delegate="cuda")
