"""`profile`: measure an artifact on a device when it is reachable, otherwise predict it.

The report always says which it was: `headline()` is its first line — `measured on <device>`,
`measured on this host`, or `predicted (<basis>)` — and the LatencyReport's `method` field says the
same in JSON. A model reference (package.module:factory, .pt2) is exported first with the
pipeline, and the artifact it produced is what is measured (its sha256 is in the report).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.devices.base import Delegate, Device, DeviceKind, ProfileOptions, backend_for, resolve
from edgeconv.errors import UserError

if TYPE_CHECKING:
    from edgeconv.context import Progress
    from edgeconv.results import LatencyReport

ARTIFACT_SUFFIXES = (".tflite", ".onnx", ".mlpackage", ".mlmodel")


def headline(report: "LatencyReport") -> str:
    if report.method == "measured-host":
        return "measured on this host"
    if report.method == "measured-device":
        return f"measured on {report.device}"
    if report.method == "predicted":
        return f"predicted ({report.basis or 'basis not stated'})"
    note = report.environment.get("note", "")
    return f"{report.method} on {report.device}" + (f" ({note})" if note else "")


def artifact_for(ref: str, target: str, out_dir: str, progress: "Progress | None" = None) -> Path:
    """`ref` itself when it is an artifact; else export the model it names to `target` first."""
    path = Path(ref)
    if path.suffix in ARTIFACT_SUFFIXES:
        if not path.exists():
            raise UserError(f"artifact {ref} does not exist")
        return path
    from edgeconv.config import ExportOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import export, resolve_targets

    resolve_targets((target,))
    manifest = export(load_model(ref), ExportOptions(targets=(target,), out_dir=out_dir), progress)
    return Path(out_dir) / manifest.artifacts[0].path


def predict(artifact: Path, device: Device, why_not_measured: str,
            delegate: "Delegate | None" = None) -> "LatencyReport":
    from edgeconv.devices.predict import predict as cost_model

    # The delegate picks the compute unit the prediction is for (xnnpack/cpu → CPU, qnn/nnapi → NPU).
    report = cost_model(artifact, device.name, delegate=delegate.value if delegate else None)
    env = {**report.environment, "not_measured_because": why_not_measured}
    return dataclasses.replace(report, environment=env)


def profile(ref: str, device: str | Device, options: ProfileOptions, *, target: str = "tflite-int8",
            out_dir: str = "edgeconv-out", require_measured: bool = False,
            progress: "Progress | None" = None) -> "LatencyReport":
    dev = device if isinstance(device, Device) else resolve(device)
    if options.delegate is not None:
        dev.check_delegate(options.delegate)  # before any export: a wrong delegate is bad input
    artifact = artifact_for(ref, target, out_dir, progress)
    backend = backend_for(dev)
    why = backend.reachable(dev)
    if why is None:
        return backend.measure(artifact, dev, options)
    if require_measured:
        raise UserError(f"{dev.name} is not reachable: {why} (--require-measured forbids a prediction)")
    if dev.kind is DeviceKind.HOST:
        raise UserError(f"this host cannot run {artifact.name}: {why}")
    if dev.kind is DeviceKind.EMULATED:  # no prediction stands in for an emulator
        raise UserError(f"{dev.name} is not available: {why}")
    return predict(artifact, dev, why, options.delegate)
