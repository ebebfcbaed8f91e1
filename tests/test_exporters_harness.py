"""Every registered target × small nets of the test zoo, through the same fluent harness as the
passes: `GraphCase(net).capture().export(target).loads().parity_ok()` — the target's own pass chain,
its real converter, its real runtime, the pipeline's verification on held-out inputs.

Targets come from the registry: a new target is in the matrix at once and fails until `EXPECT` says
what it promises. Sparse targets prune on purpose (their parity also bounds the drop from the dense
model, which random small nets cannot keep at 80 %): here they must export and load; tests/test_sparse.py
judges them on trained nets.
"""
from __future__ import annotations

import pytest
import torch

from edgeconv import registrations
from edgeconv.registry import TARGETS
from graphcase import GraphCase
from test_passes_harness import _net

registrations.load()

EXPECT = {
    "onnx": "parity", "onnx-int8": "parity", "onnx-int8-u8": "parity",
    "tflite": "parity", "tflite-int8": "parity",
    "coreml": "parity", "coreml-fp16": "parity", "coreml-int8": "parity", "coreml-w8a8": "parity",
    "tflite-sparse": "loads", "tflite-sparse-fp16": "loads",
}
CASE_NETS = ("conv-relu-bn", "inverted-residual", "bottleneck")


def test_every_target_has_an_expectation():
    assert set(TARGETS.names()) == set(EXPECT), "a target without an expectation (or a stale entry): update EXPECT"


@pytest.mark.parametrize("net", CASE_NETS)
@pytest.mark.parametrize("target", TARGETS.names())
def test_target_exports_loads_and_passes(target, net):
    case = GraphCase(*_net(net), name=net).capture().export(target).loads()
    if EXPECT[target] == "parity":
        case.parity_ok()
        report = case.verdict.report
        assert report.diffs and all(d.passed for d in report.diffs)
        if case.artifact.target.quantized:  # int8: each layer was judged in isolation
            assert report.layers is not None and report.layers.layers > 0 and report.layers.passed


def test_parity_ok_fails_when_the_artifact_computes_something_else():
    """parity_ok() is the real verdict: judged against another function (the net with its weights
    negated, same shapes), the same artifact fails."""
    case = GraphCase(*_net("conv-relu-bn"), name="conv-relu-bn").capture().export("onnx").loads().parity_ok()
    with torch.no_grad():
        for p in case.eager.parameters():
            p.neg_()
    with pytest.raises(AssertionError, match="parity failed"):
        case.parity_ok()


def test_every_int8_target_holds_the_int8_program_to_the_same_fp32_floors():
    """The floors against fp32 judge the int8 program, and every int8 target writes the same one; only
    how far a file may stand from that program is the format's (Core ML's float arithmetic: 1.5 steps)."""
    floors = {name: (t.tolerance.vs_fp32_min_cosine, t.tolerance.min_top1_agreement, t.tolerance.decisive_margin)
              for name in TARGETS.names() if (t := TARGETS.get(name)).quantized and t.tolerance.vs_sim_max_steps}
    assert {"onnx-int8", "tflite-int8", "coreml-w8a8"} <= set(floors), floors
    assert len(set(floors.values())) == 1, floors
