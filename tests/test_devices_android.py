"""The android backend: benchmark_model output parsing on recorded real outputs (tests/recorded/, each
file's header says where it comes from; the Hexagon one is reconstructed and labelled so), the
remote command built for the phone run through a real POSIX shell, and the real `adb` client with no
phone attached."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from devices_artifacts import adb_kill_server, adb_server_started
from edgeconv.devices.android import (
    AndroidBackend, Attached, attached_devices, benchmark_argv, cleanup_script, find_phone,
    parse_adb_devices, parse_benchmark_output, run_script, to_report,
)
from edgeconv.devices.base import Delegate, ProfileOptions
from edgeconv.devices.catalog import resolve
from edgeconv.errors import UserError
from edgeconv.results import LatencyReport

RECORDED = Path(__file__).parent / "recorded"


def _read(name: str) -> str:
    return (RECORDED / name).read_text()


def test_new_format_with_op_profiling():
    p = parse_benchmark_output(_read("benchmark_model_new_format_op_profiling.txt"))
    assert p["timings_us"] == {"Init": 17187.0, "First inference": 3512391.0, "Warmup (avg)": 3.51239e6,
                               "Inference (avg)": 2.95034e6}
    assert p["runs_us"]["count"] == 50 and p["runs_us"]["min"] == 2727568 and p["runs_us"]["std"] == 109798
    assert p["memory_mb"] == {"init": 4.21094, "overall": 46.0859}
    ops = p["ops"]
    assert len(ops) == 31  # the regular runs' table, not the initialization one (AllocateTensors)
    assert ops[0] == {"name": "MobilenetV1/MobilenetV1/Conv2d_0/Relu6", "op": "CONV_2D", "avg": 60.957,
                      "percent": 2.066, "times_called": 1}
    assert ops[-1]["op"] == "SOFTMAX" and ops[-1]["name"] == "MobilenetV1/Predictions/Reshape_1"
    assert sum(o["percent"] for o in ops) == pytest.approx(100.0, abs=0.05)
    assert sum(1 for o in ops if o["op"] == "CONV_2D") == 15
    r = to_report(p, resolve("pixel"), Delegate.XNNPACK, ProfileOptions(runs=50), "ab" * 32, {})
    assert r.p50_ms == pytest.approx(2950.34) and r.min_ms == pytest.approx(2727.568)
    assert r.std_ms == pytest.approx(109.798) and r.peak_memory_mb == pytest.approx(46.0859)
    assert r.p90_ms is None and r.environment["p90"] == "not reported by benchmark_model"
    assert r.environment["p50_from"] == "benchmark_model mean (no median printed)"
    assert all(o["unit"] == "ms" for o in r.per_op)
    back = json.loads(r.to_json())
    assert back["p90_ms"] is None  # NaN is not JSON
    assert LatencyReport.from_dict(back).p50_ms == r.p50_ms


def test_info_prefix_and_percentiles():
    p = parse_benchmark_output(_read("benchmark_model_info_prefix_percentiles.txt"))
    assert p["runs_us"]["count"] == 337 and p["runs_us"]["median"] == 2781 and p["runs_us"]["p95"] == 3169
    assert p["inference_avg_us"] == 2942.27 and p["ops"] == []
    r = to_report(p, resolve("pixel"), Delegate.XNNPACK, ProfileOptions(runs=50), "", {})
    assert r.p50_ms == pytest.approx(2.781) and r.iterations == 337  # the median, not the mean
    assert r.environment["p50_from"] == "benchmark_model median"
    assert r.peak_memory_mb == pytest.approx(40.8281)


def test_android_run_with_older_peak_memory_line():
    p = parse_benchmark_output(_read("benchmark_model_android_peak_memory.txt"))
    assert p["inference_avg_us"] == 33209.4 and p["runs_us"]["count"] == 50 and p["runs_us"]["std"] == 450
    assert p["memory_mb"] == {"init": 0.0, "overall": 12.8672}
    assert p["ops"] == []  # the recording ends inside the initialization profile


def test_old_format():
    p = parse_benchmark_output(_read("benchmark_model_old_format.txt"))
    assert p["timings_us"] == {"Warmup": 420198.0, "Init": 63227.0, "no stats": 422959.0}
    assert p["inference_avg_us"] == 422959.0
    assert [o["op"] for o in p["ops"]] == ["Bconv2d64", "CONV_2D"] * 3 + ["Bconv2d64"]
    assert p["ops"][1] == {"name": "model/tf_op_layer_64-1-1-float/64-1-1-float", "op": "CONV_2D",
                           "avg": 0.822, "percent": None, "times_called": None}
    r = to_report(p, resolve("galaxy-s24"), Delegate.CPU, ProfileOptions(runs=7), "", {})
    assert r.p50_ms == pytest.approx(422.959) and r.min_ms == pytest.approx(422.959)


def test_hexagon_profiles_are_cycles():
    p = parse_benchmark_output(_read("benchmark_model_hexagon_reconstructed.txt"))
    r = to_report(p, resolve("galaxy-s24"), Delegate.HEXAGON, ProfileOptions(runs=50), "", {})
    assert [o["unit"] for o in r.per_op] == ["cycles"] * 5
    assert r.per_op[0]["avg"] == 1175.0 and r.per_op[1]["op"] == "DepthwiseSupernode_8x8p32to8"
    assert "cycles, not milliseconds" in r.environment["per_op"]
    assert r.p50_ms == pytest.approx(3.9755)


def test_output_without_timings_is_a_clear_error():
    with pytest.raises(UserError, match="printed no inference timings; its last line: ERROR: Could not open"):
        parse_benchmark_output("STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.\n")


def test_adb_devices_parsing_and_choice():
    # Lines in the documented `adb devices -l` layout (reconstructed, not recorded: no phone here).
    text = ("List of devices attached\n"
            "28201FDH200ABC         device usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3\n"
            "R5CX30XYZ              unauthorized usb:1-2 transport_id:4\n"
            "emulator-5554          offline transport_id:5\n"
            "0123456789             no permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/device.html] usb:1-3\n")
    found = parse_adb_devices(text)
    assert [a.serial for a in found] == ["28201FDH200ABC", "R5CX30XYZ", "emulator-5554", "0123456789"]
    assert found[0].model == "Pixel_7" and found[0].state == "device"
    assert found[1].state == "unauthorized" and found[3].state.startswith("no permissions")
    assert find_phone(resolve("pixel"), found) == found[0]
    why = find_phone(resolve("galaxy-s24"), found)
    assert "are not a galaxy-s24" in why and "SM_S921U" in why
    s24 = Attached("R5CX30XYZ", "unauthorized", {"model": "SM_S921U"})
    assert "accept the USB debugging prompt" in find_phone(resolve("s24"), [s24])
    assert "no Android device attached" in find_phone(resolve("pixel"), [])


def test_benchmark_command_pins_big_cores_and_sets_delegate():
    argv = benchmark_argv("/data/local/tmp/edgeconv-1", "model.tflite", ProfileOptions(threads=2, runs=30, warmup=3),
                          Delegate.GPU, resolve("pixel").big_cores)
    assert argv[:2] == ["taskset", "c0"]  # cpu6 + cpu7, the Cortex-X1 pair
    assert "--use_gpu=true" in argv and "--num_threads=2" in argv and "--num_runs=30" in argv
    assert "--enable_op_profiling=true" in argv and "--report_peak_memory_footprint=true" in argv
    hexa = benchmark_argv("/d", "m.tflite", ProfileOptions(), Delegate.HEXAGON, ())
    assert hexa[:3] == ["env", "LD_LIBRARY_PATH=/d", "ADSP_LIBRARY_PATH=/d"] and "--use_hexagon=true" in hexa


def test_remote_script_keeps_odd_paths_whole_in_a_real_shell(tmp_path):
    # The string `adb shell` would hand the phone's shell, run by this machine's POSIX sh instead:
    # a dir with spaces and `;` must stay one argument and nothing must be executed from it.
    remote = tmp_path / "run dir; touch PWNED"
    remote.mkdir()
    fake = remote / "benchmark_model"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    argv = benchmark_argv(str(remote), "my model.tflite", ProfileOptions(runs=3), Delegate.XNNPACK, ())
    subprocess.run(["sh", "-c", run_script(str(remote), argv)], cwd=tmp_path, check=True, timeout=10)
    assert (remote / "out.txt").read_text().splitlines() == argv[1:]
    assert f"--graph={remote}/my model.tflite" in argv
    assert int((remote / "pid").read_text()) > 0
    assert not list(tmp_path.rglob("PWNED"))
    subprocess.run(["sh", "-c", cleanup_script(str(remote))], cwd=tmp_path, check=True, timeout=10)
    assert not remote.exists()
    assert shlex.split(run_script("/x y", ["a b"]).split("exec ", 1)[1].split(" > ")[0]) == ["a b"]


# ---------------------------------------------------------------- the real adb client

adb_missing = shutil.which("adb") is None


@pytest.fixture(scope="module", autouse=True)
def adb_server():
    """Start adb's local server (works offline) and stop it afterwards if we started it."""
    started = adb_server_started()
    yield
    if started:
        adb_kill_server()


