"""The host backend on real artifacts (litert-torch .tflite, torch.onnx .onnx) and `edgeconv profile`."""
from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
from click.testing import CliRunner

from devices_artifacts import export_onnx, export_tflite
from edgeconv.cli import main
from edgeconv.devices.base import Delegate, ProfileOptions
from edgeconv.devices.catalog import resolve
from edgeconv.devices.host import HostBackend
from edgeconv.devices.profile import headline, profile
from edgeconv.errors import UserError
from edgeconv.models import file_sha256
from edgeconv.results import LatencyReport


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("host-artifacts")
    return {"tflite": export_tflite(d / "tiny.tflite"), "onnx": export_onnx(d / "tiny.onnx")}


def _check_stats(r: LatencyReport, runs: int) -> None:
    assert r.iterations == runs == len(r.samples_ms)
    assert min(r.samples_ms) == pytest.approx(r.min_ms)
    assert r.min_ms <= r.p50_ms <= r.p90_ms <= max(r.samples_ms)
    assert r.std_ms >= 0 and r.min_ms > 0
    assert r.peak_memory_mb is not None and r.peak_memory_mb > 0


def test_host_tflite_xnnpack_and_reference_kernels(artifacts):
    host = resolve("host")
    fast = HostBackend().measure(artifacts["tflite"], host, ProfileOptions(runs=20, warmup=2))
    ref = HostBackend().measure(artifacts["tflite"], host, ProfileOptions(runs=20, warmup=2, delegate=Delegate.CPU))
    for r in (fast, ref):
        _check_stats(r, 20)
        assert r.method == "measured-host" and r.runtime == "ai-edge-litert" and r.device == "host"
        assert r.artifact_sha256 == file_sha256(artifacts["tflite"])
        assert r.per_op == () and "not available from the TFLite Python interpreter" in r.environment["per_op"]
    assert fast.environment["delegate"] == "xnnpack"
    assert ref.environment["delegate"] == "cpu (reference kernels)"
    assert headline(fast) == "measured on this host"


def test_host_onnx_has_per_node_times(artifacts):
    r = HostBackend().measure(artifacts["onnx"], resolve("host"), ProfileOptions(runs=20, warmup=2, threads=2))
    _check_stats(r, 20)
    assert r.runtime == "onnxruntime" and r.threads == 2
    assert r.environment["delegate"] == "CPUExecutionProvider"
    ops = {o["op"] for o in r.per_op}
    assert "Conv" in ops and all(o["avg"] > 0 and o["unit"] == "ms" for o in r.per_op)
    again = LatencyReport.from_dict(json.loads(r.to_json()))
    assert again == r


def test_host_bad_inputs(artifacts, tmp_path):
    host = resolve("host")
    with pytest.raises(UserError, match="does not exist"):
        HostBackend().measure(tmp_path / "nope.tflite", host, ProfileOptions())
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match=r"model.pt is not an artifact edgeconv reads"):
        HostBackend().measure(weights, host, ProfileOptions())
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    with pytest.raises(UserError, match=r"in the coreml format; this backend times tflite and onnx files"):
        HostBackend().measure(package, host, ProfileOptions())
    with pytest.raises(UserError, match="delegate 'gpu' is not available on host"):
        HostBackend().measure(artifacts["tflite"], host, ProfileOptions(delegate=Delegate.GPU))
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(UserError, match="timing on this host failed"):
        HostBackend().measure(broken, host, ProfileOptions(runs=2))


