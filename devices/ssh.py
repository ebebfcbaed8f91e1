"""The `linux-arm` backend: a board reached over ssh (OpenSSH client, argument lists only).

One run: make a private temp dir on the board, copy the model (and an ONNX file's external data)
and remote_runner.py into it, run the runner with the board's python, read its JSON back, and in
`finally` kill the runner if it is still alive and remove the dir. Every step has a timeout;
ServerAlive probes notice a board that vanished mid-run. No local temp files are made.

Connection keys (descriptor [connection] table or the user's devices config):
    host = "pi@192.168.1.20"      # required; user@ optional
    port = 22
    identity = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"   # host keys are checked strictly against this file
    python = "python3"            # the board's interpreter with numpy and ai-edge-litert/onnxruntime
    remote_tmp = "/tmp"
    connect_timeout = 10
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from edgeconv.devices.base import (Device, DeviceKind, ProfileOptions, check_connection, connection, quote_command,
                                   report_from_runner, split_host)
from edgeconv.devices.host import RUNNER, check_artifact, parse_runner_output, runner_argv
from edgeconv.errors import UserError
from edgeconv.registry import BACKENDS
from edgeconv.results import LatencyReport

CONFIG_HINT = "set host = \"user@address\" under [{name}] in {config}"


@dataclasses.dataclass(frozen=True)
class SshTarget:
    name: str  # the device, for messages
    host: str
    port: int = 22
    identity: str = ""
    known_hosts: str = ""
    python: str = "python3"
    remote_tmp: str = "/tmp"
    connect_timeout: int = 10

    def __post_init__(self) -> None:
        # Also for a target built in code: nothing that reaches ssh's argv may be read as an option.
        try:
            check_connection({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                              if f.name != "name" and (getattr(self, f.name) or f.name == "host")})
        except ValueError as e:
            raise UserError(f"ssh connection for {self.name}: {e}") from None

    @property
    def scp_host(self) -> str:
        """The destination as scp's `host:path` needs it: an IPv6 address in brackets."""
        user, host = split_host(self.host)
        host = f"[{host}]" if ":" in host else host
        return f"{user}@{host}" if user else host

    @classmethod
    def from_device(cls, device: Device) -> "SshTarget | str":
        """The target, or why there is none."""
        from edgeconv.devices.base import user_config_path

        conn = connection(device)
        if not conn.get("host"):
            return (f"no ssh host configured for {device.name}; "
                    + CONFIG_HINT.format(name=device.name, config=user_config_path()))
        fields = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in conn.items() if k in fields}
        for k in ("identity", "known_hosts"):
            if kw.get(k):
                kw[k] = str(Path(kw[k]).expanduser())
        return cls(name=device.name, **kw)

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.identity:
            opts += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_argv(self, remote_argv: list[str]) -> list[str]:
        # `--` ends ssh's options before the destination, so neither the host nor the command can be
        # read as an option (OpenSSH stops option parsing for good after `--`). ssh joins everything
        # after the host into one string for the remote shell: quote each piece.
        return ["ssh", "-p", str(self.port), *self._options(), "--", self.host, quote_command(remote_argv)]

    def ssh_shell_argv(self, script: str) -> list[str]:
        """For the few steps that need the shell (`$(cat pid)`); `script` must hold only quoted parts."""
        return ["ssh", "-p", str(self.port), *self._options(), "--", self.host, script]

    def scp_argv(self, local: list[Path], remote_dir: str) -> list[str]:
        # -s: SFTP protocol, so the remote path is taken literally, never parsed by a shell.
        # `--` before the operands; local files absolute, so none reads as an option or as `host:path`.
        return ["scp", "-q", "-s", "-P", str(self.port), *self._options(), "--",
                *[os.path.abspath(p) for p in local], f"{self.scp_host}:{remote_dir}/"]

    def run(self, argv: list[str], timeout: float, step: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{self.name} ({self.host}) did not finish '{step}' within {timeout:.0f} s; "
                            "check the board or raise the timeout") from None
        if proc.returncode == 255:  # ssh's own failure: connection refused, dropped, host key, auth
            raise UserError(f"lost the ssh connection to {self.name} ({self.host}:{self.port}) during "
                            f"'{step}': {_last_line(proc.stderr) or 'connection closed'}")
        return proc

    def check(self, timeout: float | None = None) -> str | None:
        if shutil.which("ssh") is None:
            return "the OpenSSH client is not installed (apt-get install openssh-client)"
        try:
            proc = subprocess.run(self.ssh_argv(["true"]), capture_output=True, text=True,
                                  timeout=timeout or self.connect_timeout + 5)
        except subprocess.TimeoutExpired:
            return f"ssh to {self.host}:{self.port} timed out"
        if proc.returncode != 0:
            return f"ssh to {self.host}:{self.port} failed: {_last_line(proc.stderr) or proc.returncode}"
        return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if "host key verification failed" in text.lower():
        last += (" (the board's host key is not in the known_hosts file; check its fingerprint, then "
                 "add it: ssh-keyscan -p PORT HOST >> KNOWN_HOSTS)")
    return last


