"""`edgeconv gate` end to end through the CLI: real exports of the demo, real host timing, a real
prediction for the unreachable Pixel, exit codes 0 / 1 / 2, JUnit XML, summary and baseline files."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from edgeconv.cli import main

HOST = "edgeconv.demo:demo / tflite-int8 / host"
PIXEL = "edgeconv.demo:demo / tflite-int8 / pixel"


def budgets(out_dir, host_p50: float, extra: str = "") -> str:
    return f"""
[gate]
runs = 30
warmup = 3
calib_samples = 32
eval_samples = 64
out_dir = "{out_dir}"

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "host"
p50_ms = {host_p50}
size_kb = 500
accuracy_drop = 5.0
{extra}
[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "pixel"
p50_ms = 1000
"""


def run(*args):
    return CliRunner().invoke(main, ["gate", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def generous(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    (d / "ok.toml").write_text(budgets(d / "out", 1000.0))
    r = run(d / "ok.toml", "--junit", d / "ok.xml", "--summary", d / "ok.md", "--write-baseline", d / "base.json",
            "--json")
    return d, r


def test_generous_budget_passes_and_writes_reports(generous):
    d, r = generous
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["passed"] is True
    host, pixel = out["measured"][HOST], out["measured"][PIXEL]
    assert host["method"] == "measured-host" and host["basis"] == "measured on this host"
    assert pixel["method"] == "predicted" and pixel["basis"].startswith("predicted (uncalibrated: from published peak")
    assert pixel["p50_ms"] > 0 and pixel["p90_ms"] is None  # a prediction carries no invented p90
    assert host["p90_ms"] >= host["p50_ms"]
    assert host["artifact_sha256"] == pixel["artifact_sha256"]  # one export, two devices
    assert 0 < host["p50_ms"] < 1000 and host["size_bytes"] > 1000
    assert host["accuracy"] is not None and host["reference_accuracy"] > 0.9
    suite = ET.parse(d / "ok.xml").getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "0"  # 4 limits + parity of the one artifact
    assert (d / "ok.md").read_text().startswith("## edgeconv gate: passed — 5 of 5 checks within budget")
    base = json.loads((d / "base.json").read_text())
    assert set(base["results"]) == {HOST, PIXEL}


def test_budget_below_measured_p50_fails_and_regression_is_detected(generous, tmp_path):
    d, first = generous
    host_p50 = json.loads(first.stdout)["measured"][HOST]["p50_ms"]
    # a baseline at a third of today's p50: today is ~200 % slower, far past the 10 % allowed
    base = json.loads((d / "base.json").read_text())
    base["results"][HOST]["p50_ms"] = host_p50 / 3
    (tmp_path / "fast-base.json").write_text(json.dumps(base))
    (tmp_path / "tight.toml").write_text(budgets(tmp_path / "out", round(host_p50 / 10, 6)))
    r = run(tmp_path / "tight.toml", "--baseline", tmp_path / "fast-base.json", "--junit", tmp_path / "t.xml",
            "--summary", tmp_path / "t.md")
    assert r.exit_code == 1, r.output
    breaches = [l for l in r.stderr.splitlines() if l.startswith("BREACH")]
    assert len(breaches) == 2
    assert breaches[0].startswith(f"BREACH {HOST}: p50_ms")
    assert breaches[1].startswith(f"BREACH {HOST}: regression_pct")
    assert r.stderr.strip().splitlines()[-1] == "edgeconv: error: 2 of 7 checks breached their budget"
    suite = ET.parse(tmp_path / "t.xml").getroot().find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == ["p50_ms", "regression_pct"]
    # the pixel row was predicted both times: compared like with like, and within 10 %
    pixel_reg = [c for c in suite.findall("testcase") if c.get("classname") == PIXEL and c.get("name") == "regression_pct"]
    assert pixel_reg and pixel_reg[0].find("failure") is None and pixel_reg[0].find("skipped") is None
    assert "FAILED" in (tmp_path / "t.md").read_text().splitlines()[0]


@pytest.mark.parametrize("mutate, pattern", [
    (lambda t: t.replace('target = "tflite-int8"\ndevice = "host"', 'target = "tflite-int9"\ndevice = "host"', 1),
     r"budget 1 names target 'tflite-int9', which does not exist"),
    (lambda t: t.replace("size_kb = 500", "size_kb = 500\nsize_mb = 1"), r"unknown key 'size_mb' in budget 1"),
    (lambda t: t.replace('model = "edgeconv.demo:demo"', 'model = "no_such_package_xyz:make"', 1),
     r"cannot import 'no_such_package_xyz'"),
])
def test_bad_budgets_exit_2_with_one_line(tmp_path, mutate, pattern):
    import re

    (tmp_path / "b.toml").write_text(mutate(budgets(tmp_path / "out", 1000.0)))
    r = run(tmp_path / "b.toml", "--junit", tmp_path / "j.xml")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeconv: error: ") and re.search(pattern, lines[0])
    assert not (tmp_path / "j.xml").exists()  # nothing half-written


def test_bad_baseline_fails_before_any_export(tmp_path):
    (tmp_path / "b.toml").write_text(budgets(tmp_path / "out", 1000.0))
    (tmp_path / "base.json").write_text("{not json")
    r = run(tmp_path / "b.toml", "--baseline", tmp_path / "base.json")
    assert r.exit_code == 2 and "is not readable JSON" in r.stderr
    assert not (tmp_path / "out").exists()
