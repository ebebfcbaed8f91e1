"""The `predicted` backend: latency from the roofline cost model, never mistaken for a measurement.

    predict("model.tflite", "galaxy-s24")  ->  LatencyReport(method="predicted", basis="calibrated on …")

Two kinds of basis, always stated in the report:
- calibrated: the device has constants fitted to qai-hub-models' published TFLite latencies
  (devices/costmodel/fitted.json, written by bench/fit_costmodel.py); the basis quotes the fitted
  models and the held-out error of that device × precision.
- uncalibrated: no published measurements (the Pixel line, Raspberry Pi …); rates come from the
  peak figures in the device descriptor's [cost] table times efficiencies that are assumed, not
  fitted. Useful for relative comparisons only, and labelled so.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgeconv.errors import UserError

if TYPE_CHECKING:
    from edgeconv.devices.base import Device, ProfileOptions
    from edgeconv.costops import Op
    from edgeconv.devices.costmodel.roofline import Constants
    from edgeconv.results import LatencyReport

FITTED = Path(__file__).parent / "costmodel" / "fitted.json"
PRECISIONS = ("fp32", "fp16", "int8")
UNITS = ("npu", "cpu")
# Which compute unit a delegate reaches: the calibrated constants are for the NPU (QNN/NNAPI path).
DELEGATE_UNIT = {"cpu": "cpu", "xnnpack": "cpu", "qnn": "npu", "nnapi": "npu", "hexagon": "npu", "ane": "npu",
                 "all": "npu"}

# The support table (devices/delegates) that predicts which ops a delegate leaves to the CPU, per
# artifact format; None: the delegate the calibration is for (the NPU). Qualcomm's QNN TFLite
# delegate publishes no op table: a .tflite predicted for it is taken as run whole, and said so.
PARTITION_TABLE = {("nnapi", "tflite"): "nnapi", ("hexagon", "tflite"): "hexagon", (None, "tflite"): "nnapi",
                   ("qnn", "onnx"): "qnn-ep", (None, "onnx"): "qnn-ep",
                   ("ane", "coreml"): "ane", ("all", "coreml"): "ane", (None, "coreml"): "ane"}

# Descriptor name -> the device's name in qai-hub-models perf.yaml. A descriptor may also say it
# itself with `[cost] published_device = "…"`.
PUBLISHED_NAMES = {
    "galaxy-s24": "Samsung Galaxy S24",
    "galaxy-s25": "Samsung Galaxy S25",
    "galaxy-s22": "Samsung Galaxy S22 5G",
    "galaxy-s26": "Samsung Galaxy S26",
}

# Efficiencies assumed for uncalibrated devices (fraction of the published peak), typical of
# XNNPACK-class CPU kernels: GEMM-shaped convs run near peak, depthwise and elementwise ops are
# bound by memory. Not fitted to anything; the report says so.
ASSUMED_ETA = {"conv1x1": 0.6, "conv": 0.5, "depthwise": 0.15, "fc": 0.3, "pool": 0.1,
               "elementwise": 0.1, "move": 0.1}
ASSUMED_ETA_MEM = 0.5
ASSUMED_LAUNCH_S = 2e-6
ASSUMED_FIXED_S = 20e-6


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@functools.lru_cache(maxsize=1)
def fitted() -> dict[str, Any]:
    return json.loads(FITTED.read_text())


def calibrated_devices() -> dict[str, str]:
    """slug -> published device name, for every device with fitted constants."""
    return {slug(e["device"]): e["device"] for e in fitted()["entries"].values()}


def _descriptor(name: str) -> "Device | None":
    from edgeconv.registry import DEVICES
    import edgeconv.devices.catalog  # noqa: F401  (fills DEVICES)

    return DEVICES.get(name) if name in DEVICES else None


def _published_name(name: str, desc: "Device | None") -> str | None:
    if desc is not None:
        return desc.cost.get("published_device") or PUBLISHED_NAMES.get(desc.name)
    return calibrated_devices().get(slug(name))


def _calibrated(published: str, precision: str) -> tuple["Constants", str] | None:
    from edgeconv.devices.costmodel.roofline import Constants

    # The NPU runs a float model in fp16, as in the published "float" measurements.
    run_as = "fp16" if precision == "fp32" else precision
    e = fitted()["entries"].get(f"{published}|NPU|{run_as}")
    if e is None:
        return None
    ho = e["held_out"]
    note = " (fp32 artifact; the NPU runs it in fp16)" if run_as != precision else ""
    basis = (f"calibrated on {published} ({len(e['fit_models'])} models, NPU {run_as} via TFLite, "
             f"qai-hub-models 0.65.0), held-out median APE {ho['median_ape']:.1f} %, "
             f"p90 {ho['p90_ape']:.1f} % over {ho['n']} held-out models{note}")
    return Constants.from_dict(e["constants"]), basis


def _uncalibrated(desc: "Device", precision: str, unit: str | None) -> tuple["Constants", str]:
    from edgeconv.devices.costmodel.roofline import BYTES_PER_ELEMENT, Constants

    cost = desc.cost
    if "npu_int8_tops" in cost and unit != "cpu":  # Apple: the Neural Engine runs fp16 and int8 alike
        peak_ops, what = float(cost["npu_int8_tops"]) * 1e12, f"Neural Engine {cost['npu_int8_tops']} TOPS"
    elif unit == "npu":
        raise UserError(f"{desc.name} has neither calibrated nor published NPU rates ([cost] npu_int8_tops in "
                        f"{desc.source or 'its descriptor'}); predict its CPU with --delegate xnnpack, or measure it")
    elif "big_cluster_fp32_gflops" in cost:
        fp32 = float(cost["big_cluster_fp32_gflops"]) * 1e9
        int8 = float(cost.get("big_cluster_int8_gops", 4 * cost["big_cluster_fp32_gflops"])) * 1e9
        peak_ops = {"fp32": fp32, "fp16": 2 * fp32, "int8": int8}[precision]
        what = f"big CPU cluster {peak_ops / 1e9:.0f} G{'FLOP' if precision != 'int8' else 'OP'}/s {precision}"
    else:
        raise UserError(f"{desc.name} has no published {'CPU ' if unit == 'cpu' else ''}peak rates to predict from; add "
                        f"big_cluster_fp32_gflops and memory_gbps to [cost] in {desc.source or 'its descriptor'}")
    if "memory_gbps" not in cost:
        raise UserError(f"{desc.name} has no memory_gbps in [cost] of {desc.source or 'its descriptor'}; "
                        "add the DRAM bandwidth to predict")
    bw = float(cost["memory_gbps"]) * 1e9
    macs = peak_ops / 2  # one MAC is two ops
    c = Constants({k: macs * eta for k, eta in ASSUMED_ETA.items()}, bw * ASSUMED_ETA_MEM, bw * ASSUMED_ETA_MEM,
                  ASSUMED_LAUNCH_S, ASSUMED_FIXED_S, BYTES_PER_ELEMENT[precision])
    basis = (f"uncalibrated: from published peak rates ({what}, DRAM {cost['memory_gbps']} GB/s; "
             f"{cost.get('source', 'source not stated')}) with assumed efficiencies "
             f"(GEMM convs {ASSUMED_ETA['conv']:.0%}-{ASSUMED_ETA['conv1x1']:.0%}, depthwise "
             f"{ASSUMED_ETA['depthwise']:.0%}, memory {ASSUMED_ETA_MEM:.0%}); no measurement of this "
             "device backs it")
    return c, basis


def constants_for(device: str, precision: str, unit: str | None = None) -> tuple["Constants", str, str]:
    """(constants, basis, device display name) for a device name, alias or published device slug.

    unit None takes the best basis there is (calibrated NPU constants first); "cpu" or "npu" asks
    for that compute unit, e.g. because the profile asked for the XNNPACK delegate."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if unit is not None and unit not in UNITS:
        raise UserError(f"compute unit {unit!r} is not one of {', '.join(UNITS)}")
    desc = _descriptor(device)
    published = _published_name(device, desc)
    if published and unit != "cpu":
        got = _calibrated(published, precision)
        if got:
            return (*got, desc.name if desc else slug(published))
    if desc is not None and desc.cost:
        return (*_uncalibrated(desc, precision, unit), desc.name)
    if desc is not None:
        raise UserError(f"{desc.name} has no cost-model constants ([cost] in its descriptor); "
                        "measure it instead, or pick a calibrated device: " + ", ".join(sorted(calibrated_devices())))
    from edgeconv.registry import DEVICES

    choices = sorted(set(DEVICES.names()) | set(calibrated_devices()))
    raise UserError(f"unknown device {device!r} for prediction; choose one of: {', '.join(choices)}")


