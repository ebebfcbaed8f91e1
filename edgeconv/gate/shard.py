"""The gate at scale: one budgets file split into N shards run in parallel CI jobs, then merged.

    budgets ──select(I/N)──▶ slice ──collect──▶ {key: Measured} ──results_doc──▶ shard-I.json
    shard-1.json … shard-N.json ──merge──▶ Budgets + {key: Measured} + baseline ──evaluate──▶ one verdict

Assignment: budgets are grouped by model × target (every budget of one artifact lands in the same
shard, so no artifact is exported twice), the groups are sorted by that key and dealt round-robin:
group k goes to shard (k mod N) + 1. The same file always gives the same slices; with more shards
than groups some shards are empty (they still write their results file, with no checks).

A results file carries the whole parsed budgets file (settings and every entry), the keys its
shard ran, what it measured and the baseline entries it compared with. `merge` checks that the
files come from one budgets file (its sha256), one shard count and every shard exactly once, then
hands back the inputs of `evaluate` — so the merged verdict, JUnit and summary are computed by
the same pure function, over the same data, as an unsharded run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from edgeconv.errors import UserError
from edgeconv.gate.budgets import Budget, Budgets, GateSettings, Measured
from edgeconv.results import GateResult

RESULTS_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(1, 1)


def parse_shard(text: str) -> Shard:
    """'I/N' with 1 <= I <= N; anything else is one UserError saying what is allowed."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise UserError(f"--shard {text!r} is not I/N (two whole numbers, e.g. --shard 1/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise UserError(f"--shard {text}: I must be between 1 and N, and N at least 1 (e.g. 1/{max(n, 2)})")
    return Shard(i, n)


def group_key(b: Budget) -> str:
    return f"{b.model} / {b.target}"


def assignment(budgets: Budgets, count: int) -> dict[str, int]:
    """Budget key -> its 1-based shard: model × target groups, sorted, dealt round-robin."""
    groups = sorted({group_key(b) for b in budgets.entries})
    shard_of = {g: k % count + 1 for k, g in enumerate(groups)}
    return {b.key: shard_of[group_key(b)] for b in budgets.entries}


def select(budgets: Budgets, shard: Shard) -> Budgets:
    """The budgets this shard runs, in file order."""
    where = assignment(budgets, shard.count)
    return dataclasses.replace(budgets, entries=tuple(b for b in budgets.entries if where[b.key] == shard.index))


def budgets_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- the results file ---------------------------------------------------------------------------

def results_doc(budgets: Budgets, shard: Shard, ran: Budgets, results: Iterable[GateResult],
                measured: Mapping[str, Measured], baseline: Mapping[str, Measured] | None,
                sha256: str = "") -> dict[str, Any]:
    """What `gate --save` writes and `gate --json` prints: this shard's verdict and everything a
    merge needs to recompute the whole file's verdict."""
    results = list(results)
    keys = [b.key for b in ran.entries]
    return {
        "edgeconv_gate_results": RESULTS_VERSION,
        "passed": all(r.passed for r in results),
        "results": [r.to_dict() for r in results],
        "measured": {k: m.to_dict() for k, m in measured.items()},
        "budgets": {"path": budgets.path, "sha256": sha256, "settings": dataclasses.asdict(budgets.settings),
                    "entries": [dataclasses.asdict(b) for b in budgets.entries]},
        "shard": {"index": shard.index, "count": shard.count, "keys": keys},
        "baseline": None if baseline is None else {k: baseline[k].to_dict() for k in keys if k in baseline},
    }


@dataclasses.dataclass(frozen=True)
class ShardResults:
    """One results file, read back."""

    path: str
    budgets: Budgets
    sha256: str
    shard: Shard
    keys: tuple[str, ...]
    results: tuple[GateResult, ...]
    measured: dict[str, Measured]
    baseline: dict[str, Measured] | None


def load_results(path: str | Path) -> ShardResults:
    p = Path(path)
    fix = "write it with `edgeconv gate BUDGETS --save FILE` (or --shard I/N --save FILE)"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"gate results file {p} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"gate results file {p} is not readable JSON ({' '.join(str(e).split())}); {fix}") from None
    if not isinstance(data, dict) or data.get("edgeconv_gate_results") != RESULTS_VERSION:
        raise UserError(f"{p} is not an edgeconv gate results file (version {RESULTS_VERSION}); {fix}")
    try:
        b = data["budgets"]
        entries = tuple(Budget(**e) for e in b["entries"])
        budgets = Budgets(GateSettings(**b["settings"]), entries, b.get("path", ""))
        s = data["shard"]
        shard = Shard(int(s["index"]), int(s["count"]))
        base = data.get("baseline")
        return ShardResults(
            path=str(p), budgets=budgets, sha256=b.get("sha256", ""), shard=shard, keys=tuple(s["keys"]),
            results=tuple(GateResult.from_dict(r) for r in data["results"]),
            measured={k: Measured.from_dict(v) for k, v in data["measured"].items()},
            baseline=None if base is None else {k: Measured.from_dict(v) for k, v in base.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"gate results file {p} is incomplete ({type(e).__name__}: {e}); {fix}") from None


@dataclasses.dataclass(frozen=True)
class Merged:
    budgets: Budgets
    measured: dict[str, Measured]
    baseline: dict[str, Measured] | None
    shards: tuple[ShardResults, ...]


def merge(parts: Iterable[ShardResults]) -> Merged:
    """The inputs of `evaluate` for the whole budgets file, from every shard's results file."""
    parts = sorted(parts, key=lambda r: r.shard.index)
    if not parts:
        raise UserError("gate merge needs at least one results file")
    first = parts[0]
    for r in parts[1:]:
        if r.sha256 != first.sha256 or r.budgets.entries != first.budgets.entries:
            raise UserError(f"{r.path} was run on a different budgets file than {first.path} "
                            f"({r.budgets.path or '?'} {r.sha256[:12]} vs {first.budgets.path or '?'} "
                            f"{first.sha256[:12]}); merge the shards of one run")
        if r.shard.count != first.shard.count:
            raise UserError(f"{r.path} is shard {r.shard} but {first.path} is shard {first.shard}; "
                            "merge the shards of one run")
    count = first.shard.count
    seen: dict[int, str] = {}
    for r in parts:
        if r.shard.index in seen:
            raise UserError(f"{r.path} and {seen[r.shard.index]} are both shard {r.shard}; pass each shard once")
        seen[r.shard.index] = r.path
    missing = [str(i) for i in range(1, count + 1) if i not in seen]
    if missing:
        raise UserError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: pass all {count} "
                        "results files of the run")
    measured: dict[str, Measured] = {}
    for r in parts:
        for k in r.keys:
            if k not in r.measured:
                raise UserError(f"{r.path} ran {k} but holds no measurement for it; re-run that shard")
            measured[k] = r.measured[k]
    lacking = [b.key for b in first.budgets.entries if b.key not in measured]
    if lacking:
        raise UserError(f"no shard measured {lacking[0]}" + (f" and {len(lacking) - 1} more" if len(lacking) > 1 else "")
                        + "; every budget must be run by one shard")
    with_base = [r for r in parts if r.baseline is not None]
    if with_base and len(with_base) != len(parts):
        raise UserError("some shards ran with --baseline and some without; run every shard with the same options")
    baseline = None
    if with_base:
        baseline = {}
        for r in with_base:
            baseline.update(r.baseline or {})
    return Merged(first.budgets, measured, baseline, tuple(parts))
