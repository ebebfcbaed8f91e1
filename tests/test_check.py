"""`edgeconv check`: the export verdict on files that exist — real exports of the demo, real runtimes,
files edited by hand (the verdict must catch them and name the layer)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv.cli import main

INT8 = ("onnx-int8", "tflite-int8", "coreml-w8a8")


def run(*args: str):
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "out"
    code, text = run("export", *[a for t in INT8 + ("onnx", "tflite") for a in ("-t", t)], "--eval-samples", "64",
                     "-o", str(out), "--json")
    assert code == 0, text
    return out


def _report(text: str) -> dict:
    """The JSON report (a failed check adds its one-line error after it)."""
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def test_check_an_export_folder_passes_and_reads_back_the_scales(exported):
    code, text = run("check", str(exported), "--json")
    assert code == 0, text
    report = _report(text)
    assert {c["target"] for c in report["checked"]} == set(INT8) | {"onnx", "tflite"}
    for c in report["checked"]:
        assert c["parity"]["diffs"] and all(d["passed"] for d in c["parity"]["diffs"])
        assert c["sha256"] == c["manifest_sha256"]  # untouched files: the same bytes as exported
        if c["target"] in INT8:
            lay = c["parity"]["layers"]
            assert lay["passed"] and lay["layers"] >= 10 and lay["worst_steps"] <= 1.0
            assert c["scales_match"] is True and c["simulation"] == "edgeconv's calibration"


def _flip_fc_weights(src, dst) -> None:
    """The classifier's int8 weights negated in a copy of a TFLite file: same shapes, other function."""
    from edgeconv.exporters.tflite.flatbuffer import builtin, op_names, read_tflite
    from edgeconv.exporters.tflite.sparse import pack

    model = read_tflite(src)
    names = op_names()
    sg = model.subgraphs[0]
    fc = next(op for op in sg.operators if builtin(model, op, names) == "FULLY_CONNECTED")
    t = sg.tensors[fc.inputs[1]]
    buf = model.buffers[t.buffer]
    w = np.frombuffer(bytes(buf.data), dtype=np.int8)
    buf.data = np.clip(-w.astype(np.int16), -127, 127).astype(np.int8).view(np.uint8)
    dst.write_bytes(pack(model))


def test_check_catches_an_edited_file_and_names_the_layer(exported, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(exported, folder)
    path = folder / next(p.name for p in exported.glob("*-tflite-int8.tflite"))
    _flip_fc_weights(exported / path.name, path)
    code, text = run("check", str(path), "--json")
    assert code == 1, text
    c = _report(text)["checked"][0]
    assert c["sha256"] != c["manifest_sha256"]  # re-verified, the change reported — not rejected for its hash
    lay = c["parity"]["layers"]
    assert not lay["passed"] and lay["worst_layer"] == "fc" and any(o.startswith("fc:") for o in lay["over"])
    code, text = run("check", str(path))
    assert code == 1 and "CHANGED since export" in text and "FAIL tflite-int8" in text


def test_check_a_lone_file_needs_its_model(exported, tmp_path):
    lone = tmp_path / "lone.onnx"
    shutil.copy(next(exported.glob("*-onnx-int8.onnx")), lone)
    code, text = run("check", str(lone))
    assert code == 2 and "give the model it came from with --model" in text and "Traceback" not in text
    code, text = run("check", str(lone), "--model", "edgeconv.demo:demo", "--eval-samples", "64", "--json")
    assert code == 0, text
    c = _report(text)["checked"][0]
    assert c["target"] == "onnx-int8" and c["manifest_sha256"] is None and c["scales_match"] is True


def _aiq_int8(fp32, dst) -> None:
    """ai-edge-quantizer's static int8 (weights and activations) of litert-torch's fp32 file,
    calibrated on 32 held-out digits: a file edgeconv did not write, at scales it did not choose."""
    aiq = pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed: pip install ai-edge-quantizer")
    from ai_edge_litert.interpreter import Interpreter

    from edgeconv.demo import heldout

    x = heldout().x[:32]
    sig = next(iter(Interpreter(model_path=str(fp32)).get_signature_runner().get_input_details()))
    q = aiq.quantizer.Quantizer(str(fp32))
    q.load_quantization_recipe(aiq.recipe.static_wi8_ai8())
    calib = q.calibrate({"serving_default": [{sig: x[i:i + 1]} for i in range(len(x))]}, num_threads=1)
    q.quantize(calib, enable_progress_report=False).export_model(str(dst), overwrite=True)


def test_check_a_file_quantized_elsewhere_uses_its_own_scales(exported, tmp_path):
    from test_mutants import M

    fp32 = next(exported.glob("*-tflite.tflite"))
    aiq = tmp_path / "aiq-int8.tflite"
    _aiq_int8(fp32, aiq)
    code, text = run("check", str(aiq), "--model", "edgeconv.demo:demo", "--eval-samples", "64", "--json")
    assert code == 0, text
    c = _report(text)["checked"][0]
    assert c["target"] == "tflite-int8" and c["scales_match"] is False
    assert c["simulation"].startswith("simulation from the file's own scales")
    lay = c["parity"]["layers"]
    assert lay["passed"] and lay["layers"] >= 10 and lay["unmatched"] == 0 and lay["worst_steps"] <= 1.0
    mutants = {}
    for name in ("zeroed output channel", "channel permutation"):
        ed = M.TfliteFile(aiq)
        M.check_layout(ed, M.torch_shapes())
        defect = next(d for d in M.defects() if d.name == name)
        defect.apply(ed, M.Context_())
        mutants[name] = (defect, tmp_path / f"aiq-{name.replace(' ', '-')}.tflite")
        ed.save(mutants[name][1])
    # one output channel of a 1x1 conv zeroed: failed, at that layer
    zeroed, path = mutants["zeroed output channel"]
    code, text = run("check", str(path), "--model", "edgeconv.demo:demo", "--eval-samples", "64", "--json")
    assert code == 1, text
    lay = _report(text)["checked"][0]["parity"]["layers"]
    assert not lay["passed"] and lay["worst_layer"] == zeroed.layer and lay["over"][0].startswith(zeroed.layer)
    # a consistent channel permutation (weights, per-channel scales, biases, the next layer's inputs):
    # the same function, so it passes — its per-channel scales are edgeconv's in another order
    code, text = run("check", str(mutants["channel permutation"][1]), "--model", "edgeconv.demo:demo",
                     "--eval-samples", "64", "--json")
    assert code == 0, text


@pytest.mark.parametrize("args, words", [
    (("check", "/nonexistent/out"), "does not exist"),
    (("check", "/nonexistent/m.tflite"), "does not exist"),
])
def test_check_bad_input_is_one_line(args, words):
    code, text = run(*args)
    assert code == 2 and words in text and len(text.strip().splitlines()) == 1
