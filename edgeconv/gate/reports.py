"""What the gate's results become for CI: a JUnit file, a markdown summary, one line per breach."""
from __future__ import annotations

from typing import Iterable

from edgeconv.gate.budgets import LOWER_BOUNDS
from edgeconv.results import GateResult

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
                f"{r.name}: {r.metric} {'n/a' if r.value is None else f'{r.value:.6g}'} "
                f"{'below' if r.metric in LOWER_BOUNDS else 'exceeds'} {r.limit:g}\n{r.message}")
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
