"""The CI gate: a budgets file of model × target × device limits, checked against fresh exports and
profiles (measured where the device is reachable, predicted — and marked so — where it is not).

    budgets (TOML) ──load_budgets──▶ Budgets ──collect──▶ {key: Measured} ──evaluate──▶ GateResults
                                                                                       ├ junit_xml
                                                                                       ├ markdown
                                                                                       └ baseline_json

Besides the budgeted limits, every exported artifact must pass its parity check (an artifact that
does not compute what its model computes fails the gate whatever its speed).

`evaluate` is a pure function of the budgets, the measurements and an optional baseline, so the
rules are tested without exporting anything; `collect` is the only part that runs exports/profiles.

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

    [[budget]]
    model = "edgeconv.demo:demo"   # what `edgeconv export --model` takes
    target = "tflite-int8"
    device = "host"
    p50_ms = 2.0                   # any of p50_ms, p90_ms, size_kb, accuracy_drop (percentage points)
                                   # (p90_ms needs a measurement: against a prediction that row fails)
    size_kb = 64
    accuracy_drop = 1.0
    regression_pct = 5.0           # optional, overrides [gate]
    delegate = "xnnpack"           # optional: the device's default otherwise
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from edgeconv.errors import EdgeconvError, UserError
from edgeconv.results import GateResult, Record

if TYPE_CHECKING:
    from edgeconv.context import Progress

LIMITS = ("p50_ms", "p90_ms", "size_kb", "accuracy_drop")
BUDGET_KEYS = ("model", "target", "device", "delegate", *LIMITS, "regression_pct")
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

    @property
    def key(self) -> str:
        return _key(self.model, self.target, self.device, self.delegate)

    @property
    def needs_latency(self) -> bool:
        return self.p50_ms is not None or self.p90_ms is not None


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
                  known_devices: Iterable[str] | None = None, known_delegates: Iterable[str] | None = None
                  ) -> Budgets:
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
        b = _budget(entry, n + 1, start, text, path, targets, devices, delegates)
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
        if key in ("runs", "threads", "warmup", "calib_samples", "eval_samples"):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "warmup" else 1):
                raise UserError(f"{where}: {key} = {v!r} must be a whole number "
                                f"{'0' if key == 'warmup' else '1'} or more")
            out[key] = v
        elif key == "regression_pct":
            out[key] = _number(where, key, v, 0.0, strict=False)
        elif key == "require_measured":
            if not isinstance(v, bool):
                raise UserError(f"{where}: require_measured = {v!r} must be true or false")
            out[key] = v
        else:
            if not isinstance(v, str) or not v:
                raise UserError(f"{where}: out_dir = {v!r} must be a folder path in quotes")
            out[key] = v
    return GateSettings(**out)


def _budget(entry: Any, n: int, start: int, text: str, path: str, targets: set[str] | None,
            devices: set[str] | None, delegates: set[str] | None) -> Budget:
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
    limits: dict[str, float] = {}
    for key in (*LIMITS, "regression_pct"):
        if key in entry:
            strict = key in ("p50_ms", "p90_ms", "size_kb")
            limits[key] = _number(f"{path}:{_key_line(text, key, start)}: budget {n}", key, entry[key], 0.0, strict)
    if not any(k in limits for k in LIMITS):
        raise UserError(f"{where0} ({entry['model']} / {entry['target']} / {entry['device']}) sets no limit; "
                        f"add at least one of {', '.join(LIMITS)}")
    return Budget(model=entry["model"], target=entry["target"], device=entry["device"], delegate=delegate,
                  line=start, **limits)


def load_budgets(path: str | Path, check_names: bool = True) -> Budgets:
    """Read and validate a budgets file; with check_names, targets and devices must be registered."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"budgets file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"budgets file {p} is not readable: {e}") from None
    targets = devices = delegates = None
    if check_names:
        from edgeconv import catalog
        from edgeconv.devices.base import Delegate
        import edgeconv.devices.catalog  # noqa: F401  (fills DEVICES)
        from edgeconv.registry import DEVICES, TARGETS

        catalog.load()
        targets, devices, delegates = TARGETS.names(), DEVICES.names(), [d.value for d in Delegate]
    return parse_budgets(text, str(p), targets, devices, delegates)


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


# --- the rules ---------------------------------------------------------------------------------

