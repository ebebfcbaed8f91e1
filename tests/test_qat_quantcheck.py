"""Quantization-friendliness check: flags per-layer int8 on layers whose channel ranges diverge."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeconv.config import ExportOptions, Granularity, QuantOptions
from edgeconv.context import Context
from edgeconv.graph import capture
from edgeconv.models import ModelSpec
from edgeconv.passes.check_quant import QuantCheck, channel_sqnr_db, per_layer_weight_check, check_quant
from edgeconv.registry import PASSES


def _net(spread: float) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 4))
    with torch.no_grad():
        m[3].weight[0] *= spread  # one depthwise channel dwarfs the rest: the merged-RepVGG pattern
    return m.eval()


def _ctx(granularity: Granularity, model: nn.Module) -> Context:
    spec = ModelSpec(module=model, example_inputs=(torch.zeros(1, 3, 6, 6),))
    return Context(options=ExportOptions(quant=QuantOptions(weights=granularity)), model=spec)


def test_sqnr_matches_int8_levels():
    w = np.linspace(-1, 1, 2001).reshape(1, -1)
    # A uniform signal over the full range: SQNR = 10·log10(E[w²] / (s²/12)) = 10·log10(4·127²)
    assert abs(float(channel_sqnr_db(w, per_channel=True)[0]) - 10 * np.log10(4 * 127**2)) < 0.1
    two = np.stack([w[0], w[0] / 100])
    t, c = channel_sqnr_db(two, per_channel=False), channel_sqnr_db(two, per_channel=True)
    # /100 leaves ~1 level per-tensor (SQNR collapses to ~9 dB); per-channel does not care
    assert t[1] < 12 and abs(t[0] - c[0]) < 1e-9 and abs(c[1] - c[0]) < 1e-9


def test_wrecked_layer_is_named_and_others_are_not():
    model = _net(spread=300.0)
    check = per_layer_weight_check(capture(model, (torch.randn(1, 3, 6, 6),)))
    by_weight = {layer.weight: layer for layer in check.layers}
    assert set(by_weight) == {"0.weight", "3.weight", "6.weight"}
    dw = by_weight["3.weight"]
    assert dw.wrecked and dw.kind == "depthwise" and dw.spread > 100
    assert dw.sqnr_per_channel_db - dw.sqnr_per_tensor_db > 30
    assert not by_weight["0.weight"].wrecked and not by_weight["6.weight"].wrecked
    assert "3.weight" in check.warning() and "per-channel" in check.warning()
    assert QuantCheck.from_dict(check.to_dict()) == check


def test_check_quant_pass_warns_only_for_per_layer():
    model = _net(spread=300.0)
    graph = capture(model, (torch.randn(1, 3, 6, 6),))
    assert PASSES.get("check-quant") is check_quant
    per_layer = check_quant(graph, _ctx(Granularity.PER_TENSOR, model))
    assert not per_layer.changed and per_layer.graph is graph
    assert len(per_layer.notes) == 1 and "wreck 1 of 3 layers" in per_layer.notes[0]
    assert check_quant(graph, _ctx(Granularity.PER_CHANNEL, model)).notes == ()
    healthy = _net(spread=1.0)
    assert check_quant(capture(healthy, (torch.randn(1, 3, 6, 6),)), _ctx(Granularity.PER_TENSOR, healthy)).notes == ()
