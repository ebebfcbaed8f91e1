"""`edgeconv gate` judges every target of every model: a target whose export fails (here litert-torch
cannot lower logcumsumexp, a real converter limit) is one breach naming the stage, and the gate goes
on — the same model's ONNX file and the next model are still exported and judged, every breach is
listed (stderr lines, JSON, JUnit), exit 1."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import torch
from click.testing import CliRunner

from edgeconv.calib.data import DataSet
from edgeconv.cli import main
from edgeconv.models import ModelSpec


class CumulativeNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.logcumsumexp(self.conv(x), dim=3)


def _images() -> DataSet:
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    return DataSet(x, None, source="seeded N(0,1) test inputs")


def cumulative() -> ModelSpec:
    torch.manual_seed(0)
    return ModelSpec(CumulativeNet().eval(), (torch.zeros(1, 3, 8, 8),), name="cumulative", data=_images)


CUM = "test_gate_all_targets:cumulative"
DEMO = "edgeconv.demo:demo"


def _budgets(out_dir) -> str:
    entry = '[[budget]]\nmodel = "{}"\ntarget = "{}"\ndevice = "host"\nsize_kb = {}\n'
    return (f'[gate]\ncalib_samples = 8\neval_samples = 8\nout_dir = "{out_dir}"\n\n'
            + entry.format(CUM, "tflite", 500)  # the converter fails: the first target of the first model
            + entry.format(CUM, "onnx", 500)  # the same model's other target: exported and judged
            + entry.format(DEMO, "onnx", 0.001))  # the next model: exported, and over its size budget


def test_gate_reports_every_failed_target_and_goes_on(tmp_path):
    (tmp_path / "b.toml").write_text(_budgets(tmp_path / "out"))
    res = CliRunner().invoke(main, ["gate", str(tmp_path / "b.toml"), "--json", "--junit", str(tmp_path / "j.xml")])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    doc = json.loads(res.stdout)
    rows = {(r["name"], r["metric"]): r for r in doc["results"]}
    failed = sorted(k for k, r in rows.items() if not r["passed"])
    assert failed == sorted([(f"{CUM} / tflite / host", "export"), (f"{DEMO} / onnx / host", "size_kb")]), failed
    # the failed target: one line naming the stage, the target and the op the converter refused
    msg = rows[(f"{CUM} / tflite / host", "export")]["message"]
    assert msg.startswith("not exported: convert (tflite) failed") and "logcumsumexp" in msg, msg
    # the targets after it were exported and judged: the same model's ONNX passes parity and size
    assert rows[(f"{CUM} / onnx", "parity_failures")]["passed"]
    assert rows[(f"{CUM} / onnx / host", "size_kb")]["passed"]
    assert len(list((tmp_path / "out").rglob("*.onnx"))) == 2  # both models' ONNX files
    assert not list((tmp_path / "out").rglob("*.tflite"))  # and no half-written TFLite file
    # CI-readable: one BREACH line per failure on stderr, and the JUnit file counts both
    breaches = [ln for ln in res.stderr.splitlines() if ln.startswith("BREACH ")]
    assert len(breaches) == 2 and any("convert (tflite) failed" in ln for ln in breaches), res.stderr
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("failures") == "2" and suite.get("tests") == str(len(doc["results"]))
