"""What a device is (a descriptor read from devices/descriptors/*.toml) and what a backend does.

A descriptor is data: name, aliases, kind, SoC, CPU clusters, accelerators with the delegates that
reach them, and the cost-model constants with their source. A backend is a real client for one
kind of device (host runtimes, adb, ssh, a Mac over ssh) with two calls:

    reachable(device) -> str | None      # None: it can be measured now; else why not
    measure(artifact, device, options) -> LatencyReport

Where to reach a device (an ssh host, an adb serial, a benchmark_model binary) is the user's, not
the descriptor's: it comes from the descriptor's optional [connection] table, overridden by the
user's devices config (`$EDGECONV_DEVICES_CONFIG`, else ~/.config/edgeconv/devices.toml).
"""
from __future__ import annotations

import dataclasses
import enum
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeconv.errors import UserError

if TYPE_CHECKING:
    from edgeconv.exporters.formats import Format
    from edgeconv.results import LatencyReport

DESCRIPTOR_DIR = Path(__file__).parent / "descriptors"


class DeviceKind(enum.Enum):
    ANDROID = "android"
    LINUX_ARM = "linux-arm"
    APPLE = "apple"
    HOST = "host"
    EMULATED = "emulated"  # qemu-user arm64 (devices/arm64.py): behaviour only, never latency


class Delegate(enum.Enum):
    """How a runtime reaches a compute unit. Names follow benchmark_model's flags where they exist."""

    CPU = "cpu"  # the runtime's reference/default CPU kernels (benchmark_model --use_xnnpack=false)
    XNNPACK = "xnnpack"
    GPU = "gpu"
    NNAPI = "nnapi"
    HEXAGON = "hexagon"  # the TFLite Hexagon delegate (hexagon_nn; Snapdragon 835-865 class DSPs)
    QNN = "qnn"  # Qualcomm's QNN TFLite delegate (HTP/NPU of newer Snapdragons), external delegate
    CUDA = "cuda"  # onnxruntime CUDAExecutionProvider (Jetson)
    ANE = "ane"  # Core ML compute units CPU_AND_NE
    ALL = "all"  # Core ML compute units ALL


@dataclasses.dataclass(frozen=True)
class Cluster:
    name: str  # core type, e.g. "Cortex-X1"
    cores: int
    max_ghz: float
    core_ids: tuple[int, ...] = ()  # Linux CPU numbers, used for taskset pinning


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str
    kind: str  # "gpu" | "npu" | "dsp"
    delegates: tuple[Delegate, ...]


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    kind: DeviceKind
    soc: str
    clusters: tuple[Cluster, ...]
    delegates: tuple[Delegate, ...]  # every delegate a profile may ask for on this device
    default_delegate: Delegate
    aliases: tuple[str, ...] = ()
    accelerators: tuple[Accelerator, ...] = ()
    cost: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    connection: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    android_models: tuple[str, ...] = ()  # `adb devices -l` model: values that are this device
    description: str = ""
    source: str = ""  # the descriptor file

    @property
    def cores(self) -> int:
        return sum(c.cores for c in self.clusters)

    @property
    def big_cores(self) -> tuple[int, ...]:
        """CPU ids of the fastest cluster(s): where a latency benchmark should be pinned."""
        if not self.clusters:
            return ()
        top = max(c.max_ghz for c in self.clusters)
        return tuple(i for c in self.clusters if c.max_ghz == top for i in c.core_ids)

    def check_delegate(self, delegate: Delegate) -> None:
        if delegate not in self.delegates:
            offered = ", ".join(d.value for d in self.delegates)
            raise UserError(f"delegate {delegate.value!r} is not available on {self.name}; "
                            f"it offers: {offered}")


@dataclasses.dataclass(frozen=True)
class ProfileOptions:
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    delegate: Delegate | None = None  # None: the device's default
    per_op: bool = True
    benchmark_binary: str | None = None  # android: a benchmark_model built for the device
    timeout_s: float = 300.0  # each remote step; a device that stops answering fails after this

    def __post_init__(self) -> None:
        for name in ("threads", "runs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be 0 or more, got {self.warmup}")


class Backend(Protocol):
    def reachable(self, device: Device) -> str | None: ...

    def measure(self, artifact: Path, device: Device, options: ProfileOptions) -> "LatencyReport": ...