def test_cli_profile_text_json_and_save(artifacts, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["profile", str(artifacts["onnx"]), "--runs", "10", "--warmup", "1"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "measured on this host"
    assert file_sha256(artifacts["onnx"]) in res.output.replace("\n", "") or "p50" in res.output
    saved = tmp_path / "lat.json"
    res = runner.invoke(main, ["profile", str(artifacts["tflite"]), "--runs", "10", "--json", "--save", str(saved)])
    assert res.exit_code == 0, res.output
    report = LatencyReport.from_dict(json.loads(res.output))
    assert report.method == "measured-host" and report.iterations == 10
    assert report.artifact_sha256 == file_sha256(artifacts["tflite"])
    assert LatencyReport.from_dict(json.loads(saved.read_text())) == report


def test_cli_profile_bad_input_exit_2(artifacts):
    runner = CliRunner()
    res = runner.invoke(main, ["profile", str(artifacts["tflite"]), "--device", "nokia-3310"])
    assert res.exit_code == 2 and "unknown device 'nokia-3310'; choose one of:" in res.output
    res = runner.invoke(main, ["profile", str(artifacts["tflite"]), "--delegate", "tpu"])
    assert res.exit_code == 2 and "unknown delegate 'tpu'" in res.output
    res = runner.invoke(main, ["profile", str(artifacts["tflite"]), "-d", "pixel", "--delegate", "hexagon"])
    assert res.exit_code == 2 and "delegate 'hexagon' is not available on pixel-7" in res.output
    res = runner.invoke(main, ["profile", "missing.tflite"])
    assert res.exit_code == 2 and "artifact missing.tflite does not exist" in res.output
    assert "Traceback" not in res.output


def test_unreachable_device_require_measured_and_prediction(artifacts, monkeypatch, tmp_path):
    # No phone is attached here (real adb), and the Pi has no ssh host configured.
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    runner = CliRunner()
    res = runner.invoke(main, ["profile", str(artifacts["tflite"]), "-d", "raspberry-pi-5", "--require-measured"])
    assert res.exit_code == 2
    assert "raspberry-pi-5 is not reachable: no ssh host configured" in res.output
    res = runner.invoke(main, ["profile", str(artifacts["tflite"]), "-d", "raspberry-pi-5"])
    if importlib.util.find_spec("edgeconv.devices.predict") is None:
        assert res.exit_code == 2 and "prediction is unavailable" in res.output
    else:
        assert res.exit_code == 0, res.output
        assert res.output.splitlines()[0].startswith("predicted (")


def test_profile_exports_a_model_reference_first(tmp_path):
    out = tmp_path / "out"
    r = profile("edgeconv.demo:demo", "host", ProfileOptions(runs=10, warmup=1), target="tflite",
                out_dir=str(out))
    produced = list(out.glob("*.tflite"))
    assert len(produced) == 1 and r.artifact_sha256 == file_sha256(produced[0])
    assert r.method == "measured-host" and not math.isnan(r.p50_ms)
    assert (out / "edgeconv.json").is_file()


def test_profile_refuses_a_model_whose_export_failed_parity(tmp_path, onnx_cannot_pass):
    """An impossible tolerance makes the onnx export fail parity: profile says why and exits 1
    instead of timing it; --allow-failed-parity times it, but prints the failure first and records it."""
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["profile", "edgeconv.demo:demo", "-t", "onnx", "-o", str(out), "--runs", "3",
                                    "--warmup", "0"])
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("edgeconv: error:")]
    assert len(errors) == 1, res.output
    assert re.search(r"parity failed for onnx in onnxruntime.*: vs torch-fp32: cosine", errors[0]), errors[0]
    assert "--allow-failed-parity" in errors[0]
    assert "measured on this host" not in res.output and "Traceback" not in res.output
    assert (out / "edgeconv.json").is_file()  # the evidence stays

    res = CliRunner().invoke(main, ["profile", "edgeconv.demo:demo", "-t", "onnx", "-o", str(out), "--runs", "3",
                                    "--warmup", "0", "--allow-failed-parity"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert re.match(r"warning: parity failed for onnx in onnxruntime.*: vs torch-fp32: cosine", lines[0]), lines[:2]
    assert lines[1] == "measured on this host"
    assert "FAILED: parity failed for onnx" in res.output  # the report's own table says it too


def test_profile_api_records_an_allowed_parity_failure(tmp_path, onnx_cannot_pass):
    warned: list[str] = []
    r = profile("edgeconv.demo:demo", "host", ProfileOptions(runs=2, warmup=0), target="onnx",
                out_dir=str(tmp_path), allow_failed_parity=True, warn=warned.append)
    assert len(warned) == 1 and warned[0].startswith("warning: parity failed for onnx")
    assert r.environment["parity"].startswith("FAILED: parity failed for onnx")
    assert LatencyReport.from_dict(json.loads(r.to_json())).environment["parity"] == r.environment["parity"]
