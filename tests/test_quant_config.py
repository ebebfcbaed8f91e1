"""Quantization config as data: levels (global, op type, layer), the --max-drop choice saved in
edgeconv.json, and replayed with --quant-config to the same bytes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.config import QuantConfig
from edgeconv.errors import UserError

HERE = Path(__file__).parent


def test_most_specific_level_decides():
    c = QuantConfig.from_file({"global": "int8", "op_type": {"linear": None}, "layer": {"fc": "int8", "c2": None}}, "t")
    assert c.setting("c1", "conv2d", ("conv2d",)) == "int8"  # global
    assert c.setting("c2", "conv2d_1", ("conv2d",)) is None  # layer
    assert c.setting("head", "linear", ("linear",)) is None  # op type
    assert c.setting("fc", "linear_1", ("linear",)) == "int8"  # layer beats op type
    assert QuantConfig.from_file(c.to_file(), "t") == c
    assert QuantConfig.from_file({"global": None}, "t").setting("x", "y", ("conv2d",)) is None


@pytest.mark.parametrize("data, needle", [
    ({"global": "int4"}, "'int4'"),
    ({"layer": ["c2"]}, "layer must map"),
    ({"layers": {}}, "not an edgeconv quant config"),
    ([1, 2], "not an edgeconv quant config"),
])
def test_bad_config_is_one_clear_error(data, needle):
    with pytest.raises(UserError, match=needle):
        QuantConfig.from_file(data, "f.json")


def _export(tmp_path: Path, name: str, *extra: str) -> tuple[int, str, dict | None]:
    out = tmp_path / name
    res = CliRunner().invoke(main, ["export", "--model", "zoo_planted:planted_spec", "-t", "tflite-int8", "-t",
                                    "onnx-int8", "--calib-samples", "32", "--eval-samples", "64", "-o", str(out),
                                    *extra])
    m = out / "edgeconv.json"
    return res.exit_code, res.output, json.loads(m.read_text()) if m.is_file() else None


def test_max_drop_choice_replays_to_the_same_artifacts(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    rc, out, first = _export(tmp_path, "drop", "--max-drop", "0.02")
    assert rc == 0, out
    assert first["quant_config"] == {"global": "int8", "op_type": {}, "layer": {"c2": None}}
    rc, out, again = _export(tmp_path, "replay", "--quant-config", str(tmp_path / "drop" / "edgeconv.json"))
    assert rc == 0, out
    assert again["quant_config"] == first["quant_config"]
    assert [(a["target"], a["sha256"], a["float_layers"]) for a in again["artifacts"]] == \
        [(a["target"], a["sha256"], a["float_layers"]) for a in first["artifacts"]]
    assert any("--quant-config: kept in float: conv2d_1" in n for s in again["stages"] for n in s["notes"])


def test_config_for_another_model_and_conflicts_exit_2(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps({"layer": {"no.such.layer": None}}))
    rc, out, m = _export(tmp_path, "bad", "--quant-config", str(cfg))
    assert rc == 2 and "no.such.layer" in out and "Traceback" not in out and m is None
    rc, out, _ = _export(tmp_path, "both", "--quant-config", str(cfg), "--max-drop", "0.02")
    assert rc == 2 and "--quant-config" in out
    (tmp_path / "junk.json").write_text("{nope")
    rc, out, _ = _export(tmp_path, "junk", "--quant-config", str(tmp_path / "junk.json"))
    assert rc == 2 and "is not JSON" in out