def predict(artifact: "str | Path | Sequence[Op]", device: str, precision: str | None = None,
            delegate: str | None = None) -> "LatencyReport":
    """Predicted latency of an artifact (.tflite/.onnx) or an op list on a device, per op.

    precision: as stored in the artifact unless given. delegate (xnnpack, cpu, qnn, nnapi …): the
    compute unit to predict for; None takes the best-calibrated one."""
    from edgeconv.devices.costmodel.parse import load_ops
    from edgeconv.devices.costmodel.roofline import op_seconds
    from edgeconv.results import LatencyReport

    sha = ""
    if isinstance(artifact, (str, Path)):
        from edgeconv.models import file_sha256

        ops, stored = load_ops(artifact)
        sha = file_sha256(artifact)
        source = Path(artifact).name
    else:
        ops, stored, source = list(artifact), "fp32", "op list"
    precision = precision or stored
    if delegate is not None and delegate not in DELEGATE_UNIT:
        raise UserError(f"the cost model has no compute unit for delegate {delegate!r}; "
                        f"choose one of: {', '.join(DELEGATE_UNIT)}")
    consts, basis, name = constants_for(device, precision, DELEGATE_UNIT.get(delegate or ""))
    split = None
    if isinstance(artifact, (str, Path)) and _on_accelerator(delegate, basis):
        split = _placement(Path(artifact), delegate, precision)
    per_op = []
    for op in ops:
        s, bound = op_seconds(op, consts)
        row = {"name": op.name, "class": op.cls.value, "macs": op.macs,
               "bytes": round(op.bytes(consts.bytes_per_element)), "ms": s * 1e3, "bound": bound}
        if split is not None and split.cpu is not None:
            on_cpu = _file_index(op.name) in split.cpu
            row.update(runs_on="cpu" if on_cpu else "accelerator", ms=row["ms"] * (split.rho if on_cpu else 1.0))
        per_op.append(row)
    if split is not None and split.handoffs:
        per_op.append({"name": f"(hand-offs: {split.handoffs} between accelerator and CPU)", "class": "handoff",
                       "macs": 0, "bytes": 0, "ms": split.handoffs * split.handoff_s * 1e3, "bound": "handoff"})
    per_op.append({"name": "(invocation overhead)", "class": "fixed", "macs": 0, "bytes": 0,
                   "ms": consts.fixed_s * 1e3, "bound": "fixed"})
    total = sum(p["ms"] for p in per_op)
    env = {"precision": precision, "delegate": delegate or "", "stored_precision": stored, "ops": str(len(ops)), "source": source,
           "macs": str(sum(o.macs for o in ops if o.cls.value in ("conv", "conv1x1", "depthwise", "fc")))}
    if split is not None:
        env["placement"] = split.note
        basis = f"{basis}; {split.note}"
    return LatencyReport(device=name, method="predicted", runtime="roofline cost model", artifact_sha256=sha,
                         threads=0, warmup=0, iterations=0, p50_ms=total, p90_ms=None, min_ms=total,
                         environment=env, per_op=tuple(per_op), basis=basis)


