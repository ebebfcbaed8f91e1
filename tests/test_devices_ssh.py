"""The linux-arm (ssh) and apple transports against a real OpenSSH server on 127.0.0.1.

The "board" is this host reached through a loopback sshd started by the fixture (throwaway host and
client keys, free port). The device is defined here, not shipped: its numbers are this host's, and
the report says so (device "loopback-board", environment hostname = this host).
"""
from __future__ import annotations

import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from devices_artifacts import export_onnx, export_tflite
from edgeconv.devices.base import Delegate, Device, DeviceKind, ProfileOptions
from edgeconv.devices.profile import headline, profile
from edgeconv.devices.ssh import SshBackend, SshTarget
from edgeconv.errors import UserError
from edgeconv.models import file_sha256
from sshd_fixture import sshd_missing, start_sshd, stop_sshd

pytestmark = pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or "")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ssh-artifacts")
    return {"tflite": export_tflite(d / "tiny.tflite"), "onnx": export_onnx(d / "tiny.onnx"),
            "onnx_ext": export_onnx(d / "tiny_ext.onnx", external_data=True)}


@pytest.fixture
def board(tmp_path):
    """The remote side's temp root: checked empty after each run."""
    root = tmp_path / "board tmp"  # a space in the remote path on purpose
    root.mkdir()
    return root


def loopback(sshd, board: Path, **conn) -> Device:
    return Device(name="loopback-board", kind=DeviceKind.LINUX_ARM, soc="this host over loopback ssh",
                  clusters=(), delegates=(Delegate.XNNPACK, Delegate.CPU), default_delegate=Delegate.XNNPACK,
                  connection={"host": sshd.host, "port": sshd.port, "identity": str(sshd.identity),
                              "known_hosts": str(sshd.known_hosts), "python": sys.executable,
                              "remote_tmp": str(board), **conn})


def test_reachable_and_why_not(sshd, board, tmp_path):
    b = SshBackend()
    assert b.reachable(loopback(sshd, board)) is None
    nowhere = Device(name="pi", kind=DeviceKind.LINUX_ARM, soc="x", clusters=(), delegates=(Delegate.CPU,),
                     default_delegate=Delegate.CPU)
    assert "no ssh host configured for pi" in b.reachable(nowhere)
    closed = b.reachable(loopback(sshd, board, port=1, connect_timeout=3))
    assert closed.startswith("ssh to ") and "refused" in closed.lower()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    assert "host key verification failed" in b.reachable(loopback(sshd, board, known_hosts=str(empty))).lower()


def test_linux_arm_end_to_end_tflite_and_onnx(sshd, board, artifacts):
    dev = loopback(sshd, board)
    r = SshBackend().measure(artifacts["tflite"], dev, ProfileOptions(runs=15, warmup=2))
    assert r.method == "measured-device" and r.device == "loopback-board" and r.runtime == "ai-edge-litert"
    assert headline(r) == "measured on loopback-board"
    assert r.environment["hostname"] == platform.node()  # labelled: these are this host's numbers
    assert r.environment["ssh_host"] == sshd.host
    assert r.iterations == 15 == len(r.samples_ms) and r.min_ms <= r.p50_ms <= r.p90_ms
    assert r.artifact_sha256 == file_sha256(artifacts["tflite"])
    assert list(board.iterdir()) == []
    o = SshBackend().measure(artifacts["onnx_ext"], dev, ProfileOptions(runs=10, warmup=1, threads=2))
    assert o.runtime == "onnxruntime" and o.threads == 2 and any(op["op"] == "Conv" for op in o.per_op)
    assert list(board.iterdir()) == []


