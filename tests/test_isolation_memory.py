"""Per-layer isolation's memory: it keeps every int8 activation of each sample it runs, on both
sides, so what it holds a value decides whether a net with large attention maps can be checked at
all (timm HaloNet-H1 at 256²: 481 M int8 values a sample; the export was killed at 22 GB)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from edgeconv import registrations
from edgeconv.config import CalibSpec, ExportOptions, QuantOptions
from edgeconv.context import Progress
from edgeconv.pipeline import programs, resolve_targets
from edgeconv.quant.divergence import divergence, int8_values_per_sample, torch_tensors
from edgeconv.quant.program import folded_simulation

registrations.load()
SAMPLES = 4


@pytest.fixture(scope="module")
def halo(tmp_path_factory):
    """tests.zoo:halo_attention's int8 program and its onnx-int8 file (onnxruntime reads it back)."""
    from tests.zoo import halo_attention

    torch.set_num_threads(1)
    spec = halo_attention()
    (target,) = resolve_targets(("onnx-int8",))
    options = ExportOptions(targets=("onnx-int8",), calib=CalibSpec(source="random"),
                            quant=QuantOptions(samples=16), eval_samples=SAMPLES)
    built = programs(spec, options, [target], Progress(False))
    graph = built.cache.get(target.passes)
    path = tmp_path_factory.mktemp("halo") / f"halo{target.suffix}"
    target.export(graph, built.ctx, path)
    return graph, path, built.evalset.take(0, SAMPLES).batch


def test_int8_tensors_are_kept_a_byte_a_value_on_both_sides(halo):
    graph, path, x = halo
    from edgeconv.exporters.formats import format_for

    ours, theirs = torch_tensors(graph, x), format_for(path).int8_tensors(path, x)
    assert len(ours) >= 20 and len(theirs) >= 20
    # int32 before: four bytes a value on each side
    assert {q.values.itemsize for q in ours} == {1} and {a.values.itemsize for a in theirs} == {1}
    copies = [q for q in ours if q.moves is not None]
    assert copies and {q.moves.dtype for q in copies} == {np.dtype(np.int32)}  # int64 before
    # the shapes the capture recorded count what a sample writes (fused pre-activations aside)
    per = int8_values_per_sample(folded_simulation(graph))
    assert sum(q.values.size for q in ours) <= SAMPLES * per <= 1.25 * sum(q.values.size for q in ours)


def test_halo_windows_are_int8_in_onnx(halo):
    """torch.onnx writes Tensor.unfold as Gather then Transpose between one DequantizeLinear and one
    QuantizeLinear: the Transpose read a float tensor (2 float ops here, 38 in timm HaloNet-H1). As
    unfold_as_gather's gather and relayouts, each between Q/DQ pairs, every op is a QDQ unit."""
    import onnx

    from edgeconv.exporters.onnx.read import float_ops

    _, path, _ = halo
    found = float_ops(path)
    assert found.count == 0, found.ops
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Gather") >= 2 and ops.count("Transpose") >= 2  # the windows: gathered, then relaid


def test_isolation_holds_a_few_bytes_per_int8_value_and_still_judges_every_layer(halo):
    """Peak numpy memory (tracemalloc traces numpy's buffers; torch's and onnxruntime's own are
    not counted on either side) of the whole per-layer check, per int8 value it keeps. Before: the
    values at four bytes on each side, every difference kept at eight, copies' index maps at eight:
    over 16 bytes a value (18.2 measured here). Now: a byte on each side, running sums, int32 maps (3.9)."""
    graph, path, x = halo
    gm = folded_simulation(graph)
    per = int8_values_per_sample(gm)
    tracemalloc.start()
    try:
        rep = divergence(graph, path, x, isolate=True, gm=gm)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep.samples == SAMPLES and len(rep.isolated) >= 15 and not rep.unmatched, rep.summary()
    assert max(d.max_steps for d in rep.isolated) <= 1, rep.isolated_summary()
    assert peak / (SAMPLES * per) < 8.0, (peak, per)


def test_isolation_takes_fewer_samples_for_a_net_with_large_activations(halo, monkeypatch):
    from edgeconv import verify

    graph, _, _ = halo
    gm = folded_simulation(graph)
    per = int8_values_per_sample(gm)
    assert verify.isolation_samples(gm) == verify.ISOLATION_SAMPLES  # a small net: all of them
    monkeypatch.setattr(verify, "ISOLATION_MAX_VALUES", 2 * per + 1)
    assert verify.isolation_samples(gm) == 2
    monkeypatch.setattr(verify, "ISOLATION_MAX_VALUES", per // 3)
    assert verify.isolation_samples(gm) == 1  # never none: the check always runs


def test_the_mil_evaluator_holds_the_live_values_not_every_value():
    """Core ML's MIL evaluator (parity and the int8 reading of coreml targets) kept every value
    the program computed until it returned: on a chain of 24 ops over a 1 MB map, 24 MB at once
    (HaloNet-H1 at 256²: ~500 M floats a sample). Now a value goes after its last reader; a
    reading that asks for some values (the int8 ones) gets exactly those and the outputs."""
    from edgeconv.exporters.coreml.mil.kernels import run
    from edgeconv.exporters.coreml.mil.program import MILProgram, Step

    n = 24
    steps = tuple(Step("relu", f"r{i}", {"x": f"v{i}"}, (f"v{i + 1}",), ("fp32",), ((1, 256, 1024),))
                  for i in range(n))
    prog = MILProgram(("v0",), ("fp32",), (f"v{n}",), {}, steps)
    x = np.random.default_rng(0).standard_normal((1, 256, 1024)).astype(np.float32)  # 1 MiB
    tracemalloc.start()
    try:
        out = run(prog, {"v0": x})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out[f"v{n}"], np.maximum(x, 0)) and peak < 4 * x.nbytes, peak / x.nbytes
    assert set(run(prog, {"v0": x}, keep=["v3", "v7"])) == {"v3", "v7", f"v{n}"}
    assert len(run(prog, {"v0": x}, keep=True)) == n + 1  # every value, the input too
