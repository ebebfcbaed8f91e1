"""Results are data: frozen dataclasses that round-trip through JSON.

`to_dict` / `from_dict` walk the type hints, so a new record needs no serialisation code.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for frozen dataclasses: JSON round-trip through type hints."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                kwargs[f.name] = _load(hints[f.name], data[f.name])
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def _dump(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _dump(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    return v


def _load(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _load(non_none[0], v) if len(non_none) == 1 else v
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(args[0], x) for x in v)
        return tuple(_load(a, x) for a, x in zip(args, v))
    if origin is list:
        return [_load(args[0], x) for x in v]
    if origin is dict:
        return {k: _load(args[1], x) for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(v)
    return v


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename: no half-written file is ever seen."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        # mkstemp makes the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclasses.dataclass(frozen=True)
class StageRecord(Record):
    """What one stage (prepare, capture, a pass, an exporter, a parity check) did."""

    stage: str
    changed: bool
    seconds: float
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class QuantParams(Record):
    """Quantization of one tensor: per-tensor when `axis` is None."""

    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None


@dataclasses.dataclass(frozen=True)
class TensorSpec(Record):
    name: str
    dtype: str
    shape: tuple[int, ...]
    layout: str = ""
    quant: QuantParams | None = None


@dataclasses.dataclass(frozen=True)
class OutputDiff(Record):
    """One artifact's outputs against one reference, on the held-out inputs."""

    reference: str  # "torch-fp32", "torch-quant-sim", "torch-after-passes", "torch-int8-weights", "source-model"
    max_abs: float
    mean_abs: float
    max_steps: float | None  # error in steps (see step_unit), comparisons against the simulation only
    cosine: float
    top1_agreement: float | None  # raw, on every sample
    passed: bool
    reason: str = ""
    max_rel: float | None = None  # max |Δ| / the reference output's range (max − min)
    step_unit: str = ""  # "output scale" (int8 output) or "range/255" (float output: 8-bit grid over its range)
    decisive_samples: int | None = None  # samples whose fp32 top-1/top-2 margin exceeds the tolerance
    top1_agreement_decisive: float | None = None  # what the verdict uses
    checked: tuple[str, ...] = ()  # the criteria applied, with their limits: no comparison passes unstated
    # int8 vs the simulation: relative L2 error ‖out − sim‖/‖sim‖, and the simulation's own ‖sim − fp32‖/‖fp32‖
    rel_l2: float | None = None
    sim_rel_l2_vs_fp32: float | None = None
    warning: str = ""  # e.g. the quantized program itself is far from fp32 (quality, not faithfulness)


@dataclasses.dataclass(frozen=True)
class HostKernelCheck(Record):
    """The same artifact through this host's fast kernels against the reference kernels that
    gave the verdict: a deviation is this CPU's kernels, not the artifact (a warning, not a fail)."""

    engine: str
    max_abs: float
    max_steps: float | None
    limit: float
    deviates: bool
    message: str = ""


@dataclasses.dataclass(frozen=True)
class TensorDrift(Record):
    """One int8 tensor of an artifact against the torch simulation's, in quantization steps."""

    tensor: str  # FX name of the float tensor torch quantized
    layer: str  # the conv/linear (module path) whose output it is, else the op
    artifact_tensor: str
    scale: float
    zero_point: int
    max_steps: float
    mean_steps: float
    share_off: float  # fraction of elements that differ at all
    share_over_one: float = 0.0  # fraction of elements off by more than one step


