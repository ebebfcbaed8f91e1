"""Float artifacts of nets that amplify rounding: the fp32 floors follow fp32's own distance from exact.

A float artifact computes every op in fp32 in its own order. On a net that amplifies rounding (a
chaotic map here; random-init HaloNet-H1 at 256² and EfficientViT-M0 in the timm catalog), torch
fp32 itself is far from the exact answer, and a faithful artifact lands about as far from torch fp32.
The verdict measures that distance (torch fp32 against the same program in fp64) only when the
default floors fail, and lowers them to twice it; a net whose output is all rounding stays a failure.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.parity import FLOAT_TOLERANCE

FLOAT = ("onnx", "tflite")


def _export(model: str, out) -> tuple[int, str, dict]:
    from examples.zoo.images import write_folder

    calib = write_folder(out.parent / "photos", 40, side=32)  # the first 8 calibrate, 32 are held out
    res = CliRunner().invoke(main, ["export", "--model", f"tests.zoo:{model}", *[a for t in FLOAT for a in ("-t", t)],
                                    "--calib", str(calib), "--calib-samples", "8", "--eval-samples", "32",
                                    "-o", str(out)])
    manifest = json.loads((out / "edgeconv.json").read_text())
    return res.exit_code, res.output, {a["target"]: a for a in manifest["artifacts"]}


@pytest.fixture(scope="module")
def chaotic(tmp_path_factory):
    out = tmp_path_factory.mktemp("chaotic") / "out"
    return (out, *_export("chaotic_map", out))


def test_a_calm_net_keeps_the_default_floors(tmp_path):
    code, text, arts = _export("calm_map", tmp_path / "out")
    assert code == 0, text
    for t, a in arts.items():
        fp32 = a["parity"]["diffs"][0]
        assert fp32["max_rel"] < FLOAT_TOLERANCE.vs_fp32_max_rel and not fp32.get("warning"), (t, fp32)
        assert f"max |Δ|/range <= {FLOAT_TOLERANCE.vs_fp32_max_rel:g}" in fp32["checked"], fp32["checked"]


def test_a_chaotic_net_is_judged_at_fp32s_own_rounding(chaotic):
    """Both artifacts are past the default 1e-4 of the range from torch fp32 (so the old verdict
    failed them) and within twice fp32's own distance from fp64, which the verdict names."""
    _, code, text, arts = chaotic
    assert code == 0, text
    for t, a in arts.items():
        fp32 = a["parity"]["diffs"][0]
        assert a["parity"]["passed"] and fp32["max_rel"] > FLOAT_TOLERANCE.vs_fp32_max_rel, (t, fp32)
        assert "amplifies fp32 rounding" in fp32["warning"], fp32
        own = float(fp32["warning"].split("torch fp32 is ")[1].split()[0])
        limit = next(c for c in fp32["checked"] if c.startswith("max |Δ|/range <="))
        assert float(limit.split("<= ")[1]) == pytest.approx(2 * own, rel=0.01), (limit, own)
        assert FLOAT_TOLERANCE.vs_fp32_max_rel < 2 * own < 0.05 and fp32["max_rel"] <= 2 * own


def test_a_defect_on_a_chaotic_net_still_fails(chaotic, tmp_path):
    """The head's weights scaled by 1.05 in the ONNX file: far past fp32's own rounding, caught."""
    import onnx
    from onnx import numpy_helper

    folder = tmp_path / "edited"
    shutil.copytree(chaotic[0], folder)
    path = next(folder.glob("*.onnx"))
    model = onnx.load(str(path))
    head = max((i for i in model.graph.initializer if len(i.dims) == 2), key=lambda i: i.dims[0] * i.dims[1])
    head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head) * np.float32(1.05), head.name))
    onnx.save(model, str(path))
    res = CliRunner().invoke(main, ["check", str(path), "--json"])
    assert res.exit_code == 1, res.output
    report = json.JSONDecoder().raw_decode(res.output[res.output.index("{"):])[0]
    fp32 = report["checked"][0]["parity"]["diffs"][0]
    assert not fp32["passed"] and "max |Δ|" in fp32["reason"], fp32


def test_a_net_whose_output_is_all_rounding_stays_a_failure(tmp_path):
    code, text, arts = _export("wild_map", tmp_path / "out")
    assert code == 1, text
    for t, a in arts.items():
        fp32 = a["parity"]["diffs"][0]
        assert not a["parity"]["passed"] and "dominated by fp32 rounding" in fp32["warning"], (t, fp32)
