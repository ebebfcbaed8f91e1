"""--max-drop: a collapsed int8 model (planted bad layer) brought back within budget by keeping the
fewest layers float, checked again after a real re-quantization with those nodes left out, and in
the exported artifacts; bad budgets and bad evaluators are one-line user errors (exit 2)."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from edgeconv import registrations
from edgeconv.quant.program import find_layers, forward
from edgeconv.quant.sensitivity import analyze
from edgeconv.config import ExportOptions, QuantOptions
from edgeconv.context import Context
from edgeconv.demo import heldout
from edgeconv.errors import UserError
from edgeconv.quant.fallback import choose_float_nodes, keep_float, with_float_nodes
from edgeconv.graph import capture
from edgeconv.passes.manager import run_passes
from zoo_planted import EVAL, planted_net

registrations.load()
MAX_DROP = 0.03


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    net = planted_net()
    data = heldout()
    calib = data.take(0, 48)
    ctx = Context(options=ExportOptions(quant=QuantOptions(samples=48)), model=None, calib=calib)
    folded = run_passes(capture(net, (torch.zeros(1, 3, 32, 32),)), ctx, ("fold-conv-bn",))
    quantized = run_passes(folded, ctx, ("quantize",))
    evalset = data.take(EVAL.start, EVAL.stop)
    report = analyze(quantized, evalset.x)
    return net, ctx, folded, quantized, evalset, report


def requantize(folded, ctx):
    """What the quantize pass does, with the quantizer wrapped by keep_float(Graph.float_nodes)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeconv.passes.quantize import calibrate, make_quantizer
    from edgeconv.quant.qparams import read_qparams

    quantizer = keep_float(make_quantizer(ctx.options.quant), folded.float_nodes)
    prepared = prepare_pt2e(folded.module(), quantizer)
    calibrate(prepared, ctx)
    converted = convert_pt2e(prepared, fold_quantize=False)
    return folded.with_module(converted, quantizer=quantizer, qparams=read_qparams(converted))


def test_collapsed_model_brought_within_budget(setup):
    net, _, _, quantized, evalset, report = setup
    res = choose_float_nodes(quantized, evalset, report, MAX_DROP)
    assert res.metric == "label accuracy"
    assert res.float_score - res.int8_score > 0.5  # int8 collapsed
    assert res.drop <= MAX_DROP
    assert "c2" in res.float_modules and len(res.float_nodes) <= 2
    with torch.no_grad():
        float_acc = float((net(torch.from_numpy(evalset.x)).argmax(1).numpy() == evalset.y).mean())
    assert res.float_score == pytest.approx(float_acc)


def test_real_requantization_with_float_nodes_meets_budget(setup):
    _, ctx, folded, quantized, evalset, report = setup
    res = choose_float_nodes(quantized, evalset, report, MAX_DROP)
    graph = requantize(with_float_nodes(folded, res), ctx)
    out = forward(graph.module(), evalset.x)
    acc = float((out.argmax(1) == evalset.y).mean())
    assert res.float_score - acc <= MAX_DROP + 0.011  # one sample of 100 may round differently
    layers = {lay.node: lay for lay in find_layers(graph.module())}
    for node in res.float_nodes:
        assert not layers[node].dq_nodes, f"{node} still has quantized weight/output"
    others = [lay for n, lay in layers.items() if n not in res.float_nodes]
    assert others and all(lay.dq_nodes for lay in others)
    # c3 reads c2's float output: float weights (as every format lowers it), its output still int8
    nodes = {n.name: n for n in graph.module().graph.nodes}
    c3 = next(lay for lay in others if lay.module == "c3")
    assert c3.dq_nodes and all(nodes[d].args[0].args[0].op != "get_attr" for d in c3.dq_nodes)


def test_coreml_w8a8_honours_float_nodes(setup, tmp_path):
    pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")
    from edgeconv.exporters.coreml.read import read_weights
    from edgeconv.registry import TARGETS

    _, ctx, folded, quantized, evalset, report = setup
    res = choose_float_nodes(quantized, evalset, report, MAX_DROP)
    graph = requantize(with_float_nodes(folded, res), ctx)
    path = tmp_path / "fb.mlpackage"
    TARGETS.get("coreml-w8a8")().export(graph, ctx, path)
    dtypes = [w.dtype for w, _ in read_weights(path)]
    # the float layers, and the layers reading their float outputs (float weights, int8 outputs)
    n_float = len(res.float_nodes) + len(res.float_readers)
    assert res.float_readers == ("c3",)
    assert dtypes.count("float32") == n_float and dtypes.count("int8") == 4 - n_float
    out = TARGETS.get("coreml-w8a8")().load(path)(evalset.x)
    assert res.float_score - float((out.argmax(1) == evalset.y).mean()) <= MAX_DROP + 0.011


