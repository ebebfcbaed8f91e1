"""`edgeconv gate --shard I/N` and `edgeconv gate merge`: every budget in exactly one shard, one
artifact's budgets together, and shards merged give the verdict, JUnit file and summary of the
unsharded run — first on the pure path (recorded measurements, every shard count), then once for
real through the CLI."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.errors import UserError
from edgeconv.gate.budgets import Measured, parse_budgets
from edgeconv.gate.reports import junit_xml, markdown
from edgeconv.gate.rules import evaluate
from edgeconv.gate.shard import (Shard, assignment, load_results, merge, parse_shard, results_doc, select)

BUDGETS = """
[gate]
regression_pct = 10.0

[[budget]]
model = "zoo:a"
target = "tflite-int8"
device = "host"
p50_ms = 1.0
p90_ms = 2.0
size_kb = 64
accuracy_drop = 1.0

[[budget]]
model = "zoo:a"
target = "tflite-int8"
device = "pixel"
p50_ms = 0.5
p90_ms = 1.0

[[budget]]
model = "zoo:a"
target = "onnx"
device = "host"
p50_ms = 3.0

[[budget]]
model = "zoo:b"
target = "tflite-int8"
device = "host"
p50_ms = 1.0
size_kb = 10

[[budget]]
model = "zoo:b"
target = "coreml"
device = "iphone-15-pro"
p50_ms = 1.0