@dataclasses.dataclass(frozen=True)
class LayerIsolation(Record):
    """Each int8 layer of an artifact judged alone: the simulation's layer fed the artifact's own
    int8 inputs, its output compared in steps. Separates a lowering error (one layer off) from
    rounding flips that cascade through a deep net (every layer within a step, the output not)."""

    samples: int
    layers: int  # int8 tensors judged: matched between the artifact and the simulation, and fed
    unmatched: int  # simulation tensors not judged alone (each named in `excluded`): unverified
    limit: float
    worst_layer: str
    worst_steps: float
    over: tuple[str, ...] = ()  # "layer: N steps (x % of values)" for each layer above the limit
    passed: bool = True
    excluded: tuple[str, ...] = ()  # "tensor (layer): why it was not judged alone", every one
    covered: int = 0  # re-layouts (views) of a judged tensor with its scale: the format keeps one tensor
    # "tensor (layer): judged within …": tensors the file computes inside a larger op, checked as part
    # of the judged tensors every path from them reaches (counted in `covered`, each named here)
    within: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class OutputCheck(Record):
    """One output judged by what it means (edgeconv.outputs): its kind, declared or inferred, and
    its task metric against torch fp32, against the int8 simulation, and the simulation's own."""

    name: str  # the output's name in the artifact
    index: int
    kind: str  # edgeconv.outputs.OutputKind value
    kind_source: str  # "declared" or "inferred: why"
    vs_fp32: dict[str, float]
    vs_sim: dict[str, float] | None = None  # int8 targets
    sim_vs_fp32: dict[str, float] | None = None  # the quantized program itself against fp32
    metric: str = ""  # the one the verdict holds to a floor
    floor: float | None = None
    floor_from: str = ""
    passed: bool = True
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ParityReport(Record):
    runtime: str  # the engine that ran the verdict's check, exactly
    samples: int
    diffs: tuple[OutputDiff, ...]
    accuracy: float | None = None  # task accuracy of the artifact where labels exist
    reference_accuracy: float | None = None  # fp32 torch on the same samples
    host_kernels: HostKernelCheck | None = None
    layers: LayerIsolation | None = None  # int8 targets: each layer in isolation
    outputs: tuple[OutputCheck, ...] = ()  # each output by its kind's task metric

    @property
    def passed(self) -> bool:
        return (all(d.passed for d in self.diffs) and (self.layers is None or self.layers.passed)
                and all(o.passed for o in self.outputs))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "passed": self.passed}  # derived, but what a CI script reads first


@dataclasses.dataclass(frozen=True)
class WeightQuant(Record):
    """How one weight tensor of an artifact is quantized (read back from the file)."""

    op: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    num_scales: int
    axis: int | None


@dataclasses.dataclass(frozen=True)
class FloatOps(Record):
    """What of an int8 artifact still computes in float, read back from the file: each entry
    'OP tensor' (TFLite: DEQUANTIZE, QUANTIZE from float, ops with float inputs; ONNX: ops fed by
    something other than DequantizeLinear; CoreML: ops fed by something other than dequantize)."""

    count: int
    ops: tuple[str, ...] = ()
    requantize: int = 0  # int8 → int8 QUANTIZE ops (integer rescaling, not float)
    how: str = ""  # what was read to find them


@dataclasses.dataclass(frozen=True)
class DelegatePlan(Record):
    """How one accelerator delegate would run an artifact: measured on this host (XNNPACK) or
    predicted from the delegate's support table (edgeconv.devices.delegates), and said which."""

    delegate: str
    how: str  # "measured" | "predicted" | "unavailable: <why>"
    ops: int = 0
    partitions: int = 0
    cpu_ops: int = 0
    fallbacks: tuple[str, ...] = ()  # "op label: [rule]" for the first ops left to the CPU
    title: str = ""  # what the table describes, e.g. "QNN execution provider (ONNX Runtime, Qualcomm HTP)"

    @property
    def whole(self) -> bool:
        return self.how != "" and not self.how.startswith("unavailable") and self.cpu_ops == 0


@dataclasses.dataclass(frozen=True)
class Artifact(Record):
    target: str
    path: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parity: ParityReport | None
    stages: tuple[StageRecord, ...] = ()
    weights: tuple[WeightQuant, ...] = ()
    scales_from: str = ""  # how the artifact's scales were ensured to be edgeconv's
    float_layers: tuple[str, ...] = ()  # layers kept in float (--max-drop), honoured by every int8 exporter
    float_ops: FloatOps | None = None  # int8 artifacts: what still runs in float (None: not an int8 target)
    delegates: tuple[DelegatePlan, ...] = ()  # per accelerator delegate: partitions and CPU ops
    # A target that could not be exported or checked: the one line naming the stage and the op
    # (no file then; `parity` says unverified with the same reason).
    failure: str = ""


