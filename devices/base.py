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
import shlex
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeconv.errors import UserError

if TYPE_CHECKING:
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
    return Device(name=d["name"], kind=kind, soc=d["soc"], clusters=clusters, delegates=delegates,
                  default_delegate=default, aliases=tuple(d.get("aliases", ())), accelerators=accels,
                  cost=cost, connection=dict(d.get("connection", {})),
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
    """The descriptor's [connection] table with the user's config for this device laid over it."""
    merged = dict(device.connection)
    path = user_config_path()
    if path.is_file():
        try:
            cfg = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"devices config {path} is not valid TOML: {e}") from None
        for key in (device.name, *device.aliases):
            merged.update(cfg.get(key, {}))
    return merged


def resolve(name_or_path: str) -> Device:
    """A registered device name or alias, or a path to a descriptor .toml of the user's own."""
    if name_or_path.endswith(".toml"):
        if not Path(name_or_path).is_file():
            raise UserError(f"device descriptor {name_or_path} does not exist")
        return load_descriptor(Path(name_or_path))
    from edgeconv.registry import DEVICES
    import edgeconv.devices.catalog  # noqa: F401  (fills DEVICES)

    return DEVICES.get(name_or_path)


def backend_for(device: Device) -> Backend:
    if device.kind is DeviceKind.HOST:
        from edgeconv.devices.host import HostBackend
        return HostBackend()
    if device.kind is DeviceKind.ANDROID:
        from edgeconv.devices.android import AndroidBackend
        return AndroidBackend()
    if device.kind is DeviceKind.LINUX_ARM:
        from edgeconv.devices.ssh import SshBackend
        return SshBackend()
    if device.kind is DeviceKind.EMULATED:
        from edgeconv.devices.arm64 import EmulatedArm64Backend
        return EmulatedArm64Backend()
    from edgeconv.devices.apple import AppleBackend
    return AppleBackend()


def quote_command(argv: list[str]) -> str:
    """One remote command line from an argument list, every piece quoted.

    ssh and `adb shell` hand the remote shell a single string; quoting each piece here is the only
    place such a string is made, so a path with spaces or `;` stays one argument."""
    return " ".join(shlex.quote(str(a)) for a in argv)


# ---------------------------------------------------------------- reports


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
