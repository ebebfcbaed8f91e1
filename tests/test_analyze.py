"""Sensitivity analysis on the real quantize pass: a planted bad layer is ranked first, switching
tensors back to float through the simulation is exact, and the CLI writes the ranked JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeconv import registrations
from edgeconv.quant.program import all_dq, find_layers, forward, simulate
from edgeconv.quant.sensitivity import analyze
from edgeconv.config import ExportOptions, QuantOptions
from edgeconv.context import Context
from edgeconv.demo import heldout
from edgeconv.graph import capture
from edgeconv.passes.manager import run_passes
from zoo_planted import planted_net

registrations.load()


def quantize(net, calib_n: int = 32):
    torch.set_num_threads(1)
    data = heldout()
    ctx = Context(options=ExportOptions(quant=QuantOptions(samples=calib_n)), model=None,
                  calib=data.take(0, calib_n))
    return run_passes(capture(net, (torch.zeros(1, 3, 32, 32),)), ctx, ("fold-conv-bn", "quantize"))


@pytest.fixture(scope="module")
def planted():
    net = planted_net()
    graph = quantize(net)
    x = heldout().x[100:164]
    return net, graph, x, analyze(graph, x, "planted")


def test_planted_layer_ranked_first(planted):
    net, _, _, report = planted
    top = report.layers[0]
    assert top.module == "c2" and top.op == "conv2d"
    # its int8 alone ruins the output; every other layer alone costs several times less
    assert top.err_only_quantized > 0.3
    assert all(r.err_only_quantized < top.err_only_quantized / 4 for r in report.layers[1:])
    # the whole int8 model collapsed, and keeping c2 float removes most of the error
    assert report.err_all_quantized > 0.3
    assert top.gain_if_float > 0.8 * report.err_all_quantized
    # the symptoms are visible in the row: 1000x weight spread, huge activation range
    assert top.weight_range_spread > 300
    c1 = next(r for r in report.layers if r.module == "c1")
    assert top.act_max > 100 * c1.act_max


def test_bypassing_every_dequantize_is_the_float_model(planted):
    net, graph, x, _ = planted
    gm = graph.module()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = forward(simulate(gm, all_dq(gm)), x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and bypassing nothing is the quantized simulation itself
    sim = np.concatenate([graph.module()(torch.from_numpy(x[i:i + 1])).detach().numpy() for i in range(4)])
    np.testing.assert_array_equal(forward(simulate(gm, ()), x[:4]), sim)


def test_layers_own_their_weight_and_output_dequantize(planted):
    net, graph, _, _ = planted
    layers = {lay.module: lay for lay in find_layers(graph.module())}
    assert set(layers) == {"c1", "c2", "c3", "fc"}
    for lay in layers.values():
        assert lay.weight is not None and len(lay.dq_nodes) >= 2  # weight + output activation
    assert layers["c2"].weight[net.bad_channel].std() > 100 * layers["c2"].weight[0].std()
    owned = [n for lay in layers.values() for n in lay.dq_nodes]
    assert len(owned) == len(set(owned))  # no dequantize belongs to two layers


def test_unplanted_model_has_no_collapsed_layer():
    net = planted_net(plant=False)
    graph = quantize(net, 16)
    report = analyze(graph, heldout().x[100:132])
    assert report.err_all_quantized < 0.1
    assert max(r.weight_range_spread for r in report.layers) < 10
    assert report.top1_agreement_all is not None and report.top1_agreement_all > 0.8


def test_report_json_round_trip_and_table(planted):
    from edgeconv.quant.sensitivity import SensitivityReport

    report = planted[3]
    again = SensitivityReport.from_dict(json.loads(report.to_json()))
    assert again == report
    table = report.table()
    assert table.splitlines()[1].split()[1] == "c2"


def test_cli_analyze_writes_ranked_json(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeconv.cli import main

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    out = tmp_path / "sens.json"
    res = CliRunner().invoke(main, ["analyze", "--model", "zoo_planted:planted_spec", "--calib-samples", "16",
                                    "--eval-samples", "32", "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["sensitivity"]["layers"][0]["module"] == "c2"
    assert data["fallback"] is None and data["calibration"]["samples"] == 16
    assert "c2" in res.output.splitlines()[1]