def cleanup_script(remote_dir: str) -> str:
    """Kill the runner if it still runs, then remove the run's dir. Only quoted pieces inside."""
    from shlex import quote

    pid = quote(f"{remote_dir}/runner.pid")
    return (f"if [ -f {pid} ]; then kill \"$(cat {pid})\" 2>/dev/null; fi; "
            f"rm -rf -- {quote(remote_dir)}")


def run_remote(target: SshTarget, files: list[Path], build_argv: Callable[[str], list[str]],
               timeout_s: float, what: str, recursive: bool = False) -> dict:
    """Make a private temp dir on the remote, copy `files` into it, run `build_argv(dir)` there and
    return its JSON; in `finally` kill what still runs and remove the dir."""
    step = target.connect_timeout + 30
    made = target.run(target.ssh_argv(["mktemp", "-d", f"{target.remote_tmp}/edgeconv.XXXXXX"]),
                      step, "make a temp dir")
    if made.returncode != 0:
        raise UserError(f"cannot make a temp dir under {target.remote_tmp} on {target.name}: "
                        f"{_last_line(made.stderr)}")
    remote_dir = made.stdout.strip()
    failure: UserError | None = None
    try:
        copy = target.scp_argv(files, remote_dir)
        if recursive:  # an .mlpackage is a folder
            copy.insert(1, "-r")
        copied = target.run(copy, timeout_s, "copy the model")
        if copied.returncode != 0:
            raise UserError(f"copying {files[0].name} to {target.name} failed: {_last_line(copied.stderr)}")
        proc = target.run(target.ssh_argv(build_argv(remote_dir)), timeout_s + step, what)
        return parse_runner_output(proc.stdout, proc.stderr, proc.returncode, f"{target.name} ({target.host})")
    except UserError as e:
        failure = e
        raise
    finally:
        try:
            target.run(target.ssh_shell_argv(cleanup_script(remote_dir)), step, "clean up")
        except UserError as e:
            raise UserError(f"{failure or e}; cleaning up failed too, so {target.host} may still hold "
                            f"{remote_dir}") from None


@BACKENDS.register(DeviceKind.LINUX_ARM.value)
class SshBackend:
    def reachable(self, device: Device) -> str | None:
        target = SshTarget.from_device(device)
        return target if isinstance(target, str) else target.check()

    def measure(self, artifact: Path, device: Device, options: ProfileOptions) -> LatencyReport:
        from edgeconv.models import file_sha256

        artifact = Path(artifact)
        fmt = check_artifact(artifact)
        device.check_delegate(options.delegate or device.default_delegate)
        target = SshTarget.from_device(device)
        if isinstance(target, str):
            raise UserError(target)
        # Pin to the fastest cluster when the threads fit in it: that is the latency a user sees.
        big = device.big_cores
        pin = big if big and options.threads <= len(big) else ()
        delegate = options.delegate or device.default_delegate
        data = run_remote(
            target, [artifact, *fmt.companions(artifact), RUNNER],  # e.g. ONNX external data travels with it
            lambda d: runner_argv(target.python, f"{d}/{RUNNER.name}", f"{d}/{artifact.name}",
                                  options, delegate, d, pin, fmt.family),
            options.timeout_s, "run the benchmark")
        return report_from_runner(data, device, "measured-device", file_sha256(artifact),
                                  {"ssh_host": target.host, "pinned_cpus": ",".join(map(str, pin))})
