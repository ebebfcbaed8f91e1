"""Delegate support tables on real exported files: predicted per table, measured for XNNPACK."""
from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeconv.config import CalibSpec, ExportOptions
from edgeconv.devices import delegates
from edgeconv.devices.delegates.rules import CHECKS, load_table
from edgeconv.models import load_model
from edgeconv.pipeline import export

# A source is a repository path with the function or section it comes from, or a documentation URL.
# A rule learnt from the runtime says so: "measured: <runtime and version> ... <where recorded>".
SOURCE = re.compile(r"^([\w.-]+/[\w.-]+: [\w./-]+\.(cc|h|md)\b, \S.*|https://\S+.*|measured: \S+ \d[\d.]* .*bench/results/\S+.*)$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demo")
    m = export(load_model(None), ExportOptions(targets=("tflite-int8", "tflite", "onnx-int8"), out_dir=str(out)))
    return {a.target: out / a.path for a in m.artifacts}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict[str, Path]:
    """Two tiny nets, int8: one with a nearest upsample in the middle, one with a 2x2 average pool."""
    files = {}
    for name in ("upsample_island", "avgpool_net"):
        out = tmp_path_factory.mktemp(name)
        m = export(load_model(f"zoo_delegates:{name}"),
                   ExportOptions(targets=("tflite-int8",), out_dir=str(out), calib=CalibSpec("random"), eval_samples=8))
        files[name] = out / m.artifacts[0].path
    return files


def _cli(*args: str) -> tuple[int, str]:
    from edgeconv.cli import main

    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


# --- the data ---------------------------------------------------------------------------------

def test_every_rule_names_a_source():
    names = delegates.names()
    assert set(names) >= {"xnnpack", "gpu", "nnapi", "hexagon", "qnn-ep", "ane"}
    for name in names:
        raw = tomllib.loads(resources.files("edgeconv.devices.delegates").joinpath(f"{name}.toml").read_text())
        assert raw.get("rule"), name
        for key, text in raw["sources"].items():
            assert SOURCE.match(text), (name, key, text)
        table = load_table(name)  # raises on a rule naming a missing source or an unknown check
        for r in (*table.rules, table.unsupported, *([table.partition_rule] if table.partition_rule else [])):
            assert r.source and SOURCE.match(r.source), (name, r.id)
            assert r.why and r.id.startswith(f"{name}."), (name, r.id)
            assert r.check in CHECKS
            assert r.when is None or r.when["check"] in CHECKS, r.id
        ids = [r.id for r in table.rules]
        assert len(ids) == len(set(ids)), f"{name}: duplicate rule ids"


def test_unknown_delegate_lists_the_choices():
    from edgeconv.errors import UserError

    with pytest.raises(UserError, match="choose one of: ane, gpu, hexagon, nnapi, qnn-ep, xnnpack"):
        load_table("edgetpu")


# --- the reader -------------------------------------------------------------------------------

def test_tflite_reader_gives_the_options_rules_test(demo):
    ops = delegates.read_ops(demo["tflite-int8"], "tflite")
    kinds = [o.op for o in ops]
    assert kinds.count("CONV_2D") >= 3 and "DEPTHWISE_CONV_2D" in kinds and "FULLY_CONNECTED" in kinds
    for o in ops:
        assert [t.index for t in o.outputs] and all(t.dtype == "int8" for t in o.outputs), o.label()
    conv = next(o for o in ops if o.op == "CONV_2D")
    assert conv.options["kernel"] == [3, 3] and conv.options["stride_h"] == 2
    assert conv.options["fused_activation_function"] in ("NONE", "RELU", "RELU6")
    assert conv.options["padding"] in ("SAME", "VALID") and conv.options["dilation_h_factor"] == 1
    assert conv.inputs[1].const and not conv.inputs[0].const
    assert len(conv.inputs[1].scale) == conv.inputs[1].shape[0] > 1  # per-channel weights
    mean = next(o for o in ops if o.op == "MEAN")
    assert mean.options["axes"] == [1, 2]
    # every computed input is some op's output or a graph input
    produced = {t.index for o in ops for t in o.outputs}
    for o in ops[1:]:
        assert all(t.const or t.index in produced or t.producer is None for t in o.inputs if t is not None)


