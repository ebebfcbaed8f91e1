"""A net with several inputs: every input named as declared, in order, in every format; every
runner, the int8 simulation and per-layer isolation fed every input; data that cannot feed them
refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.errors import UserError
from edgeconv.inputs import resolve_names
from edgeconv.models import ModelSpec


class ImageAndGuide(torch.nn.Module):
    """An image gated by a one-channel guide map: the output depends on both inputs, so a runner
    that fed only the first (or swapped them: the shapes differ) cannot pass parity."""

    def __init__(self) -> None:
        super().__init__()
        self.img = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.guide = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, image, guide):
        return self.head(torch.relu(self.img(image)) * torch.sigmoid(self.guide(guide)))


# Declared names that are not forward's parameter names (and sort the other way round), so a file
# named by the converter's default or ordered alphabetically fails.
NAMES = ("rgb", "depth")


def two_inputs() -> ModelSpec:
    torch.manual_seed(0)
    return ModelSpec(ImageAndGuide().eval(), (torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)),
                     name="two-inputs", input_names=NAMES)


TARGETS = ("onnx", "onnx-int8", "tflite", "tflite-int8", "coreml", "coreml-w8a8")


def _export(tmp_path: Path, monkeypatch, calib: str, *targets: str, extra: tuple[str, ...] = ()):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    args = ["export", "--model", "test_multi_input:two_inputs", "--calib", calib, "--calib-samples", "16",
            "--eval-samples", "6", "-o", str(tmp_path / "o"), *extra]
    for t in targets:
        args += ["-t", t]
    return CliRunner().invoke(main, args)


def _names_in_file(path: Path) -> list[str]:
    """The input names as each file stores them, read with the format's own library."""
    if path.suffix == ".onnx":
        import onnx

        return [i.name for i in onnx.load(str(path)).graph.input]
    if path.suffix == ".tflite":
        from edgeconv.exporters.tflite.flatbuffer import read_tflite

        model = read_tflite(path)
        sg = model.subgraphs[0]
        tensors = [sg.tensors[int(t)].name.decode() for t in sg.inputs]
        signature = [i.name.decode() for i in model.signatureDefs[0].inputs]
        assert signature == tensors, (signature, tensors)  # the signature's keys too, in the same order
        return tensors
    import coremltools as ct

    return [i.name for i in ct.models.MLModel(str(path), skip_model_load=True).get_spec().description.input]


def test_two_inputs_through_all_six_targets(tmp_path, monkeypatch):
    res = _export(tmp_path, monkeypatch, "random", *TARGETS)
    assert res.exit_code == 0, res.output
    out = tmp_path / "o"
    manifest = json.loads((out / "edgeconv.json").read_text())
    # where the second input's data came from is said, for calibration and evaluation alike
    assert manifest["calibration"]["source"].endswith("for every input")
    assert manifest["calibration"]["eval_source"].endswith("for every input")
    arts = manifest["artifacts"]
    assert [a["target"] for a in arts] == list(TARGETS)
    for a in arts:
        t = a["target"]
        assert _names_in_file(out / a["path"]) == list(NAMES), t
        # as the runtime that checked parity read them: names, order and each input's own shape
        assert [(i["name"], i["shape"][1]) for i in a["inputs"]] == [("rgb", 3), ("depth", 1)], t
        parity = a["parity"]
        assert parity["passed"], (t, parity)
        names_check = [d for d in parity["diffs"] if d["reference"] == "input-names"]
        assert len(names_check) == 1 and names_check[0]["passed"], t
        fp32 = next(d for d in parity["diffs"] if d["reference"] == "torch-fp32")
        assert fp32["cosine"] > (0.999 if t.endswith(("int8", "w8a8")) else 0.99999), (t, fp32)
        if t.endswith(("int8", "w8a8")):
            sim = next(d for d in parity["diffs"] if d["reference"] == "torch-quant-sim")
            assert sim["max_steps"] <= 1, (t, sim)
            # per-layer isolation ran on both inputs' int8 tensors (the guide's conv included) and matched all
            layers = parity["layers"]
            assert layers["passed"] and layers["layers"] >= 6 and layers["unmatched"] == 0, (t, layers)