def test_profile_through_a_user_descriptor_file(sshd, board, artifacts, tmp_path):
    desc = tmp_path / "loopback.toml"
    desc.write_text(
        'name = "loopback-board"\nkind = "linux-arm"\nsoc = "this host over loopback ssh"\n'
        'delegates = ["xnnpack", "cpu"]\n[connection]\n'
        f'host = "{sshd.host}"\nport = {sshd.port}\nidentity = "{sshd.identity}"\n'
        f'known_hosts = "{sshd.known_hosts}"\npython = "{sys.executable}"\nremote_tmp = "{board}"\n')
    r = profile(str(artifacts["onnx"]), str(desc), ProfileOptions(runs=10, warmup=1), require_measured=True)
    assert headline(r) == "measured on loopback-board" and r.iterations == 10
    assert list(board.iterdir()) == []


def test_paths_with_spaces_and_semicolons_survive(sshd, board, artifacts, tmp_path):
    odd = tmp_path / "my model; touch PWNED $(id).tflite"
    shutil.copy(artifacts["tflite"], odd)
    r = SshBackend().measure(odd, loopback(sshd, board), ProfileOptions(runs=5, warmup=1))
    assert r.iterations == 5 and r.artifact_sha256 == file_sha256(odd)
    assert not list(Path.home().glob("PWNED*")) and not list(tmp_path.glob("PWNED*"))
    assert list(board.iterdir()) == []


def test_runner_failure_is_one_line_and_cleans_up(sshd, board, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"this is not a flatbuffer")
    with pytest.raises(UserError, match=r"timing on loopback-board \(.*\) failed: "):
        SshBackend().measure(broken, loopback(sshd, board), ProfileOptions(runs=2))
    assert list(board.iterdir()) == []
    with pytest.raises(UserError, match="failed"):
        SshBackend().measure(broken, loopback(sshd, board, python="/nonexistent/python3"), ProfileOptions(runs=2))
    assert list(board.iterdir()) == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError):
                    continue
                if ppid == parent:
                    out.append(int(entry.name))
                    frontier.append(int(entry.name))
    return out


def test_connection_dropped_mid_run(sshd, board, artifacts, tmp_path, monkeypatch):
    local_tmp = tmp_path / "local tmp"
    local_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(local_tmp))  # anything the backend made locally lands here
    dev = loopback(sshd, board)
    caught: list[BaseException] = []

    def run():
        try:  # long enough to be killed in the middle
            SshBackend().measure(artifacts["tflite"], dev, ProfileOptions(runs=10_000_000, warmup=0, timeout_s=120))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            caught.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    pidfile = None
    while time.monotonic() < deadline and pidfile is None:
        pidfile = next(iter(board.glob("edgeconv.*/runner.pid")), None)
        time.sleep(0.1)
    assert pidfile is not None, "the runner never started on the board"
    time.sleep(0.5)
    runner_pid = int(pidfile.read_text())
    # Drop the connection: kill the sshd processes serving it (not the runner, not the listener).
    for pid in _descendants(sshd.proc.pid):
        if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
            os.kill(pid, signal.SIGKILL)
    t.join(timeout=60)
    assert not t.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], UserError), caught
    assert "lost the ssh connection to loopback-board" in str(caught[0])
    assert "during 'run the benchmark'" in str(caught[0])
    deadline = time.monotonic() + 10
    while _alive(runner_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(runner_pid), "the runner kept running on the board"
    assert list(board.iterdir()) == []  # nothing left on the board
    assert list(local_tmp.iterdir()) == []  # nor here


def test_ssh_argv_never_uses_a_local_shell():
    t = SshTarget(name="b", host="pi@10.0.0.2", port=2222, identity="/k/id", known_hosts="/k/kh")
    argv = t.ssh_argv(["python3", "/tmp/x y/r.py", "a;b"])
    assert argv[:3] == ["ssh", "-p", "2222"] and "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
    # `--` ends ssh's options before the destination: neither host nor command can be an option
    assert argv[-3:] == ["--", "pi@10.0.0.2", "python3 '/tmp/x y/r.py' 'a;b'"]
    assert argv.count("--") == 1
    scp = t.scp_argv([Path("/m/a b.tflite")], "/tmp/edgeconv.1")
    assert scp[:3] == ["scp", "-q", "-s"] and scp[-3:] == ["--", "/m/a b.tflite", "pi@10.0.0.2:/tmp/edgeconv.1/"]