def test_bad_input_is_a_user_error(tmp_path):
    from edgeconv.exporters.tflite.ops import read_ops
    from edgeconv.errors import UserError

    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(UserError, match="not a TFLite flatbuffer"):
        read_ops(junk)
    with pytest.raises(UserError, match="no such file"):
        read_ops(tmp_path / "missing.tflite")


# --- predicted vs measured --------------------------------------------------------------------

def test_full_integer_demo_runs_whole_on_nnapi_qnn_xnnpack(demo):
    for path, name in ((demo["tflite-int8"], "nnapi"), (demo["onnx-int8"], "qnn-ep"), (demo["tflite-int8"], "xnnpack")):
        v = delegates.check(path, name)
        assert v.whole and v.cpu_ops == 0 and len(v.partitions) == 1, (name, v.lines())
        assert v.delegated == tuple(range(v.ops))


def test_nnapi_feature_level_decides(demo):
    """keep_num_dims on the classifier's FULLY_CONNECTED needs NNAPI 1.3 (feature level 4)."""
    at3 = delegates.check(demo["tflite-int8"], "nnapi", level=3)
    assert [f.rule for f in at3.fallbacks] == ["nnapi.fc-keep-num-dims"]
    assert at3.cpu_ops == 1 and len(at3.partitions) == 1
    at1 = delegates.check(demo["tflite-int8"], "nnapi", level=1)
    assert at1.cpu_ops > at3.cpu_ops


def test_hexagon_wants_8bit_and_an_old_op_version(demo):
    fl = delegates.check(demo["tflite"], "hexagon")
    assert fl.cpu_ops == fl.ops and not fl.partitions  # float file: nothing runs on the DSP
    q = delegates.check(demo["tflite-int8"], "hexagon")
    assert [f.op for f in q.fallbacks] == ["FULLY_CONNECTED"] and q.fallbacks[0].rule == "hexagon.version-4"


def test_xnnpack_measured_equals_predicted_on_the_demo(demo):
    for t in ("tflite-int8", "tflite"):
        pred, meas = delegates.check(demo[t], "xnnpack"), delegates.measure(demo[t])
        assert meas.kind == "measured" and pred.kind == "predicted"
        assert meas.partitions == pred.partitions and meas.delegated == pred.delegated, t
        assert not meas.notes, meas.notes


def test_planted_ops_fall_back_where_the_table_says(planted):
    up = delegates.check(planted["upsample_island"], "xnnpack")
    assert [(f.op, f.rule) for f in up.fallbacks] == [("RESIZE_NEAREST_NEIGHBOR", "xnnpack.unsupported-op")]
    assert len(up.partitions) == 2 and "xnnpack_delegate.cc" in up.fallbacks[0].source
    pool = delegates.check(planted["avgpool_net"], "xnnpack")
    assert [(f.op, f.rule) for f in pool.fallbacks] == [("AVERAGE_POOL_2D", "xnnpack.avgpool-float-only")]
    assert len(pool.partitions) == 2
    # and the runtime agrees: same nodes kept on the CPU, same partitions
    for path, pred in ((planted["upsample_island"], up), (planted["avgpool_net"], pool)):
        meas = delegates.measure(path)
        assert meas.partitions == pred.partitions and meas.delegated == pred.delegated


def test_gpu_delegates_only_its_largest_partition(planted):
    """A CPU op splitting the graph costs the GPU the smaller side too (max_delegated_partitions = 1)."""
    from edgeconv.devices.delegates.rules import evaluate

    table = load_table("gpu")
    ops = delegates.read_ops(planted["upsample_island"], "tflite")
    resize = next(o.index for o in ops if o.op == "RESIZE_NEAREST_NEIGHBOR")
    blocked = table.__class__(**{**{f: getattr(table, f) for f in table.__dataclass_fields__},
                                 "ops": tuple(o for o in table.ops if o != "RESIZE_NEAREST_NEIGHBOR")})
    v = evaluate(blocked, ops, "upsample")
    assert len(v.partitions) == 1 and max(v.partitions[0]) > resize  # the larger side, after the resize
    rules = {f.rule for f in v.fallbacks}
    assert rules == {"gpu.unsupported-op", "gpu.max-delegated-partitions"}


