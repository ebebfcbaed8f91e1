"""No traceback from a valid model: a failure injected into each export stage (capture, a pass,
a converter, a runtime, the parity run …) comes out as one line naming the stage and the target,
exit 1, with the manifest written — the failed target recorded with that line, the others kept."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.errors import failure_line


def _export(tmp_path, *targets: str):
    out = tmp_path / "o"
    args = ["export", "--model", "zoo:conv_relu_bn", "--calib", "random", "--calib-samples", "4",
            "--eval-samples", "4", "-o", str(out)]
    for t in targets:
        args += ["-t", t]
    res = CliRunner().invoke(main, args)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    manifest = json.loads((out / "edgeconv.json").read_text()) if (out / "edgeconv.json").is_file() else None
    return res.exit_code, res.output, manifest, out


def _boom(*_a, **_k):
    raise RuntimeError("injected failure")


def _target(name: str):
    from edgeconv import registrations
    from edgeconv.registry import TARGETS

    registrations.load()
    return TARGETS.get(name)


def _pass(monkeypatch, name: str) -> None:
    from edgeconv import registrations
    from edgeconv.registry import PASSES

    registrations.load()
    monkeypatch.setitem(PASSES._items, name, _boom)


# (what to break, the stage the one line must name, the targets asked for: where only onnx breaks,
# tflite is asked for too and must come out exported)
STAGES = {
    "prepare": (lambda mp: mp.setattr("edgeconv.pipeline.prepare_eager", _boom), "prepare failed", ("onnx",)),
    "capture": (lambda mp: mp.setattr("edgeconv.graph.capture", _boom), "capture (torch.export) failed", ("onnx",)),
    "reference": (lambda mp: mp.setattr("edgeconv.pipeline.torch_outputs_all", _boom), "torch fp32 reference failed",
                  ("onnx",)),
    "pass": (lambda mp: _pass(mp, "fold-conv-bn"), "pass fold-conv-bn (onnx) failed", ("onnx",)),
    "convert": (lambda mp: mp.setattr(_target("onnx"), "export", _boom), "convert (onnx) failed", ("onnx", "tflite")),
    "runtime": (lambda mp: mp.setattr(_target("onnx"), "load", _boom), "load in runtime (onnx) failed", ("onnx", "tflite")),
    "parity run": (lambda mp: mp.setattr("edgeconv.exporters.onnx.runtime.OnnxRunner.run_all", _boom),
                   "parity: run in onnxruntime", ("onnx", "tflite")),
    "compare": (lambda mp: mp.setattr("edgeconv.parity.check", _boom), "parity: compare (onnx) failed", ("onnx",)),
    "delegates": (lambda mp: mp.setattr("edgeconv.devices.delegates.plans", _boom), "delegate tables (onnx) failed",
                  ("onnx",)),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_failure_in_each_stage_is_one_line_exit_1_and_a_manifest(stage, tmp_path, monkeypatch):
    breaker, words, targets = STAGES[stage]
    breaker(monkeypatch)
    code, out, manifest, out_dir = _export(tmp_path, *targets)
    assert code == 1, out
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("edgeconv: error:")]
    assert len(lines) == 1, out
    assert words in lines[0] and "injected failure" in lines[0], lines[0]
    assert manifest is not None, out
    arts = {a["target"]: a for a in manifest["artifacts"]}
    assert set(arts) == set(targets)
    onnx = arts["onnx"]
    assert onnx["path"] == "" and words in onnx["failure"] and onnx["parity"]["diffs"][0]["passed"] is False
    if "tflite" in arts:  # the target that did export is kept, with its file
        assert arts["tflite"]["failure"] == "" and arts["tflite"]["parity"]["diffs"][0]["passed"] is True
        assert (out_dir / arts["tflite"]["path"]).is_file()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".edgeconv-tmp")]  # no temp folder left


def test_failure_line_names_the_aten_op_of_a_captured_program():
    """A program run at a batch it was not captured for (a `view` of a permuted tensor with the
    batch of 1 baked in, the issue's case) fails naming that op, not a torch internals frame."""
    g = torch.fx.Graph()
    x = g.placeholder("x")
    p = g.call_function(torch.ops.aten.permute.default, (x, [1, 0, 2, 3]))  # channels first, batch second
    g.output(g.call_function(torch.ops.aten.view.default, (p, [3, -1])))  # contiguous only at batch 1
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    gm(torch.zeros(1, 3, 4, 4))  # the captured batch runs
    with pytest.raises(RuntimeError) as info:
        gm(torch.zeros(4, 3, 4, 4))
    line = failure_line(info.value)
    assert line.startswith("RuntimeError: view size is not compatible") and "[at op torch.ops.aten.view.default]" in line
    assert "\n" not in line


class Tokens(torch.nn.Module):
    """Conv stem → tokens → linear → back to a map, the batch read from the input: torch.export
    specializes it to the example's batch of 1, so the captured program refuses a batch of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mix = torch.nn.Linear(8, 8)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        b, c, hh, ww = h.shape
        t = self.mix(h.flatten(2).transpose(1, 2))
        return self.head(t.transpose(1, 2).reshape(b, c, hh, ww))


def tokens():
    from edgeconv.models import ModelSpec

    torch.manual_seed(0)
    return ModelSpec(Tokens().eval(), (torch.zeros(1, 3, 16, 16),), name="tokens")


def test_a_program_captured_at_batch_1_is_never_run_on_a_batch(tmp_path, monkeypatch):
    """Every torch run of the captured program (calibration, simulation, isolation, --analyze)
    and every runtime run goes one sample at a time: the export passes."""
    from edgeconv.graph import capture

    spec = tokens()
    program = capture(spec.module, spec.example_inputs).program.module()
    with pytest.raises((AssertionError, RuntimeError)):
        program(torch.zeros(4, 3, 16, 16))  # the hazard is real
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["export", "--model", "test_stage_failures:tokens", "-t", "onnx-int8", "-t", "tflite-int8",
                                    "--calib", "random", "--calib-samples", "8", "--eval-samples", "6",
                                    "--analyze", "-o", str(out)])
    assert res.exit_code == 0, res.output
    arts = json.loads((out / "edgeconv.json").read_text())["artifacts"]
    assert [a["parity"]["samples"] for a in arts] == [6, 6]
    assert np.isfinite([a["parity"]["diffs"][0]["cosine"] for a in arts]).all()