def evaluate(budgets: Budgets, measured: Mapping[str, Measured],
             baseline: Mapping[str, Measured] | None = None) -> tuple[GateResult, ...]:
    """One GateResult per check. Pure: no I/O, no exports, no clocks."""
    out: list[GateResult] = []
    parity_seen: set[tuple[str, str]] = set()
    for b in budgets.entries:
        m = measured.get(b.key)
        if m is None:
            raise UserError(f"no result for {b.key}: the gate measured nothing for this budget")
        if m.parity_failures is not None and (b.model, b.target) not in parity_seen:
            # an artifact that does not match its model fails the gate whatever its speed; once per artifact
            parity_seen.add((b.model, b.target))
            out.append(GateResult(f"{b.model} / {b.target}", "parity_failures", float(m.parity_failures), 0.0,
                                  m.parity_failures == 0, m.parity_note or "parity checked"))
        how = m.basis or "measured"
        checks = [("p50_ms", b.p50_ms, m.p50_ms, how), ("p90_ms", b.p90_ms, m.p90_ms, how),
                  ("size_kb", b.size_kb, m.size_bytes / 1024.0, f"sha256 {m.artifact_sha256[:12]}"),
                  ("accuracy_drop", b.accuracy_drop, m.accuracy_drop, _acc_note(m))]
        for metric, limit, value, note in checks:
            if limit is None:
                continue
            if metric == "p90_ms" and (value is None or math.isnan(value)):
                out.append(GateResult(b.key, metric, None, limit, False, _no_p90(b, m)))
                continue
            if value is None:
                out.append(GateResult(b.key, metric, None, limit, False,
                                      f"no value to check ({note}); remove the limit or supply what it needs"))
                continue
            ok = value <= limit
            out.append(GateResult(b.key, metric, value, limit, ok,
                                  f"{value:.4g} {'<=' if ok else '>'} {limit:.4g}; {note}"))
        if baseline is not None and b.needs_latency:
            out.append(_regression(b, m, baseline.get(b.key), budgets.settings))
    return tuple(out)


def _no_p90(b: Budget, m: Measured) -> str:
    """Why a p90 budget has nothing to check: never a p50 standing in for it."""
    if m.method == "predicted":
        return (f"not measured: p90 needs a measurement; {m.basis or 'a prediction'} is one number, with no "
                f"spread — make {b.device} reachable (see `edgeconv devices`) or budget p50_ms instead")
    return (f"not measured: {m.basis or m.method or 'the measurement'} reported no p90; "
            "budget p50_ms for this device instead")


def _acc_note(m: Measured) -> str:
    if m.accuracy is None or m.reference_accuracy is None:
        return "the evaluation data has no labels, so no accuracy was measured"
    return f"accuracy {m.accuracy:.2%} vs fp32 {m.reference_accuracy:.2%}"


def _regression(b: Budget, m: Measured, base: Measured | None, s: GateSettings) -> GateResult:
    limit = b.regression_pct if b.regression_pct is not None else s.regression_pct
    if base is None or base.p50_ms is None or m.p50_ms is None:
        return GateResult(b.key, "regression_pct", None, limit, True, "not compared: no baseline entry")
    if base.method != m.method:  # a prediction is never compared with a measurement
        return GateResult(b.key, "regression_pct", None, limit, True,
                          f"not compared: baseline {base.method}, now {m.method}")
    slower = (m.p50_ms / base.p50_ms - 1.0) * 100.0
    ok = slower <= limit
    same = " (same artifact bytes)" if base.artifact_sha256 == m.artifact_sha256 else ""
    return GateResult(b.key, "regression_pct", slower, limit, ok,
                      f"p50 {m.p50_ms:.4g} ms vs baseline {base.p50_ms:.4g} ms: {slower:+.1f} %{same}")


# --- reports -----------------------------------------------------------------------------------