# --- the command ------------------------------------------------------------------------------

def test_check_delegate_cli_exit_codes(demo, planted, tmp_path):
    code, out = _cli("check-delegate", str(demo["tflite-int8"]), "--delegate", "nnapi")
    assert code == 0 and "runs whole" in out and "1 partition(s), 0 CPU op(s)" in out
    code, out = _cli("check-delegate", str(demo["onnx-int8"]), "-d", "qnn-ep")
    assert code == 0 and ": qnn-ep (predicted)" in out
    code, out = _cli("check-delegate", str(demo["onnx-int8"]), "-d", "qnn")  # the old name, on an .onnx
    assert code == 0 and ": qnn-ep (predicted)" in out
    code, out = _cli("check-delegate", str(planted["upsample_island"]), "-d", "xnnpack", "--measured")
    lines = out.strip().splitlines()
    assert code == 1 and "[xnnpack.unsupported-op]" in lines[0] and "xnnpack_delegate.cc" in lines[0]
    assert "RESIZE_NEAREST_NEIGHBOR" in lines[0] and "2 partition(s), 1 CPU op(s)" in out and "(measured)" in out
    code, out = _cli("check-delegate", str(planted["avgpool_net"]), "-d", "xnnpack", "--json")
    assert code == 1
    import json

    data = json.loads(out)
    assert data["cpu_ops"] == 1 and data["fallbacks"][0]["rule"] == "xnnpack.avgpool-float-only"


@pytest.mark.parametrize("args,needle", [
    (("missing.tflite", "-d", "xnnpack"), "no such file"),
    (("{onnx}", "-d", "nnapi"), "table reads tflite artifacts"),
    (("{tflite}", "-d", "qnn-ep"), "table reads onnx artifacts"),
    (("{tflite}", "-d", "qnn"), "QNN TFLite delegate, which publishes no op table"),
    (("{tflite}", "-d", "edgetpu"), "is not one of"),
    (("{junk}", "-d", "gpu"), "not a TFLite flatbuffer"),
    (("{tflite}", "-d", "gpu", "--measured"), "xnnpack only"),
])
def test_check_delegate_bad_input_exits_2(demo, tmp_path, args, needle):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    fill = {"onnx": str(demo["onnx-int8"]), "tflite": str(demo["tflite-int8"]), "junk": str(junk)}
    argv = [a.format(**fill) if a.startswith("{") else str(tmp_path / a) if a.endswith(".tflite") else a for a in args]
    code, out = _cli("check-delegate", *argv)
    assert code == 2, out
    assert needle in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_ane_fp16_program_runs_whole_fp32_does_not(tmp_path):
    """The Neural Engine computes in float16: an fp32-typed ML program stays on GPU/CPU."""
    pytest.importorskip("coremltools")
    from edgeconv.errors import UserError

    bad = tmp_path / "x.mlpackage"
    bad.mkdir()
    with pytest.raises(UserError):
        delegates.check(bad, "ane")
    m = export(load_model(None), ExportOptions(targets=("coreml", "coreml-fp16"), out_dir=str(tmp_path)))
    arts = {a.target: tmp_path / a.path for a in m.artifacts}
    fp16 = delegates.check(arts["coreml-fp16"], "ane")
    assert fp16.whole and len(fp16.partitions) == 1 and any(o.op == "conv" for o in delegates.read_ops(arts["coreml-fp16"], "coreml"))
    fp32 = delegates.check(arts["coreml"], "ane")
    assert not fp32.delegated and {f.rule for f in fp32.fallbacks} == {"ane.fp32-compute"}
    assert "typed-execution" in fp32.fallbacks[0].source


# --- gate budgets -----------------------------------------------------------------------------

