"""The budgets file and the baseline: parsed into frozen data with line-numbered errors.

Budgets file:

    [gate]                      # optional; these are the defaults
    runs = 50                   # timed runs per profile (after `warmup`)
    warmup = 5
    threads = 1
    regression_pct = 10.0       # with --baseline: fail when p50 is more than this % slower
    require_measured = false    # true: an unreachable device is an error, never a prediction
    out_dir = "edgeconv-gate"   # where exports go
    calib_samples = 128         # calibration and held-out accuracy samples, as `edgeconv export`
    eval_samples = 256
    quant_config = "q.json"     # optional: which layers are int8, replayed as `edgeconv export --quant-config`
                                # (a quant-config file or an edgeconv.json; a path relative to this file)
    prune_epochs = 0            # sparse targets: prune while fine-tuning, as `export --prune-epochs N`
                                # (0: one shot); the model must bundle training data (ModelSpec.train_data)

    [[budget]]
    model = "edgeconv.demo:demo"   # what `edgeconv export --model` takes
    target = "tflite-int8"
    device = "host"
    p50_ms = 2.0                   # any of p50_ms, p90_ms, size_kb, accuracy_drop (percentage points),
                                   # max_partitions, max_cpu_ops (need `delegate`: its support table,
                                   # devices/delegates/*.toml; xnnpack on host is measured),
                                   # max_float_ops (int8 targets: ops the manifest's float_ops counts)
                                   # (p90_ms needs a measurement: against a prediction that row fails)
                                   # sparse targets (tflite-sparse, tflite-sparse-fp16): min_sparsity (fraction
                                   # of the 1x1 conv weights that are zero, read from the .tflite), max_drop
                                   # (percentage points below the dense source model: what pruning costs)
    size_kb = 64
    accuracy_drop = 1.0
    regression_pct = 5.0           # optional, overrides [gate]
    delegate = "xnnpack"           # optional: the device's default otherwise

    [[budget]]                     # an artifact built elsewhere (another CI step, another tool)
    model = "edgeconv.demo:demo"
    target = "tflite-int8"
    device = "host"
    artifact = "dist/demo-int8.tflite"   # this file, not the gate's own export
    check = true                   # it must pass `edgeconv check` (run here: its manifest's options if a
                                   # manifest beside it lists it, else the model and [gate]'s samples);
                                   # or check = "check.json": read a saved `edgeconv check --json`
                                   # verdict, which must be for these very bytes (sha256)
    size_kb = 64                   # the only other limit an artifact budget takes

Every exported artifact must pass its whole parity verdict (each output criterion and every int8
layer in isolation) whatever its budget says.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from edgeconv.errors import EdgeconvError, UserError
from edgeconv.results import Record

LIMITS = ("p50_ms", "p90_ms", "size_kb", "accuracy_drop", "max_partitions", "max_cpu_ops", "max_float_ops",
          "min_sparsity", "max_drop")
DELEGATE_LIMITS = ("max_partitions", "max_cpu_ops")  # checked against the budget's delegate table
BUDGET_KEYS = ("model", "target", "device", "delegate", *LIMITS, "regression_pct", "artifact", "check")
ARTIFACT_LIMITS = ("size_kb",)  # what a budget on a file built elsewhere may limit besides `check`
SPARSE_LIMITS = ("min_sparsity", "max_drop")  # sparse targets only (those that run the sparsify pass)
LOWER_BOUNDS = ("min_sparsity",)  # passes when the value is at least the limit; every other limit is a ceiling
BASELINE_VERSION = 1


class GateBreach(EdgeconvError):
    """At least one budget was breached: exit 1 (the breached rows are printed before)."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class GateSettings:
    runs: int = 50
    warmup: int = 5
    threads: int = 1
    regression_pct: float = 10.0
    require_measured: bool = False
    out_dir: str = "edgeconv-gate"
    calib_samples: int = 128  # as `edgeconv export`; fewer makes a CI gate faster
    eval_samples: int = 256
    quant_config: str = ""  # a --quant-config file for every int8 export ("" = all layers int8)
    prune_epochs: int = 0  # sparse targets: `export --prune-epochs N` (0: one-shot pruning)