# ---------------------------------------------------------------- descriptors


def load_descriptor(path: Path) -> Device:
    """Read one descriptor TOML; a malformed file names the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"device descriptor {path} is not readable TOML: {e}") from None
    try:
        return _device_from_dict(data, Path(path))
    except KeyError as e:
        raise UserError(f"device descriptor {path} lacks the key {e.args[0]!r}") from None
    except ValueError as e:
        raise UserError(f"device descriptor {path}: {e}") from None


def _device_from_dict(d: dict[str, Any], path: Path) -> Device:
    kind = DeviceKind(d["kind"])
    clusters = tuple(Cluster(name=c["name"], cores=int(c["cores"]), max_ghz=float(c["max_ghz"]),
                             core_ids=tuple(c.get("core_ids", ())))
                     for c in d.get("cpu", {}).get("clusters", ()))
    accels = tuple(Accelerator(name=a["name"], kind=a["kind"],
                               delegates=tuple(Delegate(x) for x in a.get("delegates", ())))
                   for a in d.get("accelerators", ()))
    delegates = tuple(Delegate(x) for x in d["delegates"])
    default = Delegate(d.get("default_delegate", delegates[0].value))
    if default not in delegates:
        raise ValueError(f"default_delegate {default.value!r} is not among its delegates")
    cost = d.get("cost", {})
    if cost and "source" not in cost:
        raise ValueError("[cost] must say where its constants came from (key 'source')")
    conn = d.get("connection", {})
    if not isinstance(conn, dict):
        raise ValueError("[connection] must be a table")
    check_connection(conn)  # ValueError: named with the file by load_descriptor
    return Device(name=d["name"], kind=kind, soc=d["soc"], clusters=clusters, delegates=delegates,
                  default_delegate=default, aliases=tuple(d.get("aliases", ())), accelerators=accels,
                  cost=cost, connection=dict(conn),
                  android_models=tuple(d.get("android", {}).get("models", ())),
                  description=d.get("description", ""), source=str(path))


def shipped_descriptors() -> list[Device]:
    return [load_descriptor(p) for p in sorted(DESCRIPTOR_DIR.glob("*.toml"))]


def user_config_path() -> Path:
    env = os.environ.get("EDGECONV_DEVICES_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edgeconv" / "devices.toml"


def connection(device: Device) -> dict[str, Any]:
    """The descriptor's [connection] table with the user's config for this device laid over it.
    Every field is checked (see check_connection): a malformed one is a one-line UserError naming
    where it came from, never an argument handed to ssh/scp/adb."""
    try:
        check_connection(device.connection)
    except ValueError as e:
        raise UserError(f"device {device.name} ({device.source or 'its descriptor'}) [connection]: {e}") from None
    merged = dict(device.connection)
    path = user_config_path()
    if path.is_file():
        try:
            cfg = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"devices config {path} is not valid TOML: {e}") from None
        for key in (device.name, *device.aliases):
            table = cfg.get(key, {})
            try:
                if not isinstance(table, dict):
                    raise ValueError("must be a table of connection keys")
                check_connection(table)
            except ValueError as e:
                raise UserError(f"devices config {path} [{key}]: {e}") from None
            merged.update(table)
    return merged


# ---------------------------------------------------------------- connection fields (validation)
#
# Connection fields end up as arguments of ssh, scp and adb (and of the remote command). A value that
# starts with "-" would be read as an option (`host = "-oProxyCommand=..."` runs a command), so each
# field is checked here, once, for every source (descriptor, user config, a Device built in code).

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_PATH_KEYS = ("identity", "known_hosts", "python", "remote_tmp", "benchmark_binary", "hexagon_libs", "qnn_delegate")


def split_host(value: Any) -> tuple[str, str]:
    """(user or "", host) of an ssh `[user@]host`; ValueError unless the user looks like a login
    name and the host like a hostname, an IPv4 or an IPv6 address (brackets optional)."""
    import ipaddress

    if not isinstance(value, str) or not value:
        raise ValueError(f"host = {value!r} must be a non-empty string like \"user@192.168.1.20\"")
    user, _, host = value.rpartition("@")
    if user and not _USER_RE.fullmatch(user):
        raise ValueError(f"host = {value!r}: the user name {user!r} must be letters, digits, '.', '_' or '-' "
                         "and may not start with '-'")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        if ":" in bare:
            ipaddress.IPv6Address(bare)
            return user, bare
    except ValueError:
        pass
    if not _HOSTNAME_RE.fullmatch(host) or len(host) > 253:
        raise ValueError(f"host = {value!r} is not a hostname or IP address (write it like \"pi@192.168.1.20\" "
                         "or \"board.local\"; it may not start with '-')")
    return user, host


def check_serial(value: Any) -> str:
    if not isinstance(value, str) or not _SERIAL_RE.fullmatch(value):
        raise ValueError(f"serial = {value!r} is not an adb serial (letters, digits, '.', '_', ':', '-', "
                         "not starting with '-'; copy it from `adb devices`)")
    return value


def check_connection(conn: dict[str, Any]) -> None:
    """ValueError naming the first malformed connection field."""
    for key, value in conn.items():
        if key == "host":
            split_host(value)
        elif key == "serial":
            check_serial(value)
        elif key in ("port",):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValueError(f"port = {value!r} must be a whole number from 1 to 65535")
        elif key == "connect_timeout":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"connect_timeout = {value!r} must be a positive number of seconds")
        elif key == "development_team":
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9]{1,20}", value):
                raise ValueError(f"development_team = {value!r} must be an Apple team id like \"ABCDE12345\"")
        elif key in _PATH_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{key} = {value!r} must be a non-empty path")
            if value.startswith("-"):
                raise ValueError(f"{key} = {value!r} may not start with '-' (it would be read as an option); "
                                 "write ./" + value + " for a relative path")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"{key} = {value!r} holds a control character")
            if key == "remote_tmp" and not value.startswith("/"):
                raise ValueError(f"remote_tmp = {value!r} must be an absolute path on the board, like \"/tmp\"")


def quote_command(argv: list[str]) -> str:
    """One remote command line from an argument list, every piece quoted.

    ssh and `adb shell` hand the remote shell a single string; quoting each piece here is the only
    place such a string is made, so a path with spaces or `;` stays one argument."""
    return " ".join(shlex.quote(str(a)) for a in argv)


# ---------------------------------------------------------------- reports


def artifact_format(artifact: Path, families: tuple[str, ...], backend: str, fix: str) -> "Format":
    """The artifact's format, when it exists and this backend's runtime loads that family of files;
    else a one-line UserError naming what the backend times and `fix`."""
    from edgeconv.exporters.formats import format_for

    if not artifact.exists():
        raise UserError(f"artifact {artifact} does not exist")
    fmt = format_for(artifact)
    if fmt.family not in families:
        raise UserError(f"{artifact.name} is in the {fmt.name} format; {backend} times "
                        f"{' and '.join(families)} files: {fix}")
    return fmt


def stats(samples_ms: list[float] | tuple[float, ...]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(samples_ms, dtype=float)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "std_ms": float(a.std())}


def report_from_runner(data: dict[str, Any], device: Device, method: str,
                       artifact_sha256: str, extra_env: dict[str, str] | None = None) -> "LatencyReport":
    """A LatencyReport from remote_runner.py's JSON (the same on this host and on a board)."""
    from edgeconv.results import LatencyReport

    samples = tuple(float(x) for x in data["samples_ms"])
    env = {k: str(v) for k, v in data.get("environment", {}).items()}
    env.update({"delegate": str(data.get("delegate", "")), "load_ms": f"{data.get('load_ms', 0.0):.3f}",
                "first_ms": f"{data.get('first_ms', 0.0):.3f}",
                "runtime_version": str(data.get("runtime_version", ""))})
    if data.get("per_op_note"):
        env["per_op"] = data["per_op_note"]
    env.update(extra_env or {})
    return LatencyReport(device=device.name, method=method, runtime=str(data["runtime"]),
                         artifact_sha256=artifact_sha256, threads=int(data["threads"]),
                         warmup=int(data["warmup"]), iterations=len(samples), samples_ms=samples,
                         peak_memory_mb=data.get("peak_memory_mb"), environment=env,
                         per_op=tuple(data.get("per_op", ())), **stats(samples))