@pytest.mark.skipif(adb_missing, reason="adb is not installed: apt-get install adb (see .ci/services.sh)")
def test_real_adb_with_no_phone_attached(adb_server, tmp_path):
    if attached_devices():
        pytest.skip("a phone is attached to this machine; this test needs none")
    pixel = resolve("pixel")
    assert AndroidBackend().reachable(pixel).startswith("no Android device attached (adb devices lists none)")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="no benchmark_model binary for pixel-7: download the prebuilt android_aarch64_benchmark_model"):
        AndroidBackend().measure(model, pixel, ProfileOptions())
    with pytest.raises(UserError, match="benchmark_model binary .*nope does not exist"):
        AndroidBackend().measure(model, pixel, ProfileOptions(benchmark_binary=str(tmp_path / "nope")))
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF")
    with pytest.raises(UserError, match="no Android device attached"):
        AndroidBackend().measure(model, pixel, ProfileOptions(benchmark_binary=str(binary)))
    with pytest.raises(UserError, match="in the onnx format; benchmark_model on Android times tflite files"):
        AndroidBackend().measure(_onnx_file(tmp_path), pixel, ProfileOptions(benchmark_binary=str(binary)))
    with pytest.raises(UserError, match="the hexagon delegate|not available on pixel-7"):
        AndroidBackend().measure(model, pixel, ProfileOptions(delegate=Delegate.HEXAGON, benchmark_binary=str(binary)))


