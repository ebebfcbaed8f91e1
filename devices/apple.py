"""The `apple` backend: a Mac reached over ssh runs coremltools' MLModelBenchmarker there, on the Mac
or on an iPhone attached to it, and sends back load and predict statistics.

Same transport as the linux-arm backend (devices/ssh.py): a private temp dir on the Mac, the
.mlpackage (a folder, copied recursively) and apple_runner.py pushed into it, one run, JSON back,
the dir removed in `finally`. Nothing of this can run on Linux: Core ML prediction is macOS-only.

Connection keys (as for ssh, plus):
    host = "me@my-mac.local"
    python = "/opt/homebrew/bin/python3"   # with coremltools >= 8.3
    iphone = true                          # benchmark on the attached iPhone, not the Mac
    development_team = "ABCDE12345"        # signs coremltools' runner app for the iPhone
"""
from __future__ import annotations

from pathlib import Path

from edgeconv.devices.base import Delegate, Device, DeviceKind, ProfileOptions, artifact_format, connection, stats
from edgeconv.devices.ssh import SshTarget, run_remote
from edgeconv.errors import UserError
from edgeconv.registry import BACKENDS
from edgeconv.results import LatencyReport

RUNNER = Path(__file__).with_name("apple_runner.py")
COMPUTE_UNITS = {Delegate.ALL: "ALL", Delegate.CPU: "CPU_ONLY", Delegate.GPU: "CPU_AND_GPU",
                 Delegate.ANE: "CPU_AND_NE"}


def runner_argv(python: str, remote_dir: str, model_name: str, options: ProfileOptions,
                delegate: Delegate, conn: dict) -> list[str]:
    argv = [python, f"{remote_dir}/{RUNNER.name}", f"{remote_dir}/{model_name}",
            "--compute-units", COMPUTE_UNITS[delegate], "--runs", str(options.runs),
            "--warmup", str(options.warmup)]
    if options.per_op:
        argv.append("--per-op")
    if conn.get("iphone"):
        argv.append("--iphone")
        if conn.get("development_team"):
            argv += ["--development-team", str(conn["development_team"])]
    return argv


def to_report(data: dict, device: Device, delegate: Delegate, options: ProfileOptions,
              sha256: str, host: str) -> LatencyReport:
    samples = tuple(float(x) for x in data["predict"]["samples_ms"])
    if not samples:
        raise UserError(f"the Mac returned no predict timings for {device.name}")
    load = data.get("load", {}).get("stats") or {}
    env = {**{k: str(v) for k, v in data.get("environment", {}).items()},
           "ran_on": str(data.get("ran_on", "")), "compute_units": str(data.get("compute_units", "")),
           "delegate": delegate.value, "mac_host": host,
           "load_ms_median": f"{load.get('median', float('nan')):.3f}",
           "runtime_version": str(data.get("runtime_version", ""))}
    if data.get("per_op"):
        env["per_op"] = "Core ML estimates: measured predict time split by the compute plan's cost weights"
    return LatencyReport(device=device.name, method="measured-device", runtime="coreml",
                         artifact_sha256=sha256, threads=0, warmup=options.warmup,
                         iterations=len(samples), samples_ms=samples, environment=env,
                         per_op=tuple(data.get("per_op", ())), **stats(samples))


def artifact_sha256(path: Path) -> str:
    from edgeconv.models import file_sha256  # handles .mlpackage folders too

    return file_sha256(path)


@BACKENDS.register(DeviceKind.APPLE.value)
class AppleBackend:
    def reachable(self, device: Device) -> str | None:
        target = SshTarget.from_device(device)
        if isinstance(target, str):
            return target.replace("no ssh host", "no Mac (ssh host)")
        return target.check()

    def measure(self, artifact: Path, device: Device, options: ProfileOptions) -> LatencyReport:
        artifact = Path(artifact)
        artifact_format(artifact, ("coreml",), "the apple backend", "export with --target coreml")
        delegate = options.delegate or device.default_delegate
        device.check_delegate(delegate)
        target = SshTarget.from_device(device)
        if isinstance(target, str):
            raise UserError(target.replace("no ssh host", "no Mac (ssh host)"))
        conn = connection(device)
        data = run_remote(target, [artifact, RUNNER],
                          lambda d: runner_argv(target.python, d, artifact.name, options, delegate, conn),
                          options.timeout_s, "run the Core ML benchmark", recursive=True)
        return to_report(data, device, delegate, options, artifact_sha256(artifact), target.host)
