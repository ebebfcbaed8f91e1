"""The apple backend. Core ML prediction runs only on macOS, and there is no Mac or iPhone here, so:
what is tested is the command sent to the Mac, the serialisation of coremltools' own
MLModelBenchmarker measurement types into the report, the transport through a real loopback sshd
(where the runner, on Linux, refuses with its one-line reason and the Mac-side dir is removed), and
the unreachable paths. A measurement on a Mac or an iPhone has NOT been verified."""
from __future__ import annotations

import importlib.util
import shlex
import sys

import pytest

from edgeconv.devices.apple import AppleBackend, artifact_sha256, runner_argv, to_report
from edgeconv.devices.apple_runner import main as apple_runner_main
from edgeconv.devices.base import Delegate, Device, DeviceKind, ProfileOptions
from edgeconv.devices.catalog import resolve
from edgeconv.devices.profile import headline
from edgeconv.errors import UserError
from sshd_fixture import sshd_missing, start_sshd, stop_sshd


def test_command_for_the_mac_keeps_odd_names_whole():
    argv = runner_argv("/opt/homebrew/bin/python3", "/tmp/edgeconv.ab12", "my model; rm -rf ~.mlpackage",
                       ProfileOptions(runs=20, warmup=2), Delegate.ANE,
                       {"iphone": True, "development_team": "ABCDE12345"})
    assert argv[2] == "/tmp/edgeconv.ab12/my model; rm -rf ~.mlpackage"
    assert argv[3:] == ["--compute-units", "CPU_AND_NE", "--runs", "20", "--warmup", "2", "--per-op",
                        "--iphone", "--development-team", "ABCDE12345"]
    from edgeconv.devices.base import quote_command

    assert shlex.split(quote_command(argv)) == argv


@pytest.mark.skipif(importlib.util.find_spec("coremltools") is None,
                    reason="coremltools is not installed: pip install 'edgeconv[coreml]'")
def test_report_from_coremltools_measurements():
    from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker

    from edgeconv.devices.apple_runner import measurement_to_dict

    predict = MLModelBenchmarker.Measurement.from_samples([2.0, 1.0, 4.0, 3.0, 5.0])
    load = MLModelBenchmarker.Measurement.from_samples([30.0, 20.0, 25.0])
    data = {"runtime": "coreml", "runtime_version": "9.0", "ran_on": "iPhone (iOS 18.1)",
            "compute_units": "ALL", "load": measurement_to_dict(load), "predict": measurement_to_dict(predict),
            "per_op": [], "environment": {"macos": "15.1"}}
    r = to_report(data, resolve("iphone"), Delegate.ALL, ProfileOptions(runs=5, warmup=1), "f" * 64, "me@mac")
    assert r.samples_ms == (2.0, 1.0, 4.0, 3.0, 5.0) and r.iterations == 5
    assert r.p50_ms == 3.0 and r.min_ms == 1.0 and r.p90_ms == pytest.approx(4.6)
    assert r.std_ms == pytest.approx(predict.statistics.std_dev)
    assert r.environment["load_ms_median"] == "25.000" and r.environment["ran_on"] == "iPhone (iOS 18.1)"
    assert headline(r) == "measured on iphone-15-pro" and r.runtime == "coreml"


def test_runner_refuses_off_macos(capsys):
    if sys.platform == "darwin":
        pytest.skip("this checks the refusal on a non-macOS system")
    assert apple_runner_main(["x.mlpackage"]) == 2
    assert "Core ML prediction needs macOS; this machine runs Linux" in capsys.readouterr().err


def test_unreachable_and_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    iphone = resolve("iphone-15-pro")
    assert "no Mac (ssh host) configured for iphone-15-pro" in AppleBackend().reachable(iphone)
    pkg = tmp_path / "m.mlpackage"
    pkg.mkdir()
    with pytest.raises(UserError, match="no Mac \\(ssh host\\) configured"):
        AppleBackend().measure(pkg, iphone, ProfileOptions())
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\0")
    with pytest.raises(UserError, match="in the onnx format; the apple backend times coreml files"):
        AppleBackend().measure(onnx, iphone, ProfileOptions())
    with pytest.raises(UserError, match="delegate 'xnnpack' is not available on iphone-15-pro"):
        AppleBackend().measure(pkg, iphone, ProfileOptions(delegate=Delegate.XNNPACK))


def test_mlpackage_hash_covers_every_file(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "weights.bin").write_bytes(b"\x01\x02")
    (pkg / "Manifest.json").write_text("{}")
    first = artifact_sha256(pkg)
    assert first == artifact_sha256(pkg) and len(first) == 64
    (pkg / "Data" / "weights.bin").write_bytes(b"\x01\x03")
    assert artifact_sha256(pkg) != first


@pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or "")
def test_transport_to_a_mac_over_loopback_sshd(tmp_path):
    """The whole apple path up to Core ML: mktemp, recursive copy of the .mlpackage folder, the runner
    started with the remote python, its refusal (this "Mac" is Linux) carried back as one line, and the
    remote dir removed."""
    server = start_sshd(tmp_path / "sshd")
    try:
        board = tmp_path / "mac tmp"
        board.mkdir()
        mac = Device(name="loopback-mac", kind=DeviceKind.APPLE, soc="this host over loopback ssh", clusters=(),
                     delegates=(Delegate.ALL, Delegate.CPU), default_delegate=Delegate.ALL,
                     connection={"host": server.host, "port": server.port, "identity": str(server.identity),
                                 "known_hosts": str(server.known_hosts), "python": sys.executable,
                                 "remote_tmp": str(board)})
        pkg = tmp_path / "my model.mlpackage"
        (pkg / "Data").mkdir(parents=True)
        (pkg / "Data" / "model.mlmodel").write_bytes(b"\0" * 64)
        assert AppleBackend().reachable(mac) is None
        with pytest.raises(UserError, match=r"timing on loopback-mac \(.*\) failed: Core ML prediction needs macOS"):
            AppleBackend().measure(pkg, mac, ProfileOptions(runs=3))
        assert list(board.iterdir()) == []
    finally:
        stop_sshd(server)
