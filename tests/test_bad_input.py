"""Security and bad input (issue 9, part 5): a crafted .pt2 never runs code, a device field is never
an option to ssh/scp/adb, and every command answers bad input with one line on stderr and exit 2 —
checked in real processes, so anything torch's logger prints would show."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from edgeconv.devices.base import Delegate, Device, DeviceKind, connection, load_descriptor
from edgeconv.errors import UserError
from edgeconv.models import load_model


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "edgeconv", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**os.environ, **(env or {})})


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeconv: error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---------------------------------------------------------------- crafted .pt2 files


class Payload:
    """Unpickling this writes the canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self):
        return (exec, (f"open({self.canary!r}, 'w').write('pwned')",))


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _tiny_program() -> torch.export.ExportedProgram:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU()).eval()
    return torch.export.export(m, (torch.randn(1, 1, 6, 6),))


def _legit(path: Path) -> Path:
    torch.export.save(_tiny_program(), str(path))
    return path


def _rewrite(src: Path, dst: Path, changes: dict[str, bytes]) -> Path:
    """Copy a .pt2 archive, replacing (or adding) records named relative to its root folder."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0] + "/"
        for info in zin.infolist():
            rel = info.filename[len(root):]
            zout.writestr(info.filename, changes.pop(rel) if rel in changes else zin.read(info))
        for rel, data in changes.items():
            zout.writestr(root + rel, data)
    return dst


def _model_json(src: Path) -> dict:
    with zipfile.ZipFile(src) as z:
        return json.loads(z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))))


def _legacy_evil(path: Path, canary: Path) -> Path:
    """The pre-2.8 layout torch.export.load falls back to: its .pt records are unpickled, and when the
    weights-only load fails torch retries with weights_only=False."""
    from torch._export.serde.schema import SCHEMA_VERSION

    legit = _legit(path.with_name("donor.pt2"))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        z.writestr("serialized_exported_program.json", json.dumps(_model_json(legit)))
        for name in ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
            z.writestr(name, _pickled({"w": Payload(canary)}))
    return path


def _pickled_weight_evil(path: Path, canary: Path) -> Path:
    """The current layout with one weight marked use_pickle (torch loads it with weights_only=False)."""
    legit = _legit(path.with_name("donor.pt2"))
    with zipfile.ZipFile(legit) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        cfg = json.loads(z.read(cfg_name))
    first = next(iter(cfg["config"].values()))
    first["use_pickle"] = True
    return _rewrite(legit, path, {"data/weights/model_weights_config.json": json.dumps(cfg).encode(),
                                  f"data/weights/{first['path_name']}": _pickled(Payload(canary))})


def _guards_code_evil(path: Path, canary: Path) -> Path:
    """No pickle at all: ExportedProgram.module() exec's the JSON's guards_code into a function
    that runs on every call."""
    legit = _legit(path.with_name("donor.pt2"))
    doc = _model_json(legit)
    doc["guards_code"] = [f"open({str(canary)!r}, 'w').write('pwned') > 0"]
    return _rewrite(legit, path, {"models/model.json": json.dumps(doc).encode()})


def _dynamic_program() -> torch.export.ExportedProgram:
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()).eval()
    return torch.export.export(m, (torch.randn(2, 1, 6, 6),),
                               dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))


def _expr_evil(path: Path, canary: Path) -> Path:
    """A symbolic-shape expression is parsed with sympy.sympify, which evals text."""
    donor = path.with_name("dyn-donor.pt2")
    torch.export.save(_dynamic_program(), str(donor))
    text = json.dumps(_model_json(donor))
    sym = next(iter(_model_json(donor)["range_constraints"]))
    evil = text.replace(f"Symbol('{sym}'", f"Symbol(open({str(canary)!r}, 'w').write('pwned') and '{sym}'")
    assert evil != text
    return _rewrite(donor, path, {"models/model.json": evil.encode()})


def _target_evil(path: Path, canary: Path) -> Path:
    """No pickle either: a node target resolves to any callable reachable from `torch`."""
    legit = _legit(path.with_name("donor.pt2"))
    doc = _model_json(legit)
    doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.pickle.loads"
    return _rewrite(legit, path, {"models/model.json": json.dumps(doc).encode()})


def test_crafted_legacy_pt2_runs_code_in_torch_but_edgeconv_refuses_it(tmp_path):
    canary = tmp_path / "canary"
    evil = _legacy_evil(tmp_path / "evil.pt2", canary)
    # the file is a real attack: torch's own loader runs the payload
    try:
        torch.export.load(str(evil))
    except Exception:
        pass
    assert canary.read_text() == "pwned"
    canary.unlink()

    res = cli("export", "--model", "evil.pt2", "-t", "onnx", "-o", "out", cwd=tmp_path)
    assert_one_line_error(res, "refusing evil.pt2", "pre-2.8", "pickle", "torch.export.save")
    assert not canary.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("craft, why", [
    (_pickled_weight_evil, "stored as a pickle"),
    (_guards_code_evil, "guards_code"),
    (_target_evil, "not a torch operator"),
    (_expr_evil, "symbolic expression"),
])
def test_crafted_current_layout_pt2_is_refused_without_running_anything(tmp_path, craft, why):
    canary = tmp_path / "canary"
    evil = craft(tmp_path / "evil.pt2", canary)
    with pytest.raises(UserError, match=why) as e:
        load_model(str(evil))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"refusing {evil}")
    assert not canary.exists()


def test_pickled_weight_and_guards_code_are_real_attacks_on_torch_export_load(tmp_path):
    """What the refusals above guard against: torch's loader runs each of these payloads."""
    for craft in (_pickled_weight_evil, _guards_code_evil, _expr_evil):
        canary = tmp_path / f"canary-{craft.__name__}"
        evil = craft(tmp_path / f"{craft.__name__}.pt2", canary)
        try:
            torch.export.load(str(evil)).module()(torch.randn(1, 1, 6, 6))  # edgeconv runs the model too
        except Exception:
            pass
        assert canary.read_text() == "pwned", craft.__name__