def test_gate_budgets_max_partitions_and_cpu_ops_are_pure_checks():
    from edgeconv.errors import UserError
    from edgeconv.gate.budgets import Measured, parse_budgets
    from edgeconv.gate.rules import evaluate

    text = ('[[budget]]\nmodel = "m"\ntarget = "tflite-int8"\ndevice = "pixel-7"\ndelegate = "nnapi"\n'
            'max_cpu_ops = 0\nmax_partitions = 1\n')
    b = parse_budgets(text, "b.toml")
    m = Measured(model="m", target="tflite-int8", device="pixel-7", artifact_sha256="0" * 64, size_bytes=1,
                 delegate="nnapi", partitions=2, cpu_ops=1, delegate_basis="predicted (nnapi.toml)")
    res = {r.metric: r for r in evaluate(b, {b.entries[0].key: m})}
    assert not res["max_cpu_ops"].passed and not res["max_partitions"].passed
    assert "predicted (nnapi.toml)" in res["max_cpu_ops"].message
    ok = evaluate(b, {b.entries[0].key: Measured(**{**m.to_dict(), "partitions": 1, "cpu_ops": 0})})
    assert all(r.passed for r in ok)
    with pytest.raises(UserError, match=r"b\.toml:\d: budget 1: max_(partitions|cpu_ops) counts what a delegate takes"):
        parse_budgets(text.replace('delegate = "nnapi"\n', ""), "b.toml")