[[budget]]
model = "zoo:c"
target = "onnx-int8"
device = "host"
delegate = "cpu"
p50_ms = 1.0
"""


def _measured() -> dict[str, Measured]:
    """Recorded-style measurements: one p50 breach, one size breach, one parity failure, one
    predicted row (its p90 budget fails), one regression against the baseline."""
    def m(model, target, device, p50, p90=None, method="measured-host", size=20_000, parity=0, delegate=""):
        basis = {"measured-host": "measured on this host", "predicted": "predicted (uncalibrated …)",
                 "measured-device": f"measured on {device}"}[method]
        return Measured(model, target, device, f"{model}{target}".ljust(64, "0"), size, accuracy=0.98,
                        reference_accuracy=0.985, p50_ms=p50, p90_ms=p90, method=method, basis=basis,
                        parity_failures=parity, parity_note="" if not parity else "vs torch-fp32: cosine 0.2 < 0.95",
                        delegate=delegate)
    rows = [m("zoo:a", "tflite-int8", "host", 0.8, 1.1), m("zoo:a", "tflite-int8", "pixel", 0.7, None, "predicted"),
            m("zoo:a", "onnx", "host", 2.0, 2.4), m("zoo:b", "tflite-int8", "host", 0.9, 1.0, size=30_000),
            m("zoo:b", "coreml", "iphone-15-pro", 0.6, 0.7, "measured-device", parity=2),
            m("zoo:c", "onnx-int8", "host", 1.2, 1.3, delegate="cpu")]
    return {r.key: r for r in rows}


def _baseline(measured):
    import dataclasses

    return {k: dataclasses.replace(v, p50_ms=v.p50_ms / (1.5 if k.startswith("zoo:a / onnx") else 1.02))
            for k, v in measured.items()}


def test_shard_syntax():
    assert parse_shard("1/1") == Shard(1, 1) and parse_shard(" 3 / 4 ") == Shard(3, 4)
    for bad in ("3/2", "0/0", "a/b", "0/3", "1/0", "", "1", "1/2/3", "-1/2", "1.5/2"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_every_budget_in_one_shard_and_an_artifacts_budgets_together(count):
    b = parse_budgets(BUDGETS, "b.toml")
    where = assignment(b, count)
    parts = [select(b, Shard(i, count)) for i in range(1, count + 1)]
    keys = [e.key for p in parts for e in p.entries]
    assert sorted(keys) == sorted(e.key for e in b.entries)  # each exactly once
    for e in b.entries:  # same model × target: same shard (no artifact exported twice)
        assert all(where[o.key] == where[e.key] for o in b.entries if (o.model, o.target) == (e.model, e.target))
    sizes = [len({(e.model, e.target) for e in p.entries}) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # round-robin: groups dealt evenly
    assert assignment(parse_budgets(BUDGETS, "b.toml"), count) == where  # stable


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_merged_shards_equal_the_unsharded_run(tmp_path, count, with_baseline):
    b = parse_budgets(BUDGETS, "b.toml")
    measured = _measured()
    base = _baseline(measured) if with_baseline else None
    whole = evaluate(b, measured, base)
    assert not all(r.passed for r in whole)
    files = []
    for i in range(1, count + 1):
        ran = select(b, Shard(i, count))
        mine = {e.key: measured[e.key] for e in ran.entries}  # a shard measures only its own budgets
        doc = results_doc(b, Shard(i, count), ran, evaluate(ran, mine, base), mine, base, "ab" * 32)
        p = tmp_path / f"shard-{i}.json"
        p.write_text(json.dumps(doc))
        files.append(p)
    m = merge(load_results(p) for p in reversed(files))  # order of the files does not matter
    merged = evaluate(m.budgets, m.measured, m.baseline)
    assert merged == whole
    assert junit_xml(merged) == junit_xml(whole) and markdown(merged) == markdown(whole)


def _shard_files(tmp_path, count=2):
    b = parse_budgets(BUDGETS, "b.toml")
    measured = _measured()
    out = []
    for i in range(1, count + 1):
        ran = select(b, Shard(i, count))
        mine = {e.key: measured[e.key] for e in ran.entries}
        doc = results_doc(b, Shard(i, count), ran, evaluate(ran, mine, None), mine, None, "ab" * 32)
        p = tmp_path / f"s{i}-of-{count}.json"
        p.write_text(json.dumps(doc))
        out.append(p)
    return out


def _one_line(r, *words):
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeconv: error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def run(*args):
    return CliRunner().invoke(main, ["gate", *map(str, args)], catch_exceptions=False)


def test_merge_refuses_incomplete_or_mixed_shards(tmp_path):
    s1, s2 = _shard_files(tmp_path, 2)
    t1, t2, t3 = _shard_files(tmp_path, 3)
    _one_line(run("merge", s1), "shard(s) 2/2 missing")
    _one_line(run("merge", s1, s1, s2), "both shard 1/2")
    _one_line(run("merge", s1, t2), "is shard 2/3 but")
    other = json.loads(s2.read_text())
    other["budgets"]["sha256"] = "ff" * 32
    (tmp_path / "other.json").write_text(json.dumps(other))
    _one_line(run("merge", s1, tmp_path / "other.json"), "different budgets file")
    (tmp_path / "broken.json").write_text("{oops")
    _one_line(run("merge", s1, tmp_path / "broken.json"), "broken.json", "not readable JSON")
    (tmp_path / "foreign.json").write_text('{"results": []}')
    _one_line(run("merge", s1, tmp_path / "foreign.json"), "not an edgeconv gate results file")
    _one_line(run("merge", tmp_path / "missing.json"), "missing.json", "does not exist")
    cut = json.loads(s2.read_text())
    del cut["measured"]
    (tmp_path / "cut.json").write_text(json.dumps(cut))
    _one_line(run("merge", s1, tmp_path / "cut.json"), "incomplete")


@pytest.mark.parametrize("shard", ["3/2", "0/0", "a/b", "1/0"])
def test_bad_shard_is_one_line_exit_2_before_reading_budgets(tmp_path, shard):
    _one_line(run(tmp_path / "missing.toml", "--shard", shard), "--shard")


def test_merge_cli_writes_the_reports_and_exits_1_on_a_breach(tmp_path):
    s1, s2 = _shard_files(tmp_path, 2)
    r = run("merge", s1, s2, "--junit", tmp_path / "m.xml", "--summary", tmp_path / "m.md",
            "--html", tmp_path / "m.html", "--save", tmp_path / "m.json", "--write-baseline", tmp_path / "base.json")
    assert r.exit_code == 1, r.output
    whole = evaluate(parse_budgets(BUDGETS, "b.toml"), _measured())
    assert (tmp_path / "m.xml").read_text() == junit_xml(whole)
    assert (tmp_path / "m.md").read_text() == markdown(whole)
    assert r.stderr.strip().splitlines()[-1] == (
        f"edgeconv: error: {sum(not x.passed for x in whole)} of {len(whole)} checks breached their budget")
    assert "merged from 2 shard results" in (tmp_path / "m.html").read_text()
    again = load_results(tmp_path / "m.json")  # a merged file is a whole (1/1) results file
    assert again.shard == Shard(1, 1) and set(again.keys) == set(_measured())
    assert set(json.loads((tmp_path / "base.json").read_text())["results"]) == set(_measured())


# --------------------------------------------------------------------------- once for real

REAL = """
[gate]
runs = 8
warmup = 1
calib_samples = 24
eval_samples = 48
out_dir = "{out}"

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "host"
p50_ms = 0.000001
size_kb = 500

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "pixel"
p50_ms = 1000