def test_legit_pt2_loads_like_torch_export_load(tmp_path):
    path = _legit(tmp_path / "m.pt2")
    spec = load_model(str(path))
    ref = torch.export.load(str(path))
    x = torch.randn(1, 1, 6, 6)
    assert spec.input_shape == (1, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(spec.module(x), ref.module()(x))


def test_legit_dynamic_batch_pt2_loads(tmp_path):
    path = tmp_path / "dyn.pt2"
    torch.export.save(_dynamic_program(), str(path))
    spec = load_model(str(path))
    x = torch.randn(5, 1, 6, 6)  # another batch than the example's
    with torch.no_grad():
        assert torch.equal(spec.module(x), torch.export.load(str(path)).module()(x))


def test_corrupt_pt2_prints_exactly_one_line(tmp_path):
    legit = _legit(tmp_path / "donor.pt2")
    # a valid zip whose tensor config is garbage: torch would log its traceback before raising
    _rewrite(legit, tmp_path / "broken.pt2", {"data/weights/model_weights_config.json": b"{not json"})
    for name in ("broken.pt2", "bytes.pt2"):
        if name == "bytes.pt2":
            (tmp_path / name).write_bytes(b"PK\x03\x04" + b"\x00garbage" * 50)
        res = cli("export", "--model", name, "-t", "onnx", "-o", "out", cwd=tmp_path)
        assert_one_line_error(res, name, "not a readable torch.export .pt2 file")


# ---------------------------------------------------------------- every command, obvious bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.pt2").write_bytes(b"\x00not a zip" * 20)
    (d / "empty.pt2").write_bytes(b"")
    (d / "corrupt.tflite").write_bytes(b"garbage\x00\x01" * 10)
    (d / "empty.onnx").write_bytes(b"")
    (d / "corrupt.toml").write_text("[[[not toml")
    for folder in ("dir.pt2", "dir.tflite", "dir.toml"):
        (d / folder).mkdir()
    return d


CASES = [  # (argv, words the one error line must hold)
    (("export", "--model", "missing.pt2"), ("missing.pt2", "does not exist")),
    (("export", "--model", "corrupt.pt2"), ("corrupt.pt2", "not a readable")),
    (("export", "--model", "empty.pt2"), ("empty.pt2", "not a readable")),
    (("export", "--model", "dir.pt2"), ("dir.pt2", "is a folder")),
    (("analyze", "--model", "corrupt.pt2"), ("corrupt.pt2", "not a readable")),
    (("divergence", "corrupt.tflite"), ("corrupt.tflite", "not a readable tflite")),
    (("divergence", "empty.onnx"), ("empty.onnx", "not a readable onnx")),
    (("divergence", "dir.tflite"), ("dir.tflite", "is a folder")),
    (("divergence", "missing.tflite"), ("missing.tflite", "does not exist")),
    (("profile", "corrupt.tflite", "--device", "dir.toml"), ("dir.toml", "does not exist")),
    (("profile", "-x.tflite"), ("No such option", "--", "profile --help")),
    (("gate", "corrupt.toml"), ("corrupt.toml", "not valid TOML")),
    (("gate", "dir.toml"), ("dir.toml", "not readable")),
    (("check-sparse", "corrupt.tflite"), ("corrupt.tflite", "not a TFLite flatbuffer")),
    (("check-sparse", "dir.pt2"), ("dir.pt2", "is a folder")),
    (("devices", "--bogus"), ("No such option", "devices --help")),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2(bad_files, argv, words):
    assert_one_line_error(cli(*argv, cwd=bad_files), *words)


# ---------------------------------------------------------------- device fields never become options

EVIL_HOST = "-oProxyCommand=touch {canary}"


def test_descriptor_host_that_is_an_option_is_refused(tmp_path):
    canary = tmp_path / "x"
    desc = tmp_path / "evil.toml"
    desc.write_text('name = "evil"\nkind = "linux-arm"\nsoc = "x"\ndelegates = ["cpu"]\n'
                    f'[connection]\nhost = "{EVIL_HOST.format(canary=canary)}"\n')
    (tmp_path / "m.tflite").write_bytes(b"x")
    res = cli("profile", "m.tflite", "--device", "evil.toml", cwd=tmp_path)
    line = assert_one_line_error(res, "evil.toml", "host", "-oProxyCommand", "not a hostname")
    assert not canary.exists(), line
    with pytest.raises(UserError, match="not a hostname"):
        load_descriptor(desc)


def test_user_config_fields_that_are_options_are_refused(tmp_path):
    canary = tmp_path / "x"
    cfg = tmp_path / "devices.toml"
    cfg.write_text(f'[raspberry-pi-5]\nhost = "{EVIL_HOST.format(canary=canary)}"\n')
    res = cli("devices", cwd=tmp_path, env={"EDGECONV_DEVICES_CONFIG": str(cfg)})
    assert_one_line_error(res, str(cfg), "[raspberry-pi-5]", "not a hostname")
    assert not canary.exists()


@pytest.mark.parametrize("conn, word", [
    ({"host": "-oProxyCommand=touch /tmp/x"}, "not a hostname"),
    ({"host": "-x@board"}, "user name"),
    ({"host": "pi@board;touch /tmp/x"}, "not a hostname"),
    ({"host": "pi@b", "port": "22 -oX"}, "port"),
    ({"host": "pi@b", "identity": "-oProxyCommand=x"}, "may not start with '-'"),
    ({"host": "pi@b", "remote_tmp": "-t"}, "may not start with '-'"),
    ({"host": "pi@b", "remote_tmp": "tmp"}, "absolute"),
    ({"serial": "-s"}, "adb serial"),
    ({"benchmark_binary": "--help"}, "may not start with '-'"),
])
def test_connection_fields_are_validated(tmp_path, monkeypatch, conn, word):
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(tmp_path / "none.toml"))
    dev = Device(name="b", kind=DeviceKind.LINUX_ARM, soc="x", clusters=(), delegates=(Delegate.CPU,),
                 default_delegate=Delegate.CPU, connection=conn)
    with pytest.raises(UserError, match=word):
        connection(dev)


def test_ssh_target_refuses_option_host_and_puts_double_dash_before_the_destination():
    from edgeconv.devices.ssh import SshTarget

    with pytest.raises(UserError, match="not a hostname"):
        SshTarget(name="b", host="-oProxyCommand=touch /tmp/x")
    t = SshTarget(name="b", host="pi@board.local", port=2222, connect_timeout=7)
    assert t.ssh_argv(["true"]) == [
        "ssh", "-p", "2222", "-o", "BatchMode=yes", "-o", "ConnectTimeout=7", "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3", "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
        "--", "pi@board.local", "true"]
    scp = t.scp_argv([Path("rel/-m.tflite")], "/tmp/e.1")
    assert scp[-3:] == ["--", str(Path("rel/-m.tflite").absolute()), "pi@board.local:/tmp/e.1/"]
    v6 = SshTarget(name="b", host="pi@fe80::1")
    assert v6.ssh_argv(["true"])[-2] == "pi@fe80::1" and v6.scp_argv([Path("/m")], "/t")[-1] == "pi@[fe80::1]:/t/"


def test_android_serial_that_is_an_option_is_bad_input_not_unreachable(tmp_path, monkeypatch):
    from edgeconv.devices.android import AndroidBackend

    cfg = tmp_path / "devices.toml"
    cfg.write_text('[pixel-7]\nserial = "-a"\n')
    monkeypatch.setenv("EDGECONV_DEVICES_CONFIG", str(cfg))
    import edgeconv.devices.catalog  # noqa: F401
    from edgeconv.registry import DEVICES

    with pytest.raises(UserError, match=r"\[pixel-7\].*adb serial"):
        AndroidBackend().reachable(DEVICES.get("pixel-7"))