def _onnx_file(d: Path) -> Path:
    p = d / "m.onnx"
    p.write_bytes(b"\0")
    return p


@pytest.mark.skipif(adb_missing, reason="adb is not installed: apt-get install adb (see .ci/services.sh)")
def test_cli_require_measured_on_android_exits_2(adb_server, tmp_path):
    from click.testing import CliRunner

    from edgeconv.cli import main

    if attached_devices():
        pytest.skip("a phone is attached to this machine; this test needs none")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 16)
    res = CliRunner().invoke(main, ["profile", str(model), "-d", "pixel", "--require-measured"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1].startswith("edgeconv: error: pixel-7 is not reachable: no Android device attached")


def test_npu_delegates_need_their_libraries(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 16)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    opts = ProfileOptions(delegate=Delegate.QNN, benchmark_binary=str(binary))
    with pytest.raises(UserError, match=r"the qnn delegate needs Qualcomm's libQnnTFLiteDelegate.so .*qnn_delegate"):
        AndroidBackend().measure(model, resolve("galaxy-s24"), opts)
    # With the library configured, its folder's .so files travel and the external-delegate flags are set.
    lib_dir = tmp_path / "qnn"
    lib_dir.mkdir()
    for name in ("libQnnTFLiteDelegate.so", "libQnnHtp.so"):
        (lib_dir / name).write_bytes(b"\0")
    cfg = tmp_path / "devices.toml"
    cfg.write_text(f'[galaxy-s24]\nqnn_delegate = "{lib_dir / "libQnnTFLiteDelegate.so"}"\n')
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(cfg))
    from edgeconv.devices.android import _delegate_files

    files, extra = _delegate_files(resolve("galaxy-s24"), Delegate.QNN)
    assert sorted(f.name for f in files) == ["libQnnHtp.so", "libQnnTFLiteDelegate.so"]
    argv = benchmark_argv("/d", "model.tflite", ProfileOptions(), Delegate.QNN, (7,), [e.format(dir="/d") for e in extra])
    assert argv[:3] == ["env", "LD_LIBRARY_PATH=/d", "ADSP_LIBRARY_PATH=/d"] and argv[3:5] == ["taskset", "80"]
    assert "--external_delegate_path=/d/libQnnTFLiteDelegate.so" in argv
    assert "--external_delegate_options=backend_type:htp" in argv