def test_gate_cli_fails_on_a_delegate_budget(tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(f'[gate]\nout_dir = "{tmp_path / "out"}"\ncalib_samples = 32\neval_samples = 32\n\n'
                       '[[budget]]\nmodel = "edgeconv.demo:demo"\ntarget = "tflite-int8"\ndevice = "host"\n'
                       'delegate = "xnnpack"\nmax_cpu_ops = 0\nmax_partitions = 1\n\n'
                       '[[budget]]\nmodel = "edgeconv.demo:demo"\ntarget = "tflite-int8"\ndevice = "galaxy-s24"\n'
                       'delegate = "hexagon"\nmax_cpu_ops = 0\nmax_float_ops = 0\n')
    code, out = _cli("gate", str(budgets))
    assert code == 1, out
    assert re.search(r"max_cpu_ops.*measured on this host", out.replace("\n", " ")) or "measured on this host" in out
    assert "hexagon.version-4" in out
    assert "max_float_ops" in out  # the demo's full-integer file: 0 float ops, that row passes


def test_gate_max_partitions_names_the_float_op_and_passes_once_it_is_integer(tmp_path):
    """max_partitions = 1 on the Hexagon DSP: a conv left in float (quant config: c2 float) splits
    the graph and the gate names that op and the rule; the same net with c2 in int8 runs whole."""
    float_c2 = tmp_path / "c2-float.json"
    float_c2.write_text('{"global": "int8", "op_type": {}, "layer": {"c2": null}}')
    budget = ('[[budget]]\nmodel = "zoo_delegates:conv_chain"\ntarget = "tflite-int8"\ndevice = "galaxy-s24"\n'
              'delegate = "hexagon"\nmax_partitions = 1\n')
    runs = {}
    for name, setting in (("float", 'quant_config = "c2-float.json"\n'), ("int8", "")):
        budgets = tmp_path / f"{name}.toml"
        budgets.write_text(f'[gate]\nout_dir = "{tmp_path / name}"\ncalib_samples = 8\neval_samples = 8\n{setting}\n'
                           + budget)
        runs[name] = _cli("gate", str(budgets))
    code, out = runs["float"]
    breach = [ln for ln in out.splitlines() if ln.startswith("BREACH")]
    assert code == 1 and len(breach) == 1, out
    assert "galaxy-s24 @ hexagon: max_partitions 2 (limit 1)" in breach[0] and "predicted (hexagon.toml)" in breach[0]
    assert re.search(r"\[hexagon\.8bit\] CONV_2D #\d+ \([^)]*Conv2d_c2\)", breach[0]), breach[0]
    code, out = runs["int8"]
    assert code == 0 and "max_partitions" in out and "BREACH" not in out, out


# --- the report -------------------------------------------------------------------------------

def test_report_strip_marks_the_known_fallback_with_its_rule(planted):
    """`edgeconv report` draws one strip per delegate; XNNPACK's is measured and shows the int8
    AVERAGE_POOL_2D on the CPU with the rule as the op's tooltip."""
    from edgeconv.report_html import write_report

    folder = planted["avgpool_net"].parent
    w = write_report(folder)
    text = w.path.read_text()
    assert "delegates-tflite-int8" in w.charts and 'id="delegates"' in text
    svg = re.search(r'<figure class="chart" id="chart-delegates-tflite-int8".*?</figure>', text, re.DOTALL).group(0)
    rows = {m.group(1): m.group(2) for m in re.finditer(r'>(\w[\w-]*) <tspan fill="#5f6368">\((measured|predicted)\)', svg)}
    assert rows["xnnpack"] == "measured" and rows["nnapi"] == "predicted", rows
    xnn = svg[svg.index(">xnnpack <tspan"):]
    xnn = xnn[: xnn.index("</text>", xnn.index("part.,"))]
    cpu = re.findall(r'class="cpu"><title>([^<]*)</title>', xnn)
    assert len(cpu) == 1 and cpu[0].startswith("AVERAGE_POOL_2D #") and "CPU [xnnpack.avgpool-float-only]" in cpu[0]
    ops = len(delegates.read_ops(planted["avgpool_net"], "tflite"))
    assert xnn.count("<rect") == ops and "2 part., 1 CPU" in xnn


def test_qnn_names_are_unambiguous():
    """qnn-ep is ONNX Runtime's QNN execution provider; qnn (profile's QNN TFLite delegate) reaches
    it only on an .onnx file; a table-only name cannot carry a latency budget."""
    from edgeconv.devices.base import Delegate
    from edgeconv.errors import UserError
    from edgeconv.gate.budgets import parse_budgets

    assert Delegate("qnn") is Delegate.QNN and "qnn" not in delegates.names()
    assert delegates.resolve("qnn", "m.onnx") == "qnn-ep" and delegates.resolve("nnapi", "m.tflite") == "nnapi"
    with pytest.raises(UserError, match="QNN TFLite delegate, which publishes no op table"):
        delegates.resolve("qnn", "m.tflite")
    assert "ONNX Runtime" in load_table("qnn-ep").title
    entry = '[[budget]]\nmodel = "m"\ntarget = "onnx-int8"\ndevice = "galaxy-s24"\ndelegate = "qnn-ep"\n'
    assert parse_budgets(entry + "max_cpu_ops = 0\n", "b.toml").entries[0].delegate == "qnn-ep"
    with pytest.raises(UserError, match=r"b\.toml:\d+: budget 1: qnn-ep has a support table but no way to be profiled"):
        parse_budgets(entry + "p50_ms = 1.0\n", "b.toml")


def test_manifest_records_every_delegate_of_the_format(demo):
    """edgeconv.json: per artifact, each delegate whose table reads its format, measured or predicted,
    with the same counts the table gives and the table's title (qnn-ep says it is ONNX Runtime's)."""
    import json

    from edgeconv.results import Manifest

    m = Manifest.from_dict(json.loads((demo["tflite-int8"].parent / "edgeconv.json").read_text()))
    arts = {a.target: a for a in m.artifacts}
    tfl = {p.delegate: p for p in arts["tflite-int8"].delegates}
    assert set(tfl) == {"gpu", "hexagon", "nnapi", "xnnpack"}
    assert tfl["xnnpack"].how == "measured" and {p.how for n, p in tfl.items() if n != "xnnpack"} == {"predicted"}
    hex_v = delegates.check(demo["tflite-int8"], "hexagon")
    assert (tfl["hexagon"].partitions, tfl["hexagon"].cpu_ops) == (len(hex_v.partitions), hex_v.cpu_ops)
    assert any("[hexagon.version-4]" in f for f in tfl["hexagon"].fallbacks)
    (qnn,) = arts["onnx-int8"].delegates
    assert qnn.delegate == "qnn-ep" and "ONNX Runtime" in qnn.title and qnn.whole
