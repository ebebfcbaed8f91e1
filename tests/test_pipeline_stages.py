"""The export flow's wiring of the structural and training-time stages: prepare (the blocks' own
reparameterization methods), the reparam-merge graph pass, and QAT in place of calibration."""
from __future__ import annotations

import torch
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.config import CalibSpec, ExportOptions
from edgeconv.models import ModelSpec, load_model
from edgeconv.pipeline import export


def _repnet(strip: bool) -> ModelSpec:
    from zoo_reparam import RepNet, randomize_bn, strip_methods

    torch.manual_seed(0)
    net = randomize_bn(RepNet()).eval()
    if strip:
        strip_methods(net)
    return ModelSpec(module=net, example_inputs=(torch.randn(1, 3, 32, 32),), name="repnet")


def repnet() -> ModelSpec:
    return _repnet(False)


def repnet_bare() -> ModelSpec:
    return _repnet(True)


def _stage(m, name):
    return next(s for s in m.stages if s.stage == name)


def test_prepare_calls_the_blocks_own_methods(tmp_path):
    m = export(load_model("test_pipeline_stages:repnet"),
               ExportOptions(targets=("onnx",), out_dir=str(tmp_path), calib=CalibSpec(source="random")))
    prep = _stage(m, "prepare")
    assert prep.changed and sum("RepVGGBlock" in n or "reparameterize" in n or "fuse" in n or ":" in n for n in prep.notes) >= 7
    assert _stage(m, "reparam-merge").changed is False  # nothing left for the graph pass
    assert m.artifacts[0].parity.passed and m.artifacts[0].parity.diffs[0].max_abs < 1e-4


def test_graph_pass_merges_when_the_methods_are_gone(tmp_path):
    m = export(load_model("test_pipeline_stages:repnet_bare"),
               ExportOptions(targets=("tflite",), out_dir=str(tmp_path), calib=CalibSpec(source="random")))
    assert _stage(m, "prepare").changed is False
    assert _stage(m, "reparam-merge").changed is True
    a = m.artifacts[0]
    # one conv per block left: 7 blocks + the linear head
    assert len([w for w in a.weights if w.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]) == 7
    assert a.parity.passed and a.parity.diffs[0].max_abs < 1e-4


def test_qat_through_the_cli(tmp_path):
    res = CliRunner().invoke(main, ["export", "-t", "tflite-int8", "--qat-epochs", "1", "--eval-samples", "64",
                                    "-o", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    from edgeconv.results import Manifest

    m = Manifest.from_dict(__import__("json").loads(res.output))
    q = _stage(m, "quantize")
    assert q.notes[0].startswith("QAT instead of calibration")
    assert any("at lr 0.001" in n for n in q.notes)  # --qat-lr's default
    a = m.artifacts[0]
    # 64 held-out digits: one sample is 1.6 points; QAT may miss two more than fp32, not three
    assert a.parity.passed and a.parity.accuracy >= m.reference_accuracy - 2.5 / 64
    assert "weight scale vectors equal edgeconv's" in a.scales_from


def test_qat_without_int8_target_or_data_is_refused(tmp_path):
    for flags in (["--qat-epochs", "1"], ["--max-drop", "0.01"], ["--analyze"]):
        r = CliRunner().invoke(main, ["export", "-t", "onnx", *flags, "-o", str(tmp_path)])
        assert r.exit_code == 2 and flags[0] in r.output and "no int8 target" in r.output
        assert list(tmp_path.iterdir()) == []
    r = CliRunner().invoke(main, ["export", "--model", "zoo:conv_relu_bn", "-t", "onnx-int8", "--calib", "random",
                                  "--qat-epochs", "1", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "--train-data" in r.output and "bundles none" in r.output


def test_export_max_drop_keeps_the_planted_layer_float_in_every_format(tmp_path):
    """A layer with one channel scaled ×1000 collapses per-layer int8; --max-drop keeps it float,
    every int8 exporter honours that, and held-out accuracy comes back."""
    import json

    args = ["export", "--model", "zoo_planted:planted_spec", "-t", "tflite-int8", "-t", "onnx-int8",
            "--per-layer", "--calib-samples", "64", "--eval-samples", "128", "--max-drop", "0.03",
            "--analyze", "-o", str(tmp_path), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    q = next(s for s in m["stages"] if s["stage"] == "quantize")
    assert any("kept in float: c2" in n for n in q["notes"]), q["notes"]
    for a in m["artifacts"]:
        assert a["float_layers"] and a["parity"]["passed"]
        assert a["parity"]["accuracy"] >= m["reference_accuracy"] - 0.05
        # the float layer's weight is stored float in the file, the others int8
        dtypes = sorted(w["dtype"] for w in a["weights"])
        assert "float32" in dtypes and "int8" in dtypes, dtypes
    # --analyze ranks the program as exported: with c2 float, c2 no longer dominates
    ranking = json.loads((tmp_path / "analyze.json").read_text())["layers"]
    assert ranking and ranking[0]["module"] != "c2"


def test_export_max_drop_with_qat_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["export", "--qat-epochs", "1", "--max-drop", "0.01", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "--max-drop" in r.output and "--qat-epochs" in r.output
