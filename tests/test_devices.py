"""Device descriptors, the registry, delegates, the user's devices config and command quoting."""
from __future__ import annotations

import shlex

import pytest

import edgeconv.devices.catalog  # noqa: F401
from devices_artifacts import adb_kill_server, adb_server_started
from edgeconv.devices.base import (
    Delegate, Device, DeviceKind, ProfileOptions, connection, load_descriptor, quote_command, shipped_descriptors,
)
from edgeconv.devices.catalog import backend_for, resolve
from edgeconv.errors import UserError
from edgeconv.registry import DEVICES



@pytest.fixture(scope="module", autouse=True)
def adb_server():
    """reachable() for the phones runs the real `adb devices`, which starts adb's server: stop it
    afterwards if this module started it."""
    started = adb_server_started()
    yield
    if started:
        adb_kill_server()


EXPECTED = {"pixel-7": DeviceKind.ANDROID, "galaxy-s24": DeviceKind.ANDROID,
            "raspberry-pi-5": DeviceKind.LINUX_ARM, "jetson-orin-nano": DeviceKind.LINUX_ARM,
            "iphone-15-pro": DeviceKind.APPLE, "host": DeviceKind.HOST}


def test_every_shipped_descriptor_is_registered_under_its_name_and_aliases():
    devices = shipped_descriptors()
    names = {d.name for d in devices}
    assert set(EXPECTED) <= names
    for d in devices:
        assert DEVICES.get(d.name) == d
        for alias in d.aliases:
            assert DEVICES.get(alias) is DEVICES.get(d.name)
        if d.name in EXPECTED:
            assert d.kind is EXPECTED[d.name]
        assert d.default_delegate in d.delegates
        for acc in d.accelerators:  # an accelerator is reachable through delegates the device offers
            assert set(acc.delegates) <= set(d.delegates), (d.name, acc.name)
        if d.kind not in (DeviceKind.HOST, DeviceKind.EMULATED):  # real hardware: stated basis, CPU layout
            assert d.cost.get("source"), f"{d.name}: cost constants without a source"
            assert d.clusters and d.cores == sum(c.cores for c in d.clusters)


def test_every_registered_device_has_a_backend_that_answers_reachable():
    # Enumerates the registry: a device whose backend cannot say whether it is reachable fails here.
    for name, device in DEVICES.items():
        why = backend_for(device).reachable(device)
        assert why is None or (isinstance(why, str) and why), name
    assert backend_for(DEVICES.get("host")).reachable(DEVICES.get("host")) is None


def test_pixel_alias_and_big_core_pinning():
    pixel = resolve("pixel")
    assert pixel.name == "pixel-7" and pixel.soc == "Google Tensor G2"
    assert pixel.big_cores == (6, 7)  # the two Cortex-X1
    assert resolve("s24").big_cores == (7,)  # the one Cortex-X4
    assert pixel.cores == 8


def test_unknown_device_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown device 'nokia-3310'; choose one of: .*pixel-7"):
        resolve("nokia-3310")


def test_delegate_the_device_lacks_is_a_user_error():
    with pytest.raises(UserError, match="delegate 'hexagon' is not available on pixel-7; it offers: xnnpack, cpu, gpu, nnapi"):
        resolve("pixel").check_delegate(Delegate.HEXAGON)
    resolve("galaxy-s24").check_delegate(Delegate.QNN)  # offered: no error


def test_malformed_descriptors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nkind = "android"\ndelegates = ["cpu"]\n')
    with pytest.raises(UserError, match=r"bad.toml lacks the key 'soc'"):
        load_descriptor(bad)
    bad.write_text('name = "x"\nkind = "phone"\nsoc = "y"\ndelegates = ["cpu"]\n')
    with pytest.raises(UserError, match=r"bad.toml: 'phone' is not a valid DeviceKind"):
        load_descriptor(bad)
    bad.write_text('name = "x"\nkind = "android"\nsoc = "y"\ndelegates = ["cpu"]\n[cost]\nmemory_gbps = 3\n')
    with pytest.raises(UserError, match=r"must say where its constants came from"):
        load_descriptor(bad)
    bad.write_text('name = "x"\nkind = [')
    with pytest.raises(UserError, match="is not readable TOML"):
        load_descriptor(bad)