def junit_xml(results: Iterable[GateResult], suite: str = "edgeconv gate") -> str:
    """JUnit XML: one <testcase> per check; a breach is a <failure>, an uncompared check <skipped>."""
    import xml.etree.ElementTree as ET

    results = list(results)
    failures = sum(not r.passed for r in results)
    skipped = sum(r.passed and r.value is None for r in results)
    root = ET.Element("testsuites", name=suite, tests=str(len(results)), failures=str(failures),
                      errors="0", skipped=str(skipped))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=r.name, name=r.metric)
        if not r.passed:
            ET.SubElement(tc, "failure", message=r.message, type="BudgetBreached").text = (
                f"{r.name}: {r.metric} {'n/a' if r.value is None else f'{r.value:.6g}'} exceeds {r.limit:g}\n{r.message}")
        elif r.value is None:
            ET.SubElement(tc, "skipped", message=r.message)
        ET.SubElement(tc, "system-out").text = r.message
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: Iterable[GateResult]) -> str:
    """A GitHub-flavoured summary, fit for $GITHUB_STEP_SUMMARY."""
    results = list(results)
    bad = [r for r in results if not r.passed]
    head = (f"## edgeconv gate: {'FAILED' if bad else 'passed'} — "
            f"{len(results) - len(bad)} of {len(results)} checks within budget\n")
    rows = ["| | model / target / device | check | value | limit | how |", "|---|---|---|---|---|---|"]
    for r in results:
        mark = "❌" if not r.passed else ("➖" if r.value is None else "✅")
        value = "n/a" if r.value is None else f"{r.value:.4g}"
        rows.append(f"| {mark} | {_cell(r.name)} | {r.metric} | {value} | {r.limit:g} | {_cell(r.message)} |")
    return head + "\n" + "\n".join(rows) + "\n"


def breach_lines(results: Iterable[GateResult]) -> list[str]:
    return [f"BREACH {r.name}: {r.metric} {'n/a' if r.value is None else f'{r.value:.4g}'} "
            f"(limit {r.limit:g}) — {r.message}" for r in results if not r.passed]


# --- running exports and profiles ----------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def collect(budgets: Budgets, progress: "Progress | None" = None) -> dict[str, Measured]:
    """Export every model once (all its budgeted targets), then profile each budgeted device."""
    from edgeconv.config import ExportOptions, QuantOptions
    from edgeconv.devices.base import Delegate, ProfileOptions
    from edgeconv.devices.profile import headline, profile
    from edgeconv.models import load_model
    from edgeconv.pipeline import export, resolve_targets

    s = budgets.settings
    by_model: dict[str, list[Budget]] = {}
    for b in budgets.entries:
        by_model.setdefault(b.model, []).append(b)
    out: dict[str, Measured] = {}
    for model, entries in by_model.items():
        targets = tuple(dict.fromkeys(b.target for b in entries))
        resolve_targets(targets)
        out_dir = Path(s.out_dir) / _slug(model)
        export_options = ExportOptions(targets=targets, out_dir=str(out_dir), eval_samples=s.eval_samples,
                                       quant=QuantOptions(samples=s.calib_samples))
        manifest = export(load_model(model), export_options, progress)
        arts = {a.target: a for a in manifest.artifacts}
        for b in entries:
            a = arts[b.target]
            p50 = p90 = None
            method = basis = ""
            if b.needs_latency:
                options = ProfileOptions(threads=s.threads, runs=s.runs, warmup=s.warmup,
                                         delegate=Delegate(b.delegate) if b.delegate else None)
                rep = profile(str(out_dir / a.path), b.device, options, require_measured=s.require_measured,
                              progress=progress)
                if rep.artifact_sha256 and rep.artifact_sha256 != a.sha256:
                    raise UserError(f"{b.key}: the profiled bytes are not the exported artifact")
                p50, p90, method, basis = rep.p50_ms, rep.p90_ms, rep.method, headline(rep)
            ref = a.parity.reference_accuracy if a.parity else None
            failed = [d for d in a.parity.diffs if not d.passed] if a.parity else []
            note = "; ".join(f"vs {d.reference}: {d.reason}" for d in failed) if failed else (
                f"matches {', '.join(d.reference for d in a.parity.diffs)} in {a.parity.runtime}" if a.parity else "")
            out[b.key] = Measured(model=b.model, target=b.target, device=b.device, artifact_sha256=a.sha256,
                                  size_bytes=a.size_bytes, accuracy=a.parity.accuracy if a.parity else None,
                                  reference_accuracy=ref if ref is not None else manifest.reference_accuracy,
                                  p50_ms=p50, p90_ms=p90, method=method, basis=basis,
                                  parity_failures=len(failed) if a.parity else None, parity_note=note,
                                  delegate=b.delegate or "")
    return out
