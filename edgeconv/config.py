"""Options as frozen dataclasses with enums: typed, hashable, printable into the manifest."""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from edgeconv.errors import UserError
from edgeconv.results import Record


class Granularity(enum.Enum):
    PER_CHANNEL = "per-channel"
    PER_TENSOR = "per-tensor"


class CalibMethod(enum.Enum):
    MINMAX = "min-max"
    MOVING_AVERAGE = "moving-average"  # exponential moving average of per-batch min/max
    PERCENTILE = "percentile"  # clip at the p-th percentile (QuantOptions.percentile)
    ENTROPY = "entropy"  # TensorRT-style KL-divergence threshold
    MSE = "mse"  # clipping range that minimises the quantization mean squared error


@dataclasses.dataclass(frozen=True)
class QuantOptions(Record):
    weights: Granularity = Granularity.PER_CHANNEL
    method: CalibMethod = CalibMethod.MINMAX
    samples: int = 128
    percentile: float = 99.99  # used by CalibMethod.PERCENTILE only


INT8 = "int8"


@dataclasses.dataclass(frozen=True)
class QuantConfig(Record):
    """Which conv/linear layers are int8, as data with levels, the way coremltools'
    OptimizationConfig does: `global_`, then per op type (`conv2d`, `linear`, ...), then per layer
    (module path, or FX node name where a path is ambiguous). The most specific level that names
    a layer decides; a setting is "int8" or None (float). `--max-drop` writes one into
    edgeconv.json; `--quant-config FILE` replays it."""

    global_: str | None = INT8
    op_type: tuple[tuple[str, str | None], ...] = ()
    layer: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        for where, value in (("global", self.global_), *self.op_type, *self.layer):
            if value not in (INT8, None):
                raise UserError(f"quant config: {where} is {value!r}; a setting is \"int8\" or null (float)")

    def setting(self, layer: str, node: str, op_types: tuple[str, ...]) -> str | None:
        """`op_types`: the node's, the most specific first (a depthwise conv2d is also a conv2d)."""
        layers, types = dict(self.layer), dict(self.op_type)
        for key in (layer, node):
            if key and key in layers:
                return layers[key]
        return next((types[t] for t in op_types if t in types), self.global_)

    @property
    def chooses_layers(self) -> bool:
        """Whether this config decides which conv/linear layers are float (else it only names other
        op types, like the `--int8-for cpu` preset, and --max-drop may still choose layers)."""
        from edgeconv.quant.program import COMPUTE

        return bool(self.layer) or self.global_ is None or any(op in COMPUTE for op, _ in self.op_type)

    def float_op_types(self) -> tuple[str, ...]:
        """Op types this config keeps float beyond conv/linear layers (`layer_norm`, `gelu`,
        `softmax`...): every node of that type, whatever its layer."""
        from edgeconv.quant.program import COMPUTE

        return tuple(op for op, v in self.op_type if v is None and op not in COMPUTE)

    def over(self, base: "QuantConfig") -> "QuantConfig":
        """This config laid over `base` (a preset): every entry this one names wins."""
        return QuantConfig(self.global_, tuple(sorted({**dict(base.op_type), **dict(self.op_type)}.items())),
                           tuple(sorted({**dict(base.layer), **dict(self.layer)}.items())))

    def to_file(self) -> dict:
        """The file form: {"global": ..., "op_type": {op: setting}, "layer": {name: setting}}."""
        return {"global": self.global_, "op_type": dict(self.op_type), "layer": dict(self.layer)}

    @classmethod
    def from_file(cls, data: object, where: str) -> "QuantConfig":
        if not isinstance(data, dict) or not set(data) <= {"global", "op_type", "layer"}:
            raise UserError(f"{where} is not an edgeconv quant config: want an object with keys global, "
                            "op_type, layer (as `quant_config` in edgeconv.json)")
        levels = {k: data.get(k) or {} for k in ("op_type", "layer")}
        for k, v in levels.items():
            if not isinstance(v, dict) or not all(isinstance(n, str) for n in v):
                raise UserError(f"{where}: {k} must map names to \"int8\" or null")
        return cls(data.get("global", INT8), tuple(sorted(levels["op_type"].items())),
                   tuple(sorted(levels["layer"].items())))