@dataclasses.dataclass(frozen=True)
class PruneEpoch(Record):
    """One epoch of `--prune-epochs` fine-tuning: mean training loss, accuracy on the training
    batches (as trained) and on the validation split held back from the training data."""

    epoch: int
    sparsity: float  # the schedule's sparsity in force at the end of the epoch
    loss: float
    train_accuracy: float
    val_accuracy: float | None
    seconds: float


@dataclasses.dataclass(frozen=True)
class PruneLevel(Record):
    """One sparsity level of the trade-off: task metric of the pruned torch model against the
    predicted speed-up of XNNPACK's sparse path on ARM (a prediction, never a measurement)."""

    sparsity: float
    method: str  # "gradual, N epochs" | "one-shot"
    metric: str  # "accuracy" (labels) | "top-1 agreement with the source model"
    score: float  # on the held-out evaluation samples, the same ones parity uses
    drop: float  # the source model's score minus `score`
    val_drop: float | None  # on the validation split (what chooses the exported level)
    zeros_1x1: float  # fraction of the 1x1 conv weights that are zero
    predicted_speedup: float  # whole-model, ARM, XNNPACK sparse vs dense: PREDICTED
    seconds: float  # fine-tuning (or pruning) time for this level on this host
    exported: bool = False
    epochs: tuple[PruneEpoch, ...] = ()


@dataclasses.dataclass(frozen=True)
class PruneReport(Record):
    """`--prune-epochs` / `--sparsity a,b,c`: each level, which one the artifacts carry, and how
    the speed-up was predicted."""

    levels: tuple[PruneLevel, ...]
    chosen: float
    why: str
    max_drop: float
    train_data: str
    val_samples: int
    speedup_basis: str
    one_by_one_flop_share: float  # share of the model's conv/linear multiply-adds in 1x1 convs

    def table(self) -> str:
        rows = [f"{'sparsity':>8}  {'method':<18} {self.levels[0].metric if self.levels else 'metric':<10} "
                f"{'drop':>7}  {'1x1 zeros':>9}  {'speed-up (predicted, ARM)':>25}"]
        for lv in self.levels:
            rows.append(f"{lv.sparsity:>8.0%}  {lv.method:<18} {lv.score:<10.4f} {100 * lv.drop:>6.2f}p  "
                        f"{lv.zeros_1x1:>9.1%}  {lv.predicted_speedup:>24.2f}x" + ("  <- exported" if lv.exported else ""))
        return "\n".join(rows)


@dataclasses.dataclass(frozen=True)
class Manifest(Record):
    edgeconv_version: str
    model: str
    model_sha256: str
    options: dict[str, Any]
    calibration: dict[str, Any]
    stages: tuple[StageRecord, ...]
    artifacts: tuple[Artifact, ...]
    tool_versions: dict[str, str]
    reference_accuracy: float | None = None
    host: dict[str, str] = dataclasses.field(default_factory=dict)  # CPU model and the ISA flags int8 kernels use
    # which layers the int8 artifacts quantize (QuantConfig file form): `--quant-config` replays it
    quant_config: dict[str, Any] | None = None
    # how the model was named (--model, --weights, --input-shape): `edgeconv check OUT_DIR` reloads it
    model_ref: dict[str, Any] | None = None
    # --prune-epochs / --sparsity a,b,c: the levels tried, the one exported, the predicted speed-ups
    pruning: PruneReport | None = None


@dataclasses.dataclass(frozen=True)
class LatencyReport(Record):
    """A latency figure tied to the exact bytes measured and to how it was measured."""

    device: str
    method: str  # "measured-device" | "measured-host" | "predicted"
    runtime: str
    artifact_sha256: str
    threads: int
    warmup: int
    iterations: int
    p50_ms: float
    p90_ms: float | None  # None: not measured (a prediction is one number, with no spread)
    min_ms: float
    std_ms: float = 0.0
    samples_ms: tuple[float, ...] = ()
    peak_memory_mb: float | None = None
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    per_op: tuple[dict[str, Any], ...] = ()
    basis: str = ""  # for predictions: what the model was calibrated on, its held-out error


@dataclasses.dataclass(frozen=True)
class GateResult(Record):
    name: str
    metric: str
    value: float | None
    limit: float
    passed: bool
    message: str = ""
