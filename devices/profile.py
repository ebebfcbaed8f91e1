"""`profile`: measure an artifact on a device when it is reachable, otherwise predict it.

The report always says which it was: `headline()` is its first line — `measured on <device>`,
`measured on this host`, or `predicted (<basis>)` — and the LatencyReport's `method` field says the
same in JSON. A model reference (package.module:factory, .pt2) is exported first with the
pipeline, and the artifact it produced is what is measured (its sha256 is in the report) — only
when it passed parity: an artifact that does not compute what its model computes is refused (exit 1,
the failed comparison named) unless `allow_failed_parity`, which still says so first and records it.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgeconv.devices.base import Delegate, Device, DeviceKind, ProfileOptions
from edgeconv.devices.catalog import backend_for, resolve
from edgeconv.errors import ParityFailure, UserError

if TYPE_CHECKING:
    from edgeconv.context import Progress
    from edgeconv.results import Artifact, LatencyReport

def headline(report: "LatencyReport") -> str:
    if report.method == "measured-host":
        return "measured on this host"
    if report.method == "measured-device":
        return f"measured on {report.device}"
    if report.method == "predicted":
        return f"predicted ({report.basis or 'basis not stated'})"
    note = report.environment.get("note", "")
    return f"{report.method} on {report.device}" + (f" ({note})" if note else "")


def parity_failure(artifact: "Artifact", out_dir: str) -> str | None:
    """One line naming each failed parity comparison of an exported artifact; None when it passed."""
    p = artifact.parity
    if p is None or p.passed:
        return None
    failed = "; ".join(f"vs {d.reference}: {d.reason or 'failed'}" for d in p.diffs if not d.passed)
    manifest = Path(out_dir) / "edgeconv.json"
    text = f"parity failed for {artifact.target} in {p.runtime}: {failed} (details in {manifest})"
    return " ".join(text.split())  # one line, whatever the reasons hold


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def artifact_for(ref: str, target: str, out_dir: str, progress: "Progress | None" = None, *,
                 allow_failed_parity: bool = False, warn: Callable[[str], None] = _stderr) -> tuple[Path, str | None]:
    """`ref` itself when it is an artifact; else export the model it names to `target` first.

    Returns (artifact, parity failure line or None). An export that failed parity raises
    ParityFailure (exit 1) with that line, unless `allow_failed_parity`: then `warn` gets it first."""
    from edgeconv.exporters.formats import find_format

    path = Path(ref)
    if find_format(path) is not None:
        if not path.exists():
            raise UserError(f"artifact {ref} does not exist")
        return path, None
    from edgeconv.config import ExportOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import export, resolve_targets

    resolve_targets((target,))
    manifest = export(load_model(ref), ExportOptions(targets=(target,), out_dir=out_dir), progress)
    artifact = manifest.artifacts[0]
    failure = parity_failure(artifact, out_dir)
    if failure is not None:
        if not allow_failed_parity:
            raise ParityFailure(f"{failure}; not profiling an artifact that does not compute what its model "
                                "computes (--allow-failed-parity profiles it anyway)")
        warn(f"warning: {failure}; profiling it anyway (--allow-failed-parity)")
    return Path(out_dir) / artifact.path, failure


def predict(artifact: Path, device: Device, why_not_measured: str,
            delegate: "Delegate | None" = None) -> "LatencyReport":
    from edgeconv.devices.predict import predict as cost_model

    # The delegate picks the compute unit the prediction is for (xnnpack/cpu → CPU, qnn/nnapi → NPU).
    report = cost_model(artifact, device.name, delegate=delegate.value if delegate else None)
    env = {**report.environment, "not_measured_because": why_not_measured}
    return dataclasses.replace(report, environment=env)


def profile(ref: str, device: str | Device, options: ProfileOptions, *, target: str = "tflite-int8",
            out_dir: str = "edgeconv-out", require_measured: bool = False,
            progress: "Progress | None" = None, allow_failed_parity: bool = False,
            warn: Callable[[str], None] = _stderr) -> "LatencyReport":
    dev = device if isinstance(device, Device) else resolve(device)
    if options.delegate is not None:
        dev.check_delegate(options.delegate)  # before any export: a wrong delegate is bad input
    artifact, failure = artifact_for(ref, target, out_dir, progress, allow_failed_parity=allow_failed_parity,
                                     warn=warn)
    report = _measure_or_predict(artifact, dev, options, require_measured)
    if failure is not None:  # the JSON report carries it too, not only the terminal
        report = dataclasses.replace(report, environment={**report.environment, "parity": f"FAILED: {failure}"})
    return report


def _measure_or_predict(artifact: Path, dev: Device, options: ProfileOptions,
                        require_measured: bool) -> "LatencyReport":
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
