"""Outputs judged by what they mean (edgeconv.outputs), and several outputs keeping their names
and order in every format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeconv import outputs as k
from edgeconv.cli import main
from edgeconv.models import ModelSpec


def test_class_map_agreement_and_miou():
    ref = np.zeros((1, 3, 2, 4), np.float32)
    ref[0, 0, :, :2] = 1  # class 0 on the left half, class 1 on the right
    ref[0, 1, :, 2:] = 1
    out = ref.copy()
    out[0, 1, 0, 1] = 2  # one pixel of class 0 read as class 1
    m = k.class_map(out, ref)
    assert m["pixel_agreement"] == pytest.approx(7 / 8)
    assert m["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)  # class 2 absent in both: not averaged


def test_psnr_follows_the_error():
    ref = np.linspace(0, 1, 300, dtype=np.float32).reshape(1, 3, 10, 10)
    assert k.psnr(ref + 0.01, ref)["psnr_db"] == pytest.approx(40.0, abs=1e-3)  # range 1, rmse 0.01
    assert k.psnr(ref, ref)["psnr_db"] == k.PSNR_CAP_DB  # JSON holds no inf


def test_box_iou_is_the_anchor_free_iou_of_decoded_deltas():
    """(dx, dy, log w, log h) per anchor: a box shifted by a quarter of its width overlaps 0.6."""
    ref = np.zeros((1, 2 * 4, 1, 1), np.float32)  # two anchors, unit boxes
    out = ref.copy()
    out[0, 0] = 0.25  # anchor 0: dx = 0.25 → IoU 0.75 / 1.25
    m = k.boxes(out, ref)
    assert m["box_iou_mean"] == pytest.approx((0.6 + 1.0) / 2)


def test_scores_topk_overlap():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 400)).astype(np.float32)
    assert k.scores(ref, ref)["topk_overlap"] == 1.0
    assert k.scores(-ref, ref)["topk_overlap"] == 0.0


def test_kinds_are_inferred_and_said_so():
    assert k.infer(np.zeros((4, 10)))[0] is k.OutputKind.LOGITS
    assert k.infer(np.zeros((4, 21, 8, 8)))[0] is k.OutputKind.CLASS_MAP
    assert k.infer(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))[0] is k.OutputKind.IMAGE
    kind, why = k.infer(np.random.default_rng(0).random((2, 1, 8, 8)))
    assert kind is k.OutputKind.MASK and why.startswith("inferred")


def test_int8_floor_follows_the_simulation():
    metric, floor, how = k.floor(k.OutputKind.IMAGE, "int8", {"psnr_db": 35.0})
    assert metric == "psnr_db" and floor == pytest.approx(35.0 - k.INT8_SLACK["psnr_db"]) and "simulation" in how
    assert k.floor(k.OutputKind.CLASS_MAP, "float", None)[1] == k.FLOORS["float"]["miou"]


def test_a_failing_output_fails_the_report():
    from edgeconv.parity import FLOAT_TOLERANCE, by_kind

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    out = np.roll(ref, 1, axis=1)  # every pixel's class changes
    _, checks = by_kind([out], [ref], None, ["seg"], (), "float", FLOAT_TOLERANCE)
    assert checks[0].kind == "class-map" and not checks[0].passed and "miou" in checks[0].reason


class SegAndImage(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.seg = torch.nn.Conv2d(8, 5, 1)
        self.img = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.seg(h), self.img(h) + x


def two_outputs() -> ModelSpec:
    torch.manual_seed(0)
    return ModelSpec(SegAndImage().eval(), (torch.zeros(1, 3, 16, 16),), name="two-outputs",
                     outputs=(("seg", "class-map"), ("restored", "image")))


TARGETS = ("onnx", "onnx-int8", "tflite", "tflite-int8", "coreml", "coreml-w8a8")


def test_two_outputs_keep_names_order_and_kinds_in_every_format(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "o"
    args = ["export", "--model", "test_output_kinds:two_outputs", "--calib", "random", "--calib-samples", "16",
            "--eval-samples", "6", "-o", str(out)]
    for t in TARGETS:
        args += ["-t", t]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    arts = json.loads((out / "edgeconv.json").read_text())["artifacts"]
    assert [a["target"] for a in arts] == list(TARGETS)
    for a in arts:
        # names and order as declared, in the file's own metadata (read by its runtime)
        assert [(o["name"], o["shape"][1]) for o in a["outputs"]] == [("seg", 5), ("restored", 3)], a["target"]
        checks = a["parity"]["outputs"]
        assert [(c["name"], c["kind"], c["kind_source"]) for c in checks] == [
            ("seg", "class-map", "declared"), ("restored", "image", "declared")]
        assert all(c["passed"] for c in checks), (a["target"], checks)
        # the second output is judged numerically too, under its name
        refs = [d["reference"] for d in a["parity"]["diffs"]]
        assert "torch-fp32:restored" in refs
        if a["target"].endswith(("int8", "w8a8")):
            assert "torch-quant-sim:restored" in refs
            assert checks[1]["vs_sim"]["psnr_db"] > checks[1]["vs_fp32"]["psnr_db"]
        else:  # float: the same map and image as torch
            assert checks[0]["vs_fp32"]["pixel_agreement"] == 1.0 and checks[1]["vs_fp32"]["psnr_db"] > 60
    assert "seg [class-map, declared]" in res.output


def test_declared_outputs_must_match_what_forward_returns(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    res = CliRunner().invoke(main, ["export", "--model", "test_output_kinds:wrong_count", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "declares 1 outputs (seg) but returns 2" in res.output, res.output


def wrong_count() -> ModelSpec:
    return ModelSpec(SegAndImage().eval(), (torch.zeros(1, 3, 16, 16),), outputs=(("seg", "class-map"),))


def test_sparse_tflite_targets_keep_declared_output_names(tmp_path, monkeypatch):
    """The sparse TFLite targets rewrite the dense file (padding, fp16, DENSIFY): the declared
    names must survive into the tensors and the signature, as in the dense TFLite targets."""
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "o"
    sparse = ("tflite-sparse", "tflite-sparse-fp16")
    args = ["export", "--model", "test_output_kinds:two_outputs", "--calib", "random", "--eval-samples", "4",
            "--max-drop", "1", "-o", str(out)]  # pruning a random net moves it: names are what is tested
    for t in sparse:
        args += ["-t", t]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    arts = json.loads((out / "edgeconv.json").read_text())["artifacts"]
    assert [a["target"] for a in arts] == list(sparse)
    for a in arts:
        assert [o["name"] for o in a["outputs"]] == ["seg", "restored"], a["target"]  # subgraph order
        runner = Interpreter(model_path=str(out / a["path"])).get_signature_runner()
        outs = runner(**{k: np.zeros(v["shape"], np.float32) for k, v in runner.get_input_details().items()})
        assert sorted(outs) == ["restored", "seg"], (a["target"], list(outs))  # the signature's keys
        assert outs["seg"].shape[1] == 5 and outs["restored"].shape[1] == 3, a["target"]
