"""The gate's rules and reports as pure functions: budgets parsing, evaluation, baseline, JUnit, markdown."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edgeconv.errors import UserError
from edgeconv.gate.budgets import Measured, baseline_json, load_baseline, load_budgets, parse_budgets
from edgeconv.gate.reports import breach_lines, junit_xml, markdown
from edgeconv.gate.rules import evaluate

TARGETS = ["onnx-fp32", "tflite-fp32", "tflite-int8"]
DEVICES = ["host", "pixel-7", "pixel", "galaxy-s24"]

GOOD = """\
[gate]
runs = 20
regression_pct = 10

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "host"
p50_ms = 2.0
p90_ms = 3.0
size_kb = 64
accuracy_drop = 1.0

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "pixel"
p50_ms = 0.5
regression_pct = 5
"""


def parse(text: str):
    return parse_budgets(text, "b.toml", TARGETS, DEVICES)


def measured(device="host", p50=1.0, p90=1.5, size=32 * 1024, acc=0.985, ref=0.99, method="measured-host",
             sha="ab" * 32) -> Measured:
    basis = "measured on this host" if method == "measured-host" else "predicted (uncalibrated: …)"
    return Measured("edgeconv.demo:demo", "tflite-int8", device, sha, size, acc, ref, p50, p90, method, basis)


def both(**host) -> dict[str, Measured]:
    m = {"host": measured(**host), "pixel": measured("pixel", p50=0.3, p90=None, method="predicted")}
    return {v.key: v for v in m.values()}


def test_good_budgets_parse_with_settings_and_lines():
    b = parse(GOOD)
    assert b.settings.runs == 20 and b.settings.warmup == 5 and b.settings.regression_pct == 10.0
    assert [e.device for e in b.entries] == ["host", "pixel"]
    assert b.entries[0].line == 5 and b.entries[1].line == 14
    assert b.entries[0].size_kb == 64.0 and b.entries[1].p90_ms is None and b.entries[1].regression_pct == 5.0


def test_all_within_budget_passes_one_result_per_check():
    results = evaluate(parse(GOOD), both())
    assert [(r.metric, r.passed) for r in results] == [
        ("p50_ms", True), ("p90_ms", True), ("size_kb", True), ("accuracy_drop", True), ("p50_ms", True)]
    assert results[2].value == pytest.approx(32.0)
    assert results[3].value == pytest.approx(0.5)  # 99.0 % -> 98.5 %: half a point
    assert "predicted" in results[4].message  # a prediction says so in its row


@pytest.mark.parametrize("field, value, metric", [
    ("p50", 2.5, "p50_ms"), ("p90", 3.01, "p90_ms"), ("size", 65 * 1024, "size_kb"), ("acc", 0.97, "accuracy_drop"),
])
def test_each_limit_breaches_just_above_it(field, value, metric):
    results = evaluate(parse(GOOD), both(**{field: value}))
    bad = [r for r in results if not r.passed]
    assert [r.metric for r in bad] == [metric]
    assert bad[0].value > bad[0].limit
    assert breach_lines(results)[0].startswith(f"BREACH edgeconv.demo:demo / tflite-int8 / host: {metric}")


def test_budget_equal_to_measurement_passes_and_just_below_fails():
    b = parse(GOOD.replace("p50_ms = 2.0", "p50_ms = 1.0"))
    assert evaluate(b, both(p50=1.0))[0].passed
    assert not evaluate(b, both(p50=1.0001))[0].passed


def test_p90_budget_against_a_prediction_fails_saying_it_needs_a_measurement():
    """A prediction has no p90: the row fails and says so, never checking the p50 in its place."""
    b = parse(GOOD.replace("p50_ms = 0.5\n", "p50_ms = 0.5\np90_ms = 1.0\n"))
    rows = {(r.name.rsplit(" / ", 1)[1], r.metric): r for r in evaluate(b, both())}
    p90 = rows[("pixel", "p90_ms")]
    assert not p90.passed and p90.value is None and p90.limit == 1.0
    assert p90.message.startswith("not measured: p90 needs a measurement; predicted (")
    assert "budget p50_ms instead" in p90.message
    assert rows[("pixel", "p50_ms")].passed  # the p50 budget of the same prediction still checks
    assert rows[("host", "p90_ms")].passed  # a measured p90 is checked as before
    assert [ln for ln in breach_lines(evaluate(b, both())) if "p90_ms" in ln] == [
        f"BREACH edgeconv.demo:demo / tflite-int8 / pixel: p90_ms n/a (limit 1) — {p90.message}"]
    case = [c for c in ET.fromstring(junit_xml([p90])).iter("testcase")][0]
    assert case.find("failure") is not None and case.find("skipped") is None


def test_p90_budget_against_a_runtime_without_p90_fails_too():
    # benchmark_model reports no p90 (NaN in its LatencyReport, None once collected)
    m = both()
    key = next(k for k in m if k.endswith("host"))
    for missing in (None, float("nan")):
        m[key] = measured(p90=missing)
        r = [x for x in evaluate(parse(GOOD), m) if x.metric == "p90_ms"][0]
        assert not r.passed and r.value is None and r.message.startswith("not measured:")
        assert "reported no p90" in r.message


def test_accuracy_budget_without_labels_is_a_breach_not_a_silent_pass():
    r = [x for x in evaluate(parse(GOOD), both(acc=None)) if x.metric == "accuracy_drop"][0]
    assert not r.passed and r.value is None and "no labels" in r.message


def test_regression_against_baseline():
    budgets = parse(GOOD)
    base = {k: v for k, v in both().items()}
    # host 12 % slower than its baseline: over the file-wide 10 %
    results = evaluate(budgets, both(p50=1.12), base)
    reg = [r for r in results if r.metric == "regression_pct"]
    assert [r.name.endswith("host") for r in reg] == [True, False]
    assert not reg[0].passed and reg[0].value == pytest.approx(12.0)
    assert reg[1].passed and reg[1].value == pytest.approx(0.0) and reg[1].limit == 5.0  # per-budget limit
    assert evaluate(budgets, both(p50=1.09), base)[-2].passed  # 9 % is within 10 %


def test_prediction_is_never_compared_with_a_measured_baseline():
    budgets = parse(GOOD)
    base = both()
    now = both()
    key = next(k for k in now if k.endswith("pixel"))
    base[key] = measured("pixel", p50=0.01, method="measured-device")
    reg = [r for r in evaluate(budgets, now, base) if r.metric == "regression_pct"][1]
    assert reg.passed and reg.value is None and "not compared" in reg.message


def test_baseline_round_trip(tmp_path):
    m = both()
    p = tmp_path / "base.json"
    p.write_text(baseline_json(m))
    assert load_baseline(p) == m
    p.write_text(json.dumps({"results": {}}))
    with pytest.raises(UserError, match="not an edgeconv gate baseline"):
        load_baseline(p)
    with pytest.raises(UserError, match="does not exist; write one with --write-baseline"):
        load_baseline(tmp_path / "none.json")


def test_junit_xml_is_valid_with_one_testcase_per_check_and_failures_marked():
    budgets = parse(GOOD)
    results = evaluate(budgets, both(p50=9.0, size=100 * 1024), {})
    root = ET.fromstring(junit_xml(results))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(results) == 7  # 5 limits + 2 regression checks without a baseline entry
    assert suite.get("tests") == "7" and suite.get("failures") == "2" and suite.get("skipped") == "2"
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("edgeconv.demo:demo / tflite-int8 / host", "p50_ms"),
                      ("edgeconv.demo:demo / tflite-int8 / host", "size_kb")}
    assert all(c.get("classname") and c.get("name") for c in cases)


def test_junit_escapes_odd_names():
    from edgeconv.results import GateResult

    xml = junit_xml([GateResult('m<&>"', "p50_ms", 2.0, 1.0, False, "a < b & c")])
    case = ET.fromstring(xml).find("testsuite/testcase")
    assert case.get("classname") == 'm<&>"' and case.find("failure").get("message") == "a < b & c"


def test_markdown_summary_names_state_and_rows():
    md = markdown(evaluate(parse(GOOD), both(p50=9.0)))
    lines = md.splitlines()
    assert lines[0] == "## edgeconv gate: FAILED — 4 of 5 checks within budget"
    table = [l for l in lines if l.startswith("| ")]
    assert len(table) == 1 + 5  # header + one row per check
    assert table[1].startswith("| ❌ | edgeconv.demo:demo / tflite-int8 / host | p50_ms | 9 | 2 |")
    assert "predicted (uncalibrated" in md


# --- strict validation: every problem names the line, key and fix ---------------------------------

@pytest.mark.parametrize("text, pattern", [
    ("[[budget]]\nmodel = 'm'\ntarget = 'tflite-int8'\ndevice = 'host'\np50_ms = \n",
     r"b.toml is not valid TOML: .*line 5.*fix the syntax"),
    (GOOD.replace("p90_ms = 3.0", "p90 = 3.0"), r"b.toml:10: unknown key 'p90' in budget 1; allowed: model, target"),
    (GOOD.replace("runs = 20", "iterations = 20"), r"b.toml:2: unknown key 'iterations' in \[gate\]; allowed: runs"),
    (GOOD + "\n[limits]\nx = 1\n", r"b.toml:\d+: unknown key 'limits'; the file holds a \[gate\] table"),
    (GOOD.replace('target = "tflite-int8"\ndevice = "pixel"', 'device = "pixel"'),
     r"b.toml:14: budget 2 lacks target \(a string\), e.g. target = \"tflite-int8\""),
    (GOOD.replace('target = "tflite-int8"\ndevice = "host"', 'target = "tflite-int9"\ndevice = "host"'),
     r"b.toml:7: budget 1 names target 'tflite-int9', which does not exist; choose one of: onnx-fp32"),
    (GOOD.replace('device = "pixel"', 'device = "nokia"'),
     r"b.toml:17: budget 2 names device 'nokia', which does not exist; choose one of: galaxy-s24"),
    (GOOD.replace("p50_ms = 2.0", "p50_ms = -2.0"), r"b.toml:9: budget 1: p50_ms = -2.0 must be a number greater than 0"),
    (GOOD.replace("size_kb = 64", 'size_kb = "64"'), r"b.toml:11: budget 1: size_kb = '64' must be a number"),
    (GOOD.replace("runs = 20", "runs = 0"), r"b.toml:2: runs = 0 must be a whole number 1 or more"),
    (GOOD.replace("p50_ms = 0.5\nregression_pct = 5\n", "regression_pct = 5\n"),
     r"b.toml:14: budget 2 \(edgeconv.demo:demo / tflite-int8 / pixel\) sets no limit; add at least one of p50_ms"),
    (GOOD.replace('device = "pixel"', 'device = "host"'), r"b.toml:14: budget for .* repeats the one at line 5"),
    ("[gate]\nruns = 3\n", r"b.toml: no \[\[budget\]\] entries; add one"),
])
def test_malformed_budgets_are_one_line_user_errors(text, pattern):
    with pytest.raises(UserError, match=pattern) as e:
        parse(text)
    assert "\n" not in str(e.value)


def test_load_budgets_checks_names_against_the_registries(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text(GOOD.replace('device = "pixel"', 'device = "pixel-9000"'))
    with pytest.raises(UserError, match=r"device 'pixel-9000', which does not exist; choose one of: .*pixel-7"):
        load_budgets(p)
    p.write_text(GOOD)
    assert len(load_budgets(p).entries) == 2
    with pytest.raises(UserError, match="budgets file .* does not exist"):
        load_budgets(tmp_path / "missing.toml")


def test_example_ci_budgets_are_valid_against_the_registries():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples" / "ci"
    b = load_budgets(root / "budgets.toml")
    assert {e.device for e in b.entries} == {"host", "galaxy-s24", "pixel"}
    assert b.settings.regression_pct == 25.0
    workflow = (root / "edgeconv-gate.yml").read_text()
    assert "edgeconv gate \"$BUDGETS\"" in workflow and "examples/ci/budgets.toml" in workflow


def test_parity_failure_fails_the_gate_once_per_artifact():
    import dataclasses

    m = {k: dataclasses.replace(v, parity_failures=1, parity_note="vs torch-fp32: cosine 0.91 < 0.999")
         for k, v in both().items()}
    results = evaluate(parse(GOOD), m)
    parity = [r for r in results if r.metric == "parity_failures"]
    assert len(parity) == 1  # host and pixel budgets share the one tflite-int8 artifact
    assert not parity[0].passed and parity[0].name == "edgeconv.demo:demo / tflite-int8"
    assert "cosine 0.91" in parity[0].message
    ok = {k: dataclasses.replace(v, parity_failures=0) for k, v in both().items()}
    assert all(r.passed for r in evaluate(parse(GOOD), ok))


def test_delegate_is_part_of_a_budget_key_and_validated():
    text = GOOD.replace('device = "pixel"', 'device = "pixel"\ndelegate = "xnnpack"')
    b = parse_budgets(text, "b.toml", TARGETS, DEVICES, ["xnnpack", "nnapi"])
    assert b.entries[1].delegate == "xnnpack" and b.entries[1].key.endswith("/ pixel @ xnnpack")
    # the same device twice is fine when the delegates differ
    twice = text + '\n[[budget]]\nmodel = "edgeconv.demo:demo"\ntarget = "tflite-int8"\ndevice = "pixel"\n' \
                   'delegate = "nnapi"\np50_ms = 1.0\n'
    assert len(parse_budgets(twice, "b.toml", TARGETS, DEVICES, ["xnnpack", "nnapi"]).entries) == 3
    with pytest.raises(UserError, match=r"b.toml:18: budget 2: delegate = 'tpu' is not a delegate; choose one of: nnapi"):
        parse_budgets(text.replace('"xnnpack"', '"tpu"'), "b.toml", TARGETS, DEVICES, ["xnnpack", "nnapi"])
    m = measured("pixel", method="predicted")
    import dataclasses
    m = dataclasses.replace(m, delegate="xnnpack")
    assert m.key == b.entries[1].key


ARTIFACT = """\
[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "host"
artifact = "dist/demo.tflite"
check = true
size_kb = 64
"""


def test_check_rule_fails_an_artifact_whose_check_fails_and_passes_one_that_passes():
    import dataclasses

    b = parse(ARTIFACT)
    e = b.entries[0]
    assert e.artifact == "dist/demo.tflite" and e.check is True and e.size_kb == 64.0
    base = Measured("edgeconv.demo:demo", "tflite-int8", "host", "ab" * 32, 32 * 1024)
    bad = dataclasses.replace(base, check_failures=1, check_note="int8 layers in isolation: fc: 17 steps")
    rows = evaluate(b, {e.key: bad})
    check = next(r for r in rows if r.metric == "check")
    assert not check.passed and check.value == 1.0 and "fc: 17 steps" in check.message
    assert [r.metric for r in rows] == ["check", "size_kb"]  # no export: no parity row of its own
    good = dataclasses.replace(base, check_failures=0, check_note="passed")
    assert all(r.passed for r in evaluate(b, {e.key: good}))
    missing = evaluate(b, {e.key: base})  # no verdict collected: a breach, never a silent pass
    assert not next(r for r in missing if r.metric == "check").passed


@pytest.mark.parametrize("text, pattern", [
    (ARTIFACT.replace("size_kb = 64", "p50_ms = 2.0"),
     r"b.toml:7: budget 1: p50_ms is measured on the gate's own export, but artifact names a file built elsewhere"),
    (ARTIFACT.replace("check = true\n", ""), r"b.toml:5: budget 1: artifact is judged by `edgeconv check`; add check = true"),
    (ARTIFACT.replace("check = true", "check = 3"), r"b.toml:6: budget 1: check = 3 must be true, or the path"),
    (ARTIFACT.replace('artifact = "dist/demo.tflite"\n', "").replace("check = true", 'check = "c.json"'),
     r"b.toml:5: budget 1: a saved verdict is for a file built elsewhere; add artifact"),
])
def test_bad_check_budgets_are_one_line_user_errors(text, pattern):
    with pytest.raises(UserError, match=pattern) as e:
        parse(text)
    assert "\n" not in str(e.value)
# --- sparse targets: min_sparsity (a floor) and max_drop (points below the dense source model) ---

SPARSE = """\
[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-sparse"
device = "host"
min_sparsity = 0.75
max_drop = 1.0
"""


def sparse_measured(sparsity=0.8, drop=0.4) -> dict[str, Measured]:
    m = Measured("edgeconv.demo:demo", "tflite-sparse", "host", "cd" * 32, 20_000, 0.988, 0.988,
                 parity_failures=0, sparsity=sparsity, source_drop=drop,
                 sparse_note="accuracy 98.80% vs the dense model's 99.20%; 1x1 zeros 80.0% in the file")
    return {m.key: m}


def parse_sparse(text: str = SPARSE):
    return parse_budgets(text, "b.toml", [*TARGETS, "tflite-sparse"], DEVICES, sparse_targets=["tflite-sparse"])


def test_sparse_budget_within_limits_passes():
    assert parse_sparse("[gate]\nprune_epochs = 20\n" + SPARSE).settings.prune_epochs == 20
    assert parse_sparse().settings.prune_epochs == 0  # one-shot unless asked
    rows = {r.metric: r for r in evaluate(parse_sparse(), sparse_measured())}
    assert rows["min_sparsity"].passed and rows["min_sparsity"].value == pytest.approx(0.8)
    assert rows["min_sparsity"].message.startswith("0.8 >= 0.75; accuracy 98.80%")
    assert rows["max_drop"].passed and rows["max_drop"].value == pytest.approx(0.4)
    assert rows["min_sparsity"].limit == 0.75 and rows["max_drop"].limit == 1.0


@pytest.mark.parametrize("kw, metric, line", [
    ({"sparsity": 0.7}, "min_sparsity", "min_sparsity 0.7 (limit 0.75) — 0.7 < 0.75"),
    ({"drop": 2.5}, "max_drop", "max_drop 2.5 (limit 1) — 2.5 > 1"),
])
def test_sparse_budget_breach_names_the_number(kw, metric, line):
    results = evaluate(parse_sparse(), sparse_measured(**kw))
    assert [r.metric for r in results if not r.passed] == [metric]
    (breach,) = breach_lines(results)
    assert breach.startswith(f"BREACH edgeconv.demo:demo / tflite-sparse / host: {line}"), breach
    failure = next(ET.fromstring(junit_xml(results)).iter("failure"))
    assert ("below 0.75" if metric == "min_sparsity" else "exceeds 1") in failure.text


def test_sparse_budget_is_a_floor_at_equality():
    assert all(r.passed for r in evaluate(parse_sparse(), sparse_measured(sparsity=0.75)))
    assert not all(r.passed for r in evaluate(parse_sparse(), sparse_measured(sparsity=0.7499)))


def test_sparse_budget_without_a_reading_is_a_breach():
    results = evaluate(parse_sparse(), sparse_measured(sparsity=None, drop=None))
    assert [(r.metric, r.passed, r.value) for r in results if r.metric != "parity_failures"] == [
        ("min_sparsity", False, None), ("max_drop", False, None)]


@pytest.mark.parametrize("text, needle", [
    (SPARSE.replace("tflite-sparse", "tflite-int8"), "b.toml:5: budget 1: min_sparsity applies to the sparse targets"),
    (SPARSE.replace("min_sparsity = 0.75", "min_sparsity = 80"), "b.toml:5: budget 1: min_sparsity = 80 is a fraction"),
    (SPARSE.replace("max_drop = 1.0", "max_drop = -1"), "b.toml:6: budget 1: max_drop = -1 must be a number"),
    ("[gate]\nprune_epochs = -2\n" + SPARSE, "b.toml:2: prune_epochs = -2 must be a whole number 0 or more"),
])
def test_bad_sparse_budgets_name_the_line(text, needle):
    with pytest.raises(UserError, match="^" + needle.replace("(", r"\(")):
        parse_sparse(text)


def test_a_target_that_did_not_export_is_one_export_breach_per_budget_never_a_size_pass():
    import dataclasses

    b = parse(GOOD)
    m = both()
    host = next(k for k in m if k.endswith("/ host"))
    line = "convert (tflite-int8) failed: litert-torch cannot lower aten.logcumsumexp"
    m[host] = dataclasses.replace(m[host], artifact_sha256="", size_bytes=0, p50_ms=None, p90_ms=None, failure=line)
    results = evaluate(b, m)
    on_host = [r for r in results if r.name == host]
    # size 0 of a file that does not exist must not pass size_kb: the export is the one verdict
    assert [(r.metric, r.passed) for r in on_host] == [("export", False)]
    assert on_host[0].message == "not exported: " + line
    assert any(r.name.endswith("/ pixel") and r.passed for r in results)  # the other budget still judged
    assert breach_lines(results) == [f"BREACH {host}: export n/a (limit 0) — not exported: {line}"]