@dataclasses.dataclass(frozen=True)
class Budget:
    model: str
    target: str
    device: str
    p50_ms: float | None = None
    p90_ms: float | None = None
    size_kb: float | None = None
    accuracy_drop: float | None = None  # percentage points below the fp32 reference
    regression_pct: float | None = None  # None: the [gate] value
    delegate: str | None = None  # None: the device's default
    line: int = 0  # where the entry starts in the budgets file
    max_partitions: float | None = None  # delegated partitions the delegate builds
    max_cpu_ops: float | None = None  # ops the delegate leaves on the CPU
    max_float_ops: float | None = None  # int8 artifacts: ops still computing in float (Artifact.float_ops)
    artifact: str | None = None  # a file built elsewhere, judged instead of the gate's own export
    check: bool | str | None = None  # True: run `edgeconv check` on it; a path: its saved --json verdict
    min_sparsity: float | None = None  # sparse targets: fraction of 1x1 conv weights zero in the artifact
    max_drop: float | None = None  # sparse targets: percentage points below the dense source model

    @property
    def key(self) -> str:
        return _key(self.model, self.target, self.device, self.delegate)

    @property
    def needs_sparse_check(self) -> bool:
        return self.min_sparsity is not None or self.max_drop is not None

    @property
    def needs_latency(self) -> bool:
        return self.p50_ms is not None or self.p90_ms is not None

    @property
    def needs_delegate_check(self) -> bool:
        return self.max_partitions is not None or self.max_cpu_ops is not None


@dataclasses.dataclass(frozen=True)
class Budgets:
    settings: GateSettings
    entries: tuple[Budget, ...]
    path: str = ""


@dataclasses.dataclass(frozen=True)
class Measured(Record):
    """What the gate found for one model × target × device."""

    model: str
    target: str
    device: str
    artifact_sha256: str
    size_bytes: int
    accuracy: float | None = None  # the artifact's task accuracy (fraction) on the held-out samples
    reference_accuracy: float | None = None  # fp32 torch on the same samples
    p50_ms: float | None = None
    p90_ms: float | None = None
    method: str = ""  # LatencyReport.method: measured-device | measured-host | predicted
    basis: str = ""  # how: "measured on this host", "predicted (calibrated on …)"
    parity_failures: int | None = None  # the artifact's failed parity comparisons (None: not checked)
    parity_note: str = ""
    delegate: str = ""
    partitions: int | None = None  # delegated partitions (max_partitions budgets)
    cpu_ops: int | None = None  # ops left on the CPU (max_cpu_ops budgets)
    delegate_basis: str = ""  # "measured on this host (...)" or "predicted (<name>.toml)"
    float_ops: int | None = None  # Artifact.float_ops.count (None: not an int8 target)
    float_ops_note: str = ""
    check_failures: int | None = None  # `edgeconv check`'s failed criteria on the artifact (None: not asked)
    check_note: str = ""
    sparsity: float | None = None  # sparse targets: 1x1 conv weights zero in the .tflite (check-sparse's reading)
    source_drop: float | None = None  # sparse targets: percentage points below the dense source model
    sparse_note: str = ""  # the metric behind source_drop, and check-sparse's verdict
    # the target did not export (a stage failed: capture, a pass, the converter, its runtime): the
    # one line naming the stage; nothing else was measured for it
    failure: str = ""

    @property
    def key(self) -> str:
        return _key(self.model, self.target, self.device, self.delegate)

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return (self.reference_accuracy - self.accuracy) * 100.0


def _key(model: str, target: str, device: str, delegate: str | None) -> str:
    return f"{model} / {target} / {device}" + (f" @ {delegate}" if delegate else "")


# --- reading the budgets file ------------------------------------------------------------------