# `--int8-for`: what an int8 deployment wants, as quant-config data.
#  npu: full-integer. A DSP/NPU delegate (Hexagon/QNN, NNAPI, Edge TPU) cuts the graph at every float op.
#  cpu: the op types whose int8 TFLite kernel XNNPACK does not take stay float, so XNNPACK runs them
#       in fp32 inside its own partition instead of leaving them to TFLite's slower builtin int8 kernels.
#       Each is an XNNPACK rule in devices/delegates/xnnpack.toml (tests/test_int8_presets.py checks
#       the pairing): GELU (xnnpack.gelu-float-only), SOFTMAX and HARD_SWISH (xnnpack.float-only), and
#       layer_norm, whose int8 pieces include RSQRT — measured, bench/results/int8_presets.json.
#       And a depthwise conv of more than 25 taps (ConvNeXt's 7x7): XNNPACK takes it in int8, but past its
#       largest single-pass kernel (5x5) it runs several passes: on an x86 AVX-512 host, 7x7 int8 measured
#       23x slower than TFLite's builtin int8 kernel and 5x slower than XNNPACK's own fp32 (3x3 and 5x5: XNNPACK
#       4x faster than builtin) — bench/results/dwconv_kernels.json, and int8_vs_aiq.json for whole nets.
INT8_FOR: dict[str, QuantConfig] = {
    "npu": QuantConfig(),
    "cpu": QuantConfig(op_type=(("depthwise_conv2d_large", None), ("gelu", None), ("hardswish", None),
                                ("layer_norm", None), ("softmax", None))),
}


@dataclasses.dataclass(frozen=True)
class CalibSpec(Record):
    """Where calibration/evaluation data come from: `demo`, `random`, a folder, or .npy/.npz."""

    source: str = "demo"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: str = "NCHW"  # layout of the arrays on disk (NCHW or NHWC)


# Pruning changes the function on purpose: by default a sparse artifact (and the level --sparsity
# a,b,c chooses) may lose at most this much of the source model's task metric (accuracy points, or
# top-1 agreement with it). --max-drop overrides.
SPARSE_MAX_DROP = 0.02


class FloatOpsPolicy(enum.Enum):
    """What a float op left in an int8 artifact does to its verdict (`--float-ops`)."""

    WARN = "warn"  # counted and named in the manifest (a DSP/NPU delegate would split the graph there)
    ERROR = "error"  # the artifact fails, naming each float op — as TFLITE_BUILTINS_INT8 refuses them


class BlockSize(enum.Enum):
    """Output channels pruned together. 4 lets XNNPACK use its 4-channel sparse kernels."""

    FOUR = 4
    TWO = 2
    ONE = 1


def check_sparsity(value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise UserError(f"--sparsity {value!r} is outside (0, 1); give the fraction of 1x1 weights "
                        "to zero, e.g. --sparsity 0.8")
    return float(value)


@dataclasses.dataclass(frozen=True)
class SparseOptions(Record):
    sparsity: float = 0.8
    block: BlockSize = BlockSize.FOUR
    # `--sparsity 0.5,0.7,0.9`: every level is pruned (and fine-tuned) and tabulated; the artifact
    # takes the sparsest level within the drop budget (edgeconv.prepare.prune). (): `sparsity` only.
    levels: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        for level in self.levels:
            check_sparsity(level)


@dataclasses.dataclass(frozen=True)
class PruneOptions(Record):
    """Gradual magnitude pruning while fine-tuning, for the sparse targets (epochs 0: one-shot
    pruning by the `sparsify` pass). `export --prune-epochs N [--train-data MOD:FN]`."""

    epochs: int = 0
    train_data: str = ""  # package.module:function; empty: the model's bundled training data

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise UserError(f"--prune-epochs {self.epochs!r} must be a whole number >= 0")


@dataclasses.dataclass(frozen=True)
class QATOptions(Record):
    """Quantization-aware training in place of calibration (epochs 0: post-training only). The
    schedule fields are for `edgeconv.quant.qat.prepare` in the user's own loop; `export
    --qat-epochs` sets them from its step count."""

    epochs: int = 0
    train_data: str = ""  # package.module:function; empty: the model's bundled training data
    per_channel: bool = True
    lr: float = 1e-3  # AdamW; a pretrained net moves far at this rate (a net trained here does not)
    freeze_bn_after: int = 200  # steps during which BN statistics follow the batch, then frozen
    freeze_observers_after: int = 400  # steps after which activation ranges are fixed


@dataclasses.dataclass(frozen=True)
class ExportOptions(Record):
    targets: tuple[str, ...] = ("tflite-int8",)
    out_dir: str = "edgeconv-out"
    quant: QuantOptions = QuantOptions()
    sparse: SparseOptions = SparseOptions()
    qat: QATOptions = QATOptions()
    prune: PruneOptions = PruneOptions()
    max_drop: float | None = None  # keep the fewest most-sensitive layers float until the drop is within this
    quant_config: QuantConfig | None = None  # which layers are int8 (--quant-config); None: all, or --max-drop's choice
    evaluator: str = ""  # package.module:function(outputs, data) -> float for --max-drop; empty: built-in
    analyze: bool = False  # also write the per-layer int8 sensitivity (analyze.json)
    calib: CalibSpec = CalibSpec()
    eval_samples: int = 256
    seed: int = 0
    # the fp32 floors of every artifact's verdict, lowered (or raised) explicitly by the user;
    # None: each target's own (int8: cosine 0.95, decisive top-1 0.9)
    min_cosine: float | None = None
    min_top1: float | None = None
    float_ops: FloatOpsPolicy = FloatOpsPolicy.WARN

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)