@dataclasses.dataclass(frozen=True)
class _Split:
    note: str  # what decided the placement, for the report's basis
    cpu: frozenset[int] | None = None  # the file's op indices left to the CPU; None: not predicted
    handoffs: int = 0
    rho: float = 1.0
    handoff_s: float = 0.0


def _on_accelerator(delegate: str | None, basis: str) -> bool:
    """Whether the constants are for an accelerator: asked for one, or (no delegate named) the
    best basis found was the calibrated NPU or Apple's Neural Engine."""
    if delegate is not None:
        return DELEGATE_UNIT.get(delegate) == "npu"
    return basis.startswith("calibrated") or "Neural Engine" in basis


def _file_index(cost_op_name: str) -> int:
    """The file's op index a cost-model op came from (its formats name them `<kind>_<index>`)."""
    tail = cost_op_name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _placement(path: Path, delegate: str | None, precision: str) -> _Split:
    """Which ops the delegate's support table leaves to the CPU, and the fitted cost of that."""
    from edgeconv.devices import delegates
    from edgeconv.devices.costmodel.partitions import constants, handoffs
    from edgeconv.exporters.formats import format_for

    fmt = format_for(path).name
    table = PARTITION_TABLE.get((delegate, fmt))
    if table is None:
        return _Split(f"placement not predicted: no support table for {delegate or 'the accelerator'} on a {fmt} "
                      "file; taken as run whole")
    c = constants()
    if c is None:
        return _Split("placement not predicted: devices/costmodel/partitions.json is missing "
                      "(python bench/fit_partitions.py); taken as run whole")
    v = delegates.check(path, table)
    cpu = frozenset(set(range(v.ops)) - set(v.delegated))
    k = handoffs(delegates.read_ops(path, fmt), v.partitions)
    note = (f"{table}.toml predicts {v.cpu_ops} of {v.ops} ops on the CPU, {len(v.partitions)} partition(s), "
            f"{k} hand-off(s)")
    if v.cpu_ops:
        note += "; " + c.basis
    return _Split(note, cpu, k, c.rho_for(precision), c.handoff_s)


class PredictedBackend:
    """The cost model behind the same two calls as a measuring backend."""

    def reachable(self, device: "Device") -> str | None:
        try:
            constants_for(device.name, "fp32")
        except UserError as e:
            return str(e)
        return None

    def measure(self, artifact: Path, device: "Device", options: "ProfileOptions") -> "LatencyReport":
        return predict(artifact, device.name, delegate=options.delegate.value if options.delegate else None)
