"""The `host` backend: ai-edge-litert (XNNPACK or reference kernels) and onnxruntime on this machine.

The artifact is timed by remote_runner.py in a fresh subprocess of this Python: the same loop the
ssh backend runs on a board, and a clean process so peak memory is the model's, not ours.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.devices.base import (Delegate, Device, DeviceKind, ProfileOptions, artifact_format,
                                   report_from_runner)
from edgeconv.errors import UserError
from edgeconv.registry import BACKENDS
from edgeconv.results import LatencyReport

if TYPE_CHECKING:
    from edgeconv.exporters.formats import Format

RUNNER = Path(__file__).with_name("remote_runner.py")
FAMILIES = ("tflite", "onnx")  # what remote_runner.py loads (its --format)


def runner_argv(python: str, runner: str, model: str, options: ProfileOptions, delegate: Delegate,
                workdir: str, pin: tuple[int, ...] = (), family: str = "tflite") -> list[str]:
    argv = [python, runner, model, "--format", family, "--threads", str(options.threads), "--warmup", str(options.warmup),
            "--runs", str(options.runs), "--delegate", delegate.value, "--workdir", workdir,
            "--deadline-s", str(int(options.timeout_s))]
    if options.per_op:
        argv.append("--per-op")
    if pin:
        argv += ["--pin", ",".join(map(str, pin))]
    return argv


def parse_runner_output(stdout: str, stderr: str, returncode: int, where: str) -> dict:
    """The runner's JSON, or a one-line error saying what the runner said went wrong."""
    if returncode == 0:
        for line in reversed(stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    last = (stderr.strip().splitlines() or [f"exit code {returncode}"])[-1]
    raise UserError(f"timing on {where} failed: {last}")


def check_artifact(artifact: Path) -> "Format":
    """The artifact's format, if remote_runner.py can time it."""
    return artifact_format(artifact, FAMILIES, "this backend", "export with --target tflite-int8 or onnx")


@BACKENDS.register(DeviceKind.HOST.value)
class HostBackend:
    def reachable(self, device: Device) -> str | None:
        import importlib.util

        missing = [m for m in ("ai_edge_litert", "onnxruntime") if importlib.util.find_spec(m) is None]
        if len(missing) == 2:
            return "neither ai-edge-litert nor onnxruntime is installed: pip install edgeconv"
        return None

    def measure(self, artifact: Path, device: Device, options: ProfileOptions) -> LatencyReport:
        from edgeconv.models import file_sha256

        artifact = Path(artifact)
        fmt = check_artifact(artifact)
        delegate = options.delegate or device.default_delegate
        device.check_delegate(delegate)
        with tempfile.TemporaryDirectory(prefix="edgeconv-host-") as work:
            argv = runner_argv(sys.executable, str(RUNNER), str(artifact.resolve()), options, delegate, work,
                               family=fmt.family)
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=options.timeout_s)
            except subprocess.TimeoutExpired:
                raise UserError(f"timing {artifact.name} on this host took over {options.timeout_s:.0f} s; "
                                "lower --runs or raise the timeout") from None
            data = parse_runner_output(proc.stdout, proc.stderr, proc.returncode, "this host")
        return report_from_runner(data, device, "measured-host", file_sha256(artifact))