[[budget]]
model = "edgeconv.demo:demo"
target = "onnx"
device = "host"
p50_ms = 1000
size_kb = 500
"""


def _cases(xml_text):
    suite = ET.fromstring(xml_text).find("testsuite")
    return [(c.get("classname"), c.get("name"), c.find("failure") is not None) for c in suite.findall("testcase")]


def test_real_shards_through_the_cli_merge_to_the_unsharded_verdict(tmp_path):
    """Two shards (one export each), merged; against the same file run unsharded. Latencies are
    re-measured in each run, so values differ; the checks, their verdicts and the breach do not —
    and the merged reports equal what `evaluate` gives on the shards' own measurements."""
    toml = tmp_path / "b.toml"
    toml.write_text(REAL.format(out=tmp_path / "out"))
    shards = []
    for i in (1, 2):
        r = run(toml, "--shard", f"{i}/2", "--save", tmp_path / f"s{i}.json")
        assert r.exit_code in (0, 1), r.output
        shards.append(tmp_path / f"s{i}.json")
    assert {k for s in shards for k in load_results(s).keys} == {
        "edgeconv.demo:demo / tflite-int8 / host", "edgeconv.demo:demo / tflite-int8 / pixel",
        "edgeconv.demo:demo / onnx / host"}
    r = run("merge", *shards, "--junit", tmp_path / "m.xml", "--summary", tmp_path / "m.md", "--html", tmp_path / "m.html")
    assert r.exit_code == 1, r.output
    whole = run(toml, "--junit", tmp_path / "w.xml", "--summary", tmp_path / "w.md")
    assert whole.exit_code == 1, whole.output
    assert _cases((tmp_path / "m.xml").read_text()) == _cases((tmp_path / "w.xml").read_text())
    assert [l.split("|")[1:4] for l in (tmp_path / "m.md").read_text().splitlines()[4:]] == \
        [l.split("|")[1:4] for l in (tmp_path / "w.md").read_text().splitlines()[4:]]
    assert (tmp_path / "m.md").read_text().splitlines()[0] == (tmp_path / "w.md").read_text().splitlines()[0]
    assert r.stderr.strip().splitlines()[-1] == whole.stderr.strip().splitlines()[-1]
    m = merge(load_results(s) for s in shards)
    assert (tmp_path / "m.xml").read_text() == junit_xml(evaluate(m.budgets, m.measured, m.baseline))


def test_example_sharded_workflow_is_a_matrix_merged_once():
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples/ci/edgeconv-gate-sharded.yml").read_text())
    shards = wf["jobs"]["shard"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, int(wf["env"]["SHARDS"]) + 1))
    steps = " ".join(str(s.get("run", "")) for s in wf["jobs"]["shard"]["steps"])
    assert '--shard "${{ matrix.shard }}/$SHARDS"' in steps and "--save" in steps
    merge = " ".join(str(s.get("run", "")) for s in wf["jobs"]["merge"]["steps"])
    assert "edgeconv gate merge gate-shard-*.json" in merge and "--html" in merge and "--junit" in merge