def _line_of(text: str, pattern: str, start: int = 1) -> int:
    """1-based line of the first line at or after `start` matching `pattern` (0 if none)."""
    rx = re.compile(pattern)
    for i, line in enumerate(text.splitlines()[start - 1:], start):
        if rx.search(line):
            return i
    return 0


def _key_line(text: str, key: str, start: int) -> int:
    return _line_of(text, rf"^\s*{re.escape(key)}\s*=", start) or start


def _number(where: str, key: str, v: Any, minimum: float, strict: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or \
            (v <= minimum if strict else v < minimum):
        bound = f"greater than {minimum:g}" if strict else f"{minimum:g} or more"
        raise UserError(f"{where}: {key} = {v!r} must be a number {bound}")
    return float(v)


def parse_budgets(text: str, path: str = "budgets.toml", known_targets: Iterable[str] | None = None,
                  known_devices: Iterable[str] | None = None, known_delegates: Iterable[str] | None = None,
                  sparse_targets: Iterable[str] | None = None) -> Budgets:
    """Strictly validated budgets; every problem is one UserError naming the line, key and fix."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}; fix the syntax there") from None
    for key in data:
        if key not in ("gate", "budget"):
            line = _line_of(text, rf"^\s*(\[+\s*{re.escape(key)}\b|{re.escape(key)}\s*=)")
            raise UserError(f"{path}:{line}: unknown key {key!r}; the file holds a [gate] table and "
                            "[[budget]] entries")
    settings = _settings(data.get("gate", {}), text, path)
    raw = data.get("budget", [])
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{path}: no [[budget]] entries; add one with model, target, device and a limit "
                        "such as p50_ms")
    headers = [i for i, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*budget\s*\]\]", line)]
    targets = set(known_targets) if known_targets is not None else None
    devices = set(known_devices) if known_devices is not None else None
    delegates = set(known_delegates) if known_delegates is not None else None
    entries, seen = [], {}
    for n, entry in enumerate(raw):
        start = headers[n] if n < len(headers) else 1
        b = _budget(entry, n + 1, start, text, path, targets, devices, delegates,
                    set(sparse_targets) if sparse_targets is not None else None)
        if b.key in seen:
            raise UserError(f"{path}:{start}: budget for {b.key} repeats the one at line {seen[b.key]}; "
                            "merge them into one entry")
        seen[b.key] = start
        entries.append(b)
    return Budgets(settings, tuple(entries), path)


def _settings(raw: Any, text: str, path: str) -> GateSettings:
    start = _line_of(text, r"^\s*\[\s*gate\s*\]") or 1
    if not isinstance(raw, dict):
        raise UserError(f"{path}:{start}: gate must be a table ([gate])")
    fields = {f.name: f for f in dataclasses.fields(GateSettings)}
    out: dict[str, Any] = {}
    for key, v in raw.items():
        where = f"{path}:{_key_line(text, key, start)}"
        if key not in fields:
            raise UserError(f"{where}: unknown key {key!r} in [gate]; allowed: {', '.join(fields)}")
        if key in ("runs", "threads", "warmup", "calib_samples", "eval_samples", "prune_epochs"):
            low = 0 if key in ("warmup", "prune_epochs") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UserError(f"{where}: {key} = {v!r} must be a whole number {low} or more")
            out[key] = v
        elif key == "regression_pct":
            out[key] = _number(where, key, v, 0.0, strict=False)
        elif key == "require_measured":
            if not isinstance(v, bool):
                raise UserError(f"{where}: require_measured = {v!r} must be true or false")
            out[key] = v
        else:
            if not isinstance(v, str) or not v:
                what = "a folder path" if key == "out_dir" else "a file path"
                raise UserError(f"{where}: {key} = {v!r} must be {what} in quotes")
            out[key] = v
    return GateSettings(**out)


def _budget(entry: Any, n: int, start: int, text: str, path: str, targets: set[str] | None,
            devices: set[str] | None, delegates: set[str] | None, sparse_targets: set[str] | None = None) -> Budget:
    where0 = f"{path}:{start}: budget {n}"
    if not isinstance(entry, dict):
        raise UserError(f"{where0} must be a table ([[budget]])")
    for key in entry:
        if key not in BUDGET_KEYS:
            raise UserError(f"{path}:{_key_line(text, key, start)}: unknown key {key!r} in budget {n}; "
                            f"allowed: {', '.join(BUDGET_KEYS)}")
    for key in ("model", "target", "device"):
        v = entry.get(key)
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{where0} lacks {key} (a string), e.g. "
                            + {"model": 'model = "edgeconv.demo:demo"', "target": 'target = "tflite-int8"',
                               "device": 'device = "host"'}[key])
    if targets is not None and entry["target"] not in targets:
        raise UserError(f"{path}:{_key_line(text, 'target', start)}: budget {n} names target "
                        f"{entry['target']!r}, which does not exist; choose one of: {', '.join(sorted(targets))}")
    if devices is not None and entry["device"] not in devices and not entry["device"].endswith(".toml"):
        raise UserError(f"{path}:{_key_line(text, 'device', start)}: budget {n} names device "
                        f"{entry['device']!r}, which does not exist; choose one of: {', '.join(sorted(devices))}")
    delegate = entry.get("delegate")
    if delegate is not None and (not isinstance(delegate, str) or (delegates is not None and delegate not in delegates)):
        raise UserError(f"{path}:{_key_line(text, 'delegate', start)}: budget {n}: delegate = {delegate!r} is not "
                        f"a delegate; choose one of: {', '.join(sorted(delegates or ())) or 'a delegate name'}")
    if delegate is not None and any(k in entry for k in ("p50_ms", "p90_ms")) and delegate not in _profile_delegates():
        raise UserError(f"{path}:{_key_line(text, 'delegate', start)}: budget {n}: {delegate} has a support table "
                        "but no way to be profiled; budget max_partitions/max_cpu_ops for it in its own entry, "
                        "or p50_ms with a delegate `edgeconv profile` runs")
    limits: dict[str, float] = {}
    for key in (*LIMITS, "regression_pct"):
        if key in entry:
            strict = key in ("p50_ms", "p90_ms", "size_kb")
            limits[key] = _number(f"{path}:{_key_line(text, key, start)}: budget {n}", key, entry[key], 0.0, strict)
    for key in DELEGATE_LIMITS:
        if key in limits and delegate is None:
            raise UserError(f"{path}:{_key_line(text, key, start)}: budget {n}: {key} counts what a delegate takes; "
                            'add delegate = "<name>" (xnnpack, gpu, nnapi, hexagon for .tflite; qnn-ep for .onnx; '
                            "ane for .mlpackage)")
    artifact, check = _artifact_keys(entry, n, start, text, path, limits)
    if "min_sparsity" in limits and limits["min_sparsity"] >= 1.0:
        raise UserError(f"{path}:{_key_line(text, 'min_sparsity', start)}: budget {n}: min_sparsity = "
                        f"{limits['min_sparsity']:g} is a fraction of the 1x1 weights that are zero; give one "
                        "below 1, e.g. 0.8")
    sparse = [k for k in SPARSE_LIMITS if k in limits]
    if sparse and sparse_targets is not None and entry["target"] not in sparse_targets:
        raise UserError(f"{path}:{_key_line(text, sparse[0], start)}: budget {n}: {sparse[0]} applies to the sparse "
                        f"targets ({', '.join(sorted(sparse_targets))}), not {entry['target']}; move it to a "
                        "budget for one of them")
    if not any(k in limits for k in LIMITS) and not check:
        raise UserError(f"{where0} ({entry['model']} / {entry['target']} / {entry['device']}) sets no limit; "
                        f"add at least one of {', '.join(LIMITS)}, or check = true")
    return Budget(model=entry["model"], target=entry["target"], device=entry["device"], delegate=delegate,
                  line=start, artifact=artifact, check=check, **limits)


def _artifact_keys(entry: dict, n: int, start: int, text: str, path: str,
                   limits: dict[str, float]) -> tuple[str | None, bool | str | None]:
    """`artifact` (a path) and `check` (true, or the path of a saved verdict), validated."""
    artifact, check = entry.get("artifact"), entry.get("check")
    if artifact is not None and (not isinstance(artifact, str) or not artifact.strip()):
        raise UserError(f"{path}:{_key_line(text, 'artifact', start)}: budget {n}: artifact = {artifact!r} must be "
                        "the artifact's path in quotes")
    if check is not None and not (check is True or check is False or (isinstance(check, str) and check.strip())):
        raise UserError(f"{path}:{_key_line(text, 'check', start)}: budget {n}: check = {check!r} must be true, or "
                        "the path of a saved `edgeconv check --json` report in quotes")
    if artifact is not None:
        other = [k for k in limits if k not in ARTIFACT_LIMITS and k != "regression_pct"]
        if other:
            raise UserError(f"{path}:{_key_line(text, other[0], start)}: budget {n}: {other[0]} is measured on the "
                            "gate's own export, but artifact names a file built elsewhere; a file takes only "
                            f"check and {', '.join(ARTIFACT_LIMITS)} (drop artifact to budget the export)")
        if not check:
            raise UserError(f"{path}:{_key_line(text, 'artifact', start)}: budget {n}: artifact is judged by "
                            "`edgeconv check`; add check = true (or the path of its saved --json verdict)")
    elif isinstance(check, str):
        raise UserError(f"{path}:{_key_line(text, 'check', start)}: budget {n}: a saved verdict is for a file "
                        "built elsewhere; add artifact = \"PATH\" naming it, or use check = true")
    return artifact, (check or None)


def _profile_delegates() -> set[str]:
    from edgeconv.devices.base import Delegate

    return {d.value for d in Delegate}


def load_budgets(path: str | Path, check_names: bool = True) -> Budgets:
    """Read and validate a budgets file; with check_names, targets and devices must be registered."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"budgets file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"budgets file {p} is not readable: {e}") from None
    targets = devices = delegates = sparse = None
    if check_names:
        from edgeconv import registrations
        from edgeconv.devices.base import Delegate
        import edgeconv.devices.catalog  # noqa: F401  (fills DEVICES)
        from edgeconv.registry import DEVICES, TARGETS

        registrations.load()
        from edgeconv.devices.delegates import names

        # a profile delegate (devices/base.py) or a support table's name (qnn-ep has a table only)
        targets, devices, delegates = TARGETS.names(), DEVICES.names(), [d.value for d in Delegate] + list(names())
        sparse = [n for n in targets if "sparsify" in TARGETS.get(n).passes]
    return parse_budgets(text, str(p), targets, devices, delegates, sparse)


# --- baseline ----------------------------------------------------------------------------------

def baseline_json(measured: Mapping[str, Measured]) -> str:
    return json.dumps({"edgeconv_gate_baseline": BASELINE_VERSION,
                       "results": {k: m.to_dict() for k, m in sorted(measured.items())}}, indent=2)


def load_baseline(path: str | Path) -> dict[str, Measured]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"baseline file {p} does not exist; write one with --write-baseline") from None
    except (OSError, ValueError) as e:
        raise UserError(f"baseline file {p} is not readable JSON ({e}); write a fresh one with --write-baseline") from None
    if not isinstance(data, dict) or data.get("edgeconv_gate_baseline") != BASELINE_VERSION:
        raise UserError(f"{p} is not an edgeconv gate baseline (version {BASELINE_VERSION}); "
                        "write one with --write-baseline")
    try:
        return {k: Measured.from_dict(v) for k, v in data["results"].items()}
    except (KeyError, TypeError) as e:
        raise UserError(f"baseline file {p} lacks {e}; write a fresh one with --write-baseline") from None