def test_own_descriptor_file_and_user_config_override(tmp_path, monkeypatch):
    own = tmp_path / "my-board.toml"
    own.write_text('name = "my-board"\nkind = "linux-arm"\nsoc = "RK3588"\ndelegates = ["xnnpack"]\n'
                   '[connection]\nhost = "pi@10.0.0.2"\nport = 22\n')
    dev = resolve(str(own))
    assert dev.name == "my-board" and dev.kind is DeviceKind.LINUX_ARM
    cfg = tmp_path / "devices.toml"
    cfg.write_text('[my-board]\nport = 2222\n[pixel]\nserial = "ABC123"\n')
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(cfg))
    assert connection(dev) == {"host": "pi@10.0.0.2", "port": 2222}
    assert connection(resolve("pixel-7"))["serial"] == "ABC123"  # keyed by alias works too
    with pytest.raises(UserError, match=r"does not exist"):
        resolve(str(tmp_path / "missing.toml"))


def test_profile_options_refuse_nonsense():
    with pytest.raises(UserError, match="--runs must be at least 1"):
        ProfileOptions(runs=0)
    with pytest.raises(UserError, match="--warmup must be 0 or more"):
        ProfileOptions(warmup=-1)


@pytest.mark.parametrize("piece", ["/tmp/my model.tflite", "/tmp/a;touch PWNED;.tflite", "it's $(x) `y`", "--flag=a b"])
def test_quoted_remote_command_keeps_every_piece_whole(piece):
    argv = ["python3", "runner.py", piece, "--threads", "4"]
    assert shlex.split(quote_command(argv)) == argv


def test_device_is_frozen():
    d = resolve("host")
    with pytest.raises(Exception):
        d.name = "other"  # type: ignore[misc]
    assert isinstance(d, Device)


def test_headline_says_how_it_was_obtained():
    from edgeconv.devices.profile import headline
    from edgeconv.results import LatencyReport

    base = dict(runtime="r", artifact_sha256="0" * 64, threads=1, warmup=0, iterations=1, p50_ms=1.0,
                p90_ms=1.0, min_ms=1.0)
    assert headline(LatencyReport(device="host", method="measured-host", **base)) == "measured on this host"
    assert headline(LatencyReport(device="pixel-7", method="measured-device", **base)) == "measured on pixel-7"
    assert headline(LatencyReport(device="galaxy-s24", method="predicted",
                                  basis="calibrated on 40 models, held-out error 18%", **base)) == \
        "predicted (calibrated on 40 models, held-out error 18%)"
    assert headline(LatencyReport(device="arm64-emulated", method="emulated",
                                  environment={"note": "behaviour only, NOT latency"}, **base)) == \
        "emulated on arm64-emulated (behaviour only, NOT latency)"


def test_cli_devices_lists_each_device_once_with_why_not(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from edgeconv.cli import main

    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    res = CliRunner().invoke(main, ["devices", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(EXPECTED) <= set(rows) and len(rows) == len(json.loads(res.output))
    assert rows["host"]["reachable"] is True and rows["host"]["why_not"] == ""
    assert rows["raspberry-pi-5"]["reachable"] is False
    assert rows["raspberry-pi-5"]["why_not"].startswith("no ssh host configured for raspberry-pi-5")
    assert rows["pixel-7"]["aliases"] == ["pixel"] and "nnapi" in rows["pixel-7"]["delegates"]
    res = CliRunner().invoke(main, ["devices"])
    assert res.exit_code == 0 and "raspberry-pi-5" in res.output and "reachable" in res.output


def test_example_config_is_valid_and_applies(monkeypatch):
    from pathlib import Path

    example = Path(edgeconv.devices.catalog.__file__).with_name("config.example.toml")
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(example))
    pi = connection(resolve("rpi5"))
    assert pi["host"] == "pi@192.168.1.20" and pi["port"] == 22
    assert connection(resolve("iphone"))["iphone"] is True
    assert connection(resolve("s24"))["qnn_delegate"].endswith("libQnnTFLiteDelegate.so")