def test_every_input_from_a_named_npz(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    data = tmp_path / "calib.npz"
    np.savez(data, rgb=rng.random((24, 3, 16, 16), dtype=np.float32),
             depth=(rng.random((24, 1, 16, 16)) * 255).astype(np.uint8))  # pixels: scaled to [0, 1]
    res = _export(tmp_path, monkeypatch, str(data), "onnx-int8", "tflite-int8")
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "o" / "edgeconv.json").read_text())
    assert "inputs rgb, depth" in manifest["calibration"]["source"] and manifest["calibration"]["samples"] == 16
    assert all(a["parity"]["passed"] for a in manifest["artifacts"])
    # `edgeconv divergence` on the written file feeds both inputs to the file and to the simulation
    tfl = next(tmp_path / "o" / a["path"] for a in manifest["artifacts"] if a["target"] == "tflite-int8")
    res = CliRunner().invoke(main, ["divergence", str(tfl), "--model", "test_multi_input:two_inputs", "--calib",
                                    str(data), "--calib-samples", "16", "--samples", "4", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout[res.stdout.index("["):])[0]
    assert rep["samples"] == 4 and rep["matched"] >= 6 and not rep["unmatched"] and rep["first_divergent"] is None, rep


@pytest.mark.parametrize("kind, said", [
    ("folder", "feeds one input; the model takes 2 inputs (rgb, depth): pass a .npz with one array per input"),
    ("npy", "feeds one input; the model takes 2 inputs (rgb, depth)"),
    ("npz-missing", "has no array for input(s) depth (it holds rgb)"),
])
def test_data_that_cannot_feed_every_input_is_refused_in_one_line(tmp_path, monkeypatch, kind, said):
    from PIL import Image

    if kind == "folder":
        source = tmp_path / "images"
        source.mkdir()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(source / "a.png")
    elif kind == "npy":
        source = tmp_path / "x.npy"
        np.save(source, np.zeros((8, 3, 16, 16), np.float32))
    else:
        source = tmp_path / "x.npz"
        np.savez(source, rgb=np.zeros((8, 3, 16, 16), np.float32))
    res = _export(tmp_path, monkeypatch, str(source), "onnx-int8")
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert said in line and "numpy.savez(path, rgb=..., depth=...)" in line, res.output
    assert "Traceback" not in res.output


def test_tools_that_feed_one_input_refuse_a_multi_input_net(tmp_path, monkeypatch):
    res = _export(tmp_path, monkeypatch, "random", "onnx-int8", extra=("--analyze",))
    assert res.exit_code == 2 and "--analyze works on one-input nets; two-inputs takes 2 inputs (rgb, depth)" \
        in res.output, res.output
    res = CliRunner().invoke(main, ["analyze", "--model", "test_multi_input:two_inputs", "--calib", "random"])
    assert res.exit_code == 2 and "analyze works on one-input nets; two-inputs takes 2 inputs (rgb, depth)" \
        in res.output.strip().splitlines()[-1], res.output


def test_input_names_resolution():
    net = ImageAndGuide()
    assert resolve_names((), net, 2) == ("image", "guide")  # forward's parameter names
    assert resolve_names((), net, 1) == ()  # one undeclared input: the converter's own name
    assert resolve_names(("a", "b"), net, 2) == ("a", "b")
    with pytest.raises(UserError, match="declares 1 input name"):
        resolve_names(("a",), net, 2)
    with pytest.raises(UserError, match="'out'"):  # an input may not share an output's name
        resolve_names(("x", "out"), net, 2, ("out",))
    with pytest.raises(UserError, match="'a'"):
        resolve_names(("a", "a"), net, 2)


def test_random_and_bundled_sources_supply_every_input():
    from edgeconv.calib.data import DataSet
    from edgeconv.calib.sources import load_data
    from edgeconv.config import CalibSpec

    shapes = dict(input_shape=(1, 3, 16, 16), more_shapes=((1, 1, 16, 16),), names=NAMES)
    one = load_data(CalibSpec("random"), (1, 3, 16, 16), count=8)
    both = load_data(CalibSpec("random"), count=8, **shapes)
    # the first input is what a one-input net gets from the same seed; the second is drawn after it
    assert np.array_equal(both.x, one.x) and both.more[0].shape == (8, 1, 16, 16)
    assert not np.array_equal(both.more[0][:, 0], both.x[:, 0])
    assert both.take(2, 5).more[0].shape == (3, 1, 16, 16)
    image = np.zeros((4, 3, 16, 16), np.float32)
    bundled = load_data(CalibSpec("demo"), bundled=lambda: DataSet(image, None, "two arrays", more=(image[:, :1],)),
                        **shapes)
    assert [a.shape[1] for a in bundled.inputs] == [3, 1]
    with pytest.raises(UserError, match=r"takes 2 inputs but its bundled data \(one array\) gives 1"):
        load_data(CalibSpec("demo"), bundled=lambda: DataSet(image, None, "one array"), **shapes)
