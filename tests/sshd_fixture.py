"""A real OpenSSH server on 127.0.0.1 for the linux-arm backend tests.

Debian's sshd (openssh-server) is started from its installed binary with a throwaway host key, a
throwaway client key and a config in a temp dir; it listens on a free loopback port and is stopped
when the test ends. It touches nothing outside that dir (no system sshd, no ~/.ssh).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_missing() -> str | None:
    if not Path(SSHD).exists():
        return "sshd is not installed: apt-get install openssh-server (see .ci/services.sh)"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: apt-get install openssh-client"
    return None


@dataclasses.dataclass
class Sshd:
    proc: subprocess.Popen
    port: int
    identity: Path
    known_hosts: Path
    user: str

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes: children of the listener we started."""
        kids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid:
                    kids.append(int(entry.name))
        return kids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(workdir: Path) -> Sshd:
    workdir.mkdir(parents=True, exist_ok=True)
    hostkey, idkey = workdir / "host_ed25519", workdir / "id_ed25519"
    for key in (hostkey, idkey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                       stdin=subprocess.DEVNULL)
    (workdir / "authorized_keys").write_text(Path(f"{idkey}.pub").read_text())
    os.chmod(workdir / "authorized_keys", 0o600)
    port = _free_port()
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server")
                 if Path(p).exists()), "internal-sftp")
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {hostkey}", f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", f"Subsystem sftp {sftp}", "LogLevel ERROR", "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation dir must exist
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    known = workdir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {Path(f'{hostkey}.pub').read_text().split(' #')[0].strip()}\n")
    import getpass

    return Sshd(proc=proc, port=port, identity=idkey, known_hosts=known, user=getpass.getuser())


def stop_sshd(sshd: Sshd) -> None:
    sshd.proc.terminate()
    try:
        sshd.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sshd.proc.kill()
        sshd.proc.wait()