def test_no_float_layer_when_budget_already_met(setup):
    _, _, _, quantized, evalset, report = setup
    res = choose_float_nodes(quantized, evalset, report, 1.0)
    assert res.float_nodes == () and res.final_score == res.int8_score


def test_keep_float_without_names_is_the_quantizer_itself(setup):
    from edgeconv.passes.quantize import make_quantizer

    q = make_quantizer(setup[1].options.quant)
    assert keep_float(q, ()) is q
    wrapped = keep_float(q, ("conv2d",))
    assert isinstance(wrapped, type(q)) and wrapped.float_nodes == ("conv2d",)


@pytest.fixture()
def evaluators(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent("""
        import numpy as np
        
        _REF = {}

        def exact(outputs, data):
            # share of outputs equal to the float model's: any int8 tensor left costs something
            import torch
            from zoo_planted import planted_net

            if "y" not in _REF:
                net = planted_net()  # trains: outside no_grad
                with torch.no_grad():
                    _REF["y"] = net(torch.from_numpy(data.x)).numpy()
            ref = _REF["y"]
            return float(np.mean(np.abs(outputs - ref) <= 1e-4 * np.abs(ref).max()))

        def accuracy(outputs, data):
            return float((outputs.argmax(1) == data.y).mean())

        def text(outputs, data):
            return "good"

        def nan(outputs, data):
            return float("nan")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_metrics", None)
    return "my_metrics"


def test_user_evaluator_used(setup, evaluators):
    _, _, _, quantized, evalset, report = setup
    res = choose_float_nodes(quantized, evalset, report, MAX_DROP, "my_metrics:accuracy")
    assert res.metric == "my_metrics:accuracy" and res.drop <= MAX_DROP


def test_unmeetable_budget_says_what_float_scores(setup, evaluators):
    _, _, _, quantized, evalset, report = setup
    # the input and pooling quantization stay int8 even with every conv/linear float
    with pytest.raises(UserError) as err:
        choose_float_nodes(quantized, evalset, report, 0.0, "my_metrics:exact")
    msg = str(err.value)
    assert "--max-drop 0 cannot be met" in msg and "with all 4 conv/linear layers in float" in msg
    assert "against 1 for the float model" in msg and "\n" not in msg


@pytest.mark.parametrize("ref, match", [
    ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
    ("my_metrics:missing", "has no callable 'missing'"),
    ("my_metrics", "is not package.module:function"),
    ("my_metrics:text", "returned str 'good'.*not a number"),
    ("my_metrics:nan", "not a finite number"),
])
def test_bad_evaluator_is_user_error(setup, evaluators, ref, match):
    _, _, _, quantized, evalset, report = setup
    with pytest.raises(UserError, match=match):
        choose_float_nodes(quantized, evalset, report, MAX_DROP, ref)


def test_negative_budget_rejected(setup):
    _, _, _, quantized, evalset, report = setup
    with pytest.raises(UserError, match="must be a number >= 0"):
        choose_float_nodes(quantized, evalset, report, -0.1)


def test_cli_bad_evaluator_exits_2(evaluators):
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["analyze", "--max-drop", "0.01", "--evaluator", "my_metrics:missing"])
    assert res.exit_code == 2
    assert "has no callable 'missing'" in res.output and "Traceback" not in res.output


def test_cli_max_drop_on_planted_model(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from edgeconv.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "fb.json"
    res = CliRunner().invoke(main, ["analyze", "--model", "zoo_planted:planted_spec", "--calib-samples", "32",
                                    "--eval-samples", "100", "--max-drop", str(MAX_DROP), "-o", str(out)])
    assert res.exit_code == 0, res.output
    fb = json.loads(out.read_text())["fallback"]
    assert "c2" in fb["float_modules"] and fb["float_score"] - fb["final_score"] <= MAX_DROP
    assert "keep in float" in res.output


def test_apply_max_drop_marks_the_pre_quantize_graph(setup):
    from edgeconv.pipeline import apply_max_drop

    _, ctx, folded, _, evalset, _ = setup
    graph, res, report = apply_max_drop(folded, ctx, evalset, MAX_DROP)
    assert not graph.quantized and graph.float_nodes == res.float_nodes and "conv2d_1" in res.float_nodes
    assert report.layers[0].node == "conv2d_1"
    # the names are the pre-quantize graph's: re-quantizing with them keeps exactly that conv float
    requant = requantize(graph, ctx)
    convs = {lay.node: lay for lay in find_layers(requant.module())}
    assert not convs["conv2d_1"].dq_nodes and convs["conv2d"].dq_nodes
