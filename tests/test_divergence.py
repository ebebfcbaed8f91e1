"""Cross-format divergence on the demo: real ONNX (onnxruntime), TFLite (ai-edge-litert) and CoreML
(MIL evaluator) artifacts of one quantized program agree with the torch simulation tensor by tensor,
and an artifact with one deliberately mis-quantized layer is caught at that layer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeconv import registrations
from edgeconv.config import ExportOptions, QuantOptions
from edgeconv.context import Context
from edgeconv.errors import UserError
from edgeconv.graph import capture
from edgeconv.passes.manager import run_passes
from edgeconv.pipeline import split_data
from edgeconv.quant.divergence import QTensor, divergence, match, rescaled
from edgeconv.registry import TARGETS

registrations.load()
FORMATS = ["onnx-int8", "tflite-int8", "coreml-w8a8"]
BAD_LAYER = "blocks.1.depthwise.0"


@pytest.fixture(scope="module")
def demo():
    from edgeconv.demo import demo as factory

    torch.set_num_threads(1)
    spec = factory()
    options = ExportOptions(quant=QuantOptions(samples=32), eval_samples=8)
    calib, evalset = split_data(spec, options, need_calib=True)
    ctx = Context(options=options, model=spec, calib=calib)
    graph = run_passes(capture(spec.module, spec.example_inputs), ctx, ("fold-conv-bn", "quantize", "cleanup"))
    return spec, ctx, graph, evalset


def mis_quantized(graph):
    """The same program with one layer's int8 weights dequantized with 1.5x their scale (quantized
    with the true one): that layer computes with 1.5x its weights; nothing else changes."""
    from edgeconv.quant.program import module_path

    gm = graph.module()
    conv = next(n for n in gm.graph.nodes if n.op == "call_function" and "conv2d" in str(n.target)
                and module_path(n) == BAD_LAYER)
    dq = conv.args[1]  # conv <- dequantize_per_channel(quantize_per_channel(w, s, ...), s, ...)
    gm.register_buffer("_ec_wrong_scale", getattr(gm, dq.args[1].target) * 1.5)
    with gm.graph.inserting_before(dq):
        wrong = gm.graph.get_attr("_ec_wrong_scale")
    dq.args = (dq.args[0], wrong) + tuple(dq.args[2:])
    gm.recompile()
    return graph.with_module(gm, quantizer=graph.quantizer, qparams=graph.qparams)


@pytest.fixture(scope="module")
def artifacts(demo, tmp_path_factory):
    _, ctx, graph, _ = demo
    out = tmp_path_factory.mktemp("div")
    bad = mis_quantized(graph)
    paths = {}
    for name in FORMATS:
        if name == "coreml-w8a8":
            pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")
        target = TARGETS.get(name)()
        good, wrong = out / f"good{target.suffix}", out / f"bad{target.suffix}"
        target.export(graph, ctx, good)
        if name == "tflite-int8":
            # litert-torch re-derives int8 weights from the quantize node, so the edited dequantize
            # scale never reaches the file: edit the file's int8 weight bytes instead (x1.5).
            _scale_tflite_weights(good, wrong, _depthwise_index(graph), 1.5)
        else:
            target.export(bad, ctx, wrong)
        paths[name] = (good, wrong)
    return paths


def _depthwise_index(graph) -> int:
    """Position of BAD_LAYER among the convs, in graph order."""
    from edgeconv.quant.program import module_path

    convs = [n for n in graph.module().graph.nodes if n.op == "call_function" and "conv2d" in str(n.target)]
    return [module_path(n) for n in convs].index(BAD_LAYER)


def _scale_tflite_weights(src, dst, conv_index: int, factor: float) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(src))
    it.allocate_tensors()
    ops = [op for op in it._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    w = it.get_tensor(int(ops[conv_index]["inputs"][1]))
    raw = src.read_bytes()
    assert raw.count(w.tobytes()) == 1, "weight bytes not unique in the file"
    wrong = np.clip(np.round(w.astype(np.float32) * factor), -127, 127).astype(np.int8)
    dst.write_bytes(raw.replace(w.tobytes(), wrong.tobytes()))


@pytest.mark.parametrize("name", FORMATS)
def test_faithful_artifact_has_no_divergent_layer(demo, artifacts, name):
    _, _, graph, evalset = demo
    report = divergence(graph, artifacts[name][0], evalset.x, steps=3, isolate=True)
    # Each layer alone (fed the artifact's own inputs) is within one rounding step in every format;
    # end to end, TFLite's fixed-point requantization flips cascade a few steps further.
    assert report.worst_isolated.max_steps <= 1, report.summary()
    assert len(report.isolated) == report.matched
    if name != "tflite-int8":
        assert report.first_divergent is None, report.summary()
    assert all(t.max_steps <= 6 for t in report.tensors), report.summary()
    assert report.matched >= 9  # input, every conv/activation output, the add and the pool
    assert {t.layer for t in report.tensors} >= {"stem.0", "blocks.0.depthwise.0", "blocks.2.pointwise.0"}
    if name != "tflite-int8":  # same float arithmetic as torch: rounding flips are rare
        assert np.mean([t.share_off for t in report.tensors]) < 0.01


@pytest.mark.parametrize("name", FORMATS)
def test_mis_quantized_layer_is_named(demo, artifacts, name):
    _, _, graph, evalset = demo
    report = divergence(graph, artifacts[name][1], evalset.x, steps=3, isolate=True)
    first = report.first_divergent
    assert first is not None and first.layer == BAD_LAYER, report.summary()
    assert first.max_steps > 10 and first.share_off > 0.2
    before = report.tensors[:report.tensors.index(first)]
    assert before and all(t.max_steps <= 6 for t in before)  # everything upstream still agrees
    assert BAD_LAYER in report.summary()
    # In isolation the wrong layer stands out and only it: its successors, fed its (wrong) output,
    # compute what the simulation computes from that output.
    over = [d for d in report.isolated if d.max_steps > 1]
    assert [d.layer for d in over] == [BAD_LAYER], report.summary()


def test_report_round_trips(demo, artifacts):
    from edgeconv.quant.divergence import DivergenceReport

    _, _, graph, evalset = demo
    report = divergence(graph, artifacts["onnx-int8"][1], evalset.x[:2])
    assert DivergenceReport.from_dict(json.loads(report.to_json())) == report


def test_match_prefers_name_then_order_scale_and_size():
    v = np.zeros((1, 4), np.int32)
    ours = [QTensor("a", 0.1, 0, v), QTensor("b", 0.2, 3, v), QTensor("c", 0.1, 0, v)]
    theirs = [QTensor("x1", 0.1, 0, v), QTensor("x2", 0.2, 3, v), QTensor("c", 0.1, 0, v), QTensor("x3", 0.1, 0, v)]
    pairs = match(ours, theirs)
    assert [(q.name, a.name if a else None) for q, a in pairs] == [("a", "x1"), ("b", "x2"), ("c", "c")]
    assert match([QTensor("z", 0.5, 0, v)], theirs) == [(QTensor("z", 0.5, 0, v), None)]


def test_a_relayout_the_file_elided_is_not_paired_with_the_next_blocks_tensor():
    """Two attention blocks, each a softmax (fixed 1/256 parameters, same size) and, in the
    simulation, a reshape of it that the file elided. The reshape holds its softmax's integers; the
    next block's softmax does not: it must stay unmatched (covered by its source), not be fed to the
    layers after it as that block's tensor."""
    rng = np.random.default_rng(0)
    s1, s2 = (rng.integers(-128, 0, (2, 4, 6)).astype(np.int32) for _ in range(2))
    ours = [QTensor("softmax", 1 / 256, -128, s1, qnode="q1"),
            QTensor("reshape", 1 / 256, -128, s1.reshape(2, 24), qnode="q2", copy_of="q1"),
            QTensor("softmax_1", 1 / 256, -128, s2, qnode="q3")]
    theirs = [QTensor("SOFTMAX", 1 / 256, -128, s1), QTensor("SOFTMAX_1", 1 / 256, -128, s2)]
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("softmax", "SOFTMAX"), ("reshape", None), ("softmax_1", "SOFTMAX_1")]
    # a copy the file kept is paired with it
    theirs.insert(1, QTensor("RESHAPE", 1 / 256, -128, s1.reshape(2, 24)))
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("softmax", "SOFTMAX"), ("reshape", "RESHAPE"), ("softmax_1", "SOFTMAX_1")]


def test_a_copy_is_paired_only_with_its_sources_integers_where_the_simulation_moves_them():
    """Swin's crop after the window merge (`[:, :H, :W].contiguous()`) is an identity requantization
    in the simulation that the files elide; the roll back after it concatenates the crop's halves at
    the same scale: the same integers in another order. The copy must stay unmatched (covered by its
    source), not be paired with the rolled tensor and fed to the roll's slices (65 steps at
    attn.proj in timm Swin-T's TFLite and Core ML files)."""
    rng = np.random.default_rng(0)
    v = rng.integers(-8, 8, (2, 6, 6, 4)).astype(np.int32)  # two samples
    rolled = np.roll(v, 2, axis=1)
    ours = [QTensor("crop", 0.1, 0, v, qnode="q1"),
            QTensor("contiguous", 0.1, 0, v, qnode="q2", copy_of="q1", moves=np.arange(144).reshape(1, 6, 6, 4)),
            QTensor("cat", 0.1, 0, rolled, qnode="q3")]
    theirs = [QTensor("CROP", 0.1, 0, v), QTensor("CAT", 0.1, 0, rolled)]
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("crop", "CROP"), ("contiguous", None), ("cat", "CAT")]
    # a copy the file kept, in its own layout (channels first here), is paired with it
    tokens = np.arange(144).reshape(1, 36, 4)
    ours[1] = QTensor("reshape", 0.1, 0, v.reshape(2, 36, 4), qnode="q2", copy_of="q1", moves=tokens)
    theirs.insert(1, QTensor("RESHAPE", 0.1, 0, v.reshape(2, 36, 4).transpose(0, 2, 1).copy()))
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("crop", "CROP"), ("reshape", "RESHAPE"), ("cat", "CAT")]


def test_a_copy_of_an_elided_copy_is_checked_against_what_the_file_kept():
    """CoaT's factorized attention lays its k-softmax out by reshape → permute, both copies at the
    softmax's fixed 1/256 grid, and litert-torch folds both into the matmul. The permute is a copy
    of the reshape, which has no file tensor: it was paired unchecked with the next block's softmax
    (same grid and size), which was then left with no tensor (52 tensors unverified in timm
    CoaT-Ti's TFLite file). Up the chain, the softmax has one: the permute must hold its integers
    where the two moves put them."""
    rng = np.random.default_rng(0)
    s1, s2 = (rng.integers(-128, -100, (2, 4, 6)).astype(np.int32) for _ in range(2))  # two samples
    idx = np.arange(24).reshape(1, 4, 2, 3)  # where each value of one sample comes from
    permuted = s1.reshape(2, 4, 2, 3).transpose(0, 3, 1, 2).copy()
    ours = [QTensor("softmax", 1 / 256, -128, s1, qnode="q1"),
            QTensor("reshape", 1 / 256, -128, s1.reshape(2, 4, 2, 3), qnode="q2", copy_of="q1", moves=idx),
            QTensor("permute", 1 / 256, -128, permuted, qnode="q3", copy_of="q2", moves=idx.transpose(0, 3, 1, 2)),
            QTensor("softmax_1", 1 / 256, -128, s2, qnode="q4")]
    theirs = [QTensor("SOFTMAX", 1 / 256, -128, s1), QTensor("SOFTMAX_1", 1 / 256, -128, s2)]
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("softmax", "SOFTMAX"), ("reshape", None), ("permute", None), ("softmax_1", "SOFTMAX_1")]
    # a file that keeps the permute is paired with it (the two moves composed) ...
    theirs.insert(1, QTensor("TRANSPOSE", 1 / 256, -128, permuted))
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("softmax", "SOFTMAX"), ("reshape", None), ("permute", "TRANSPOSE"), ("softmax_1", "SOFTMAX_1")]
    # ... but not with the same integers in other places (a multiset check would take it)
    theirs[1] = QTensor("TRANSPOSE", 1 / 256, -128, np.roll(permuted, 1, axis=-1))
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("softmax", "SOFTMAX"), ("reshape", None), ("permute", None), ("softmax_1", "SOFTMAX_1")]


def test_a_padded_shifted_window_is_judged_layer_by_layer_in_every_format(tmp_path):
    """timm Swin at a small input: windows padded to a multiple, the merged map cropped, rolled back.
    The simulation's crop copy was paired with the file's rolled tensor in TFLite and Core ML (11
    steps at proj in both, ONNX matched by name): every layer now within a step in all three."""
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:padded_shifted_window", "--calib", "random",
                                    "--calib-samples", "32", "--eval-samples", "16",
                                    *[a for t in FORMATS for a in ("-t", t)], "-o", str(tmp_path)])
    arts = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert [a["target"] for a in arts] == FORMATS and res.exit_code == 0, res.output
    for art in arts:
        layers = art["parity"]["layers"]
        assert layers["layers"] >= 20 and layers["over"] == [] and layers["excluded"] == [], (art["target"], layers)
        assert layers["worst_steps"] <= 1 and layers["passed"], (art["target"], layers)


def test_a_dropouts_identity_requantization_is_a_copy_of_its_softmax_not_the_next_blocks():
    """timm SwinV2's `attn_drop` (an identity at eval) leaves q(dq(q(softmax))) in the int8 program,
    which the files elide. Every block's softmax has the same size and fixed 1/256 grid, so the
    requantization, taken for a tensor of its own, was paired with the next block's softmax and fed
    to attn @ v (Core ML: 140 steps there, 222 at attn.proj of timm SwinV2-T at 64²; VOLO-D1's
    outlook and class attention alike: 7-12 steps). It is read as a copy of its softmax, and a file
    without it leaves it covered by its source."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 — registers quantized_decomposed

    from edgeconv.quant.divergence import torch_tensors

    qd = torch.ops.quantized_decomposed
    q, dq = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default

    def qdq(v, scale, zp):
        return dq(q(v, scale, zp, -128, 127, torch.int8), scale, zp, -128, 127, torch.int8)

    def f(x0, x1):
        s0 = qdq(qdq(x0, 0.05, 0).softmax(-1), 1 / 256, -128)
        dropped = qdq(s0, 1 / 256, -128)  # the removed dropout's identity requantization
        s1 = qdq(qdq(x1, 0.05, 0).softmax(-1), 1 / 256, -128)
        return dropped, s1

    rng = np.random.default_rng(0)
    x = tuple(rng.normal(0, 2, (2, 4, 8)).astype(np.float32) for _ in range(2))
    ours = torch_tensors(None, x, torch.fx.symbolic_trace(f))
    assert [t.scale for t in ours] == [0.05, 1 / 256, 1 / 256, 0.05, 1 / 256]
    assert ours[2].copy_of == ours[1].qnode and np.array_equal(ours[2].values, ours[1].values)
    assert not np.array_equal(ours[4].values, ours[1].values)  # the next block's softmax: other integers
    file = [QTensor(f"T{k}", t.scale, t.zero_point, t.values.copy()) for k, t in enumerate(ours) if k != 2]
    pairs = [(t.name, a.name if a else None) for t, a in match(ours, file)]
    assert pairs == [("x0", "T0"), ("softmax", "T1"), (ours[2].name, None), ("x1", "T3"), ("softmax_1", "T4")]


def test_a_pad_is_a_copy_that_moves_its_sources_integers_and_fills_the_border_with_the_zero_point():
    """timm's patch merging pads the map to even sides (`F.pad(x, (0, 0, 0, W % 2, 0, H % 2))`): a pad
    by nothing on an even map, which the files elide. Taken for a tensor of its own, timm Swin-T's was
    paired with the file's next 6-D view (other integers at the same scale) and isolation fed it the
    block before's output: 4 steps at layers.1.downsample on a faithful TFLite file. A pad is a copy
    of its source (border at the zero point), covered by its source where the file has none."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 — registers quantized_decomposed

    from edgeconv.quant.divergence import FILL, torch_tensors

    qd = torch.ops.quantized_decomposed
    q, dq = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default

    def qdq(v, scale, zp):
        return dq(q(v, scale, zp, -128, 127, torch.int8), scale, zp, -128, 127, torch.int8)

    def f(x):
        a = qdq(x, 0.05, 3)
        even = qdq(torch.ops.aten.pad.default(a, [0, 0, 0, 0, 0, 0]), 0.05, 3)
        odd = qdq(torch.ops.aten.pad.default(a, [0, 0, 0, 1, 0, 1]), 0.05, 3)
        six = qdq(torch.ops.aten.permute.default(even.reshape(1, 2, 2, 2, 2, 4), [0, 1, 3, 2, 4, 5]), 0.05, 3)
        nd = qdq(torch.ops.aten.constant_pad_nd.default(a, [1, 1, 0, 0], 0.0), 0.05, 3)  # the rewrites' spelling
        return even, odd, six, nd

    rng = np.random.default_rng(0)
    x = (rng.normal(0, 2, (2, 4, 4, 4)).astype(np.float32),)  # two samples of a 4×4 map, 4 channels
    ours = torch_tensors(None, x, torch.fx.symbolic_trace(f))
    src, even, odd, six, nd = ours
    assert even.copy_of == src.qnode and np.array_equal(even.moves, np.arange(64).reshape(1, 4, 4, 4))
    assert odd.copy_of == src.qnode and odd.values.shape == (2, 5, 5, 4)
    assert int((odd.moves == FILL).sum()) == 9 * 4 and set(odd.values[:, 4].ravel()) == {3}  # border: zero point
    assert nd.copy_of == src.qnode and int((nd.moves == FILL).sum()) == 4 * 4 * 2
    # the file keeps the source and the 6-D relayout, elides the pads
    file = [QTensor("A", 0.05, 3, src.values.copy()), QTensor("SIX", 0.05, 3, six.values.copy())]
    pairs = [(t.name, a.name if a else None) for t, a in match(ours, file)]
    assert pairs == [(src.name, "A"), (even.name, None), (odd.name, None), (six.name, "SIX"), (nd.name, None)]
    # a file that keeps the padded tensors has them paired, border and all, each with its own
    file[1:1] = [QTensor("PAD", 0.05, 3, odd.values.copy())]
    file.append(QTensor("PAD_ND", 0.05, 3, nd.values.copy()))
    pairs = [(t.name, a.name if a else None) for t, a in match(ours, file)]
    assert pairs == [(src.name, "A"), (even.name, None), (odd.name, "PAD"), (six.name, "SIX"), (nd.name, "PAD_ND")]


def test_an_op_that_keeps_its_input_takes_its_tensor_back_from_the_copy_before_it():
    """timm XCiT's `x + gamma2 * drop(fc2(x))` with gamma2 all ones (its eta=1 init): the removed
    dropout leaves an identity requantization of fc2's output, and the multiply by ones gives the
    same integers at the same parameters. The file elides the copy and keeps the MUL; the copy,
    met first, took the MUL's tensor and left the multiply unpaired (XCiT-nano at 64², blocks.8:
    with the residual add after it paired to the next block's near-equal sum, unmatched — the
    per-layer check could not vouch for the file and the 10 % end-to-end ceiling failed it). The
    copy gives the tensor back (covered by its source); with no tensor to give, both stay unpaired."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 — registers quantized_decomposed

    from edgeconv.quant.divergence import torch_tensors

    qd = torch.ops.quantized_decomposed
    q, dq = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default

    def qdq(v, scale, zp):
        return dq(q(v, scale, zp, -128, 127, torch.int8), scale, zp, -128, 127, torch.int8)

    def f(x):
        fc2 = qdq(x * 0.5, 0.02, -3)
        dropped = qdq(fc2, 0.02, -3)  # the removed dropout's identity requantization
        return qdq(dropped * torch.ones(8), 0.02, -3)  # gamma2 · x: the same integers

    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (2, 4, 8)).astype(np.float32),)
    ours = torch_tensors(None, x, torch.fx.symbolic_trace(f))
    fc2, copy, gamma = ours
    assert (fc2.name, gamma.name) == ("mul", "mul_1") and copy.copy_of == fc2.qnode
    assert np.array_equal(gamma.values, fc2.values)
    file = [QTensor(f"T{k}", t.scale, t.zero_point, t.values.copy()) for k, t in enumerate(ours) if k != 1]
    pairs = [(t.name, a.name if a else None) for t, a in match(ours, file)]
    assert pairs == [("mul", "T0"), (copy.name, None), ("mul_1", "T2")]
    # a file that keeps the copy too: each its own tensor
    file = [QTensor(f"T{k}", t.scale, t.zero_point, t.values.copy()) for k, t in enumerate(ours)]
    assert [a.name for _, a in match(ours, file)] == ["T0", "T1", "T2"]
    # a file that folded the multiply too: nothing to take back, both stay unpaired
    assert [a.name if a else None for _, a in match(ours, file[:1])] == ["T0", None, None]


def test_a_tensor_at_the_simulations_own_parameters_is_not_reported_rescaled():
    """A copy (a reshape of a softmax) whose file tensor is off its source's integers by a step on
    10 % of values is left unpaired by `match`; `rescaled` then reported that tensor as stored "at
    scale 0.00390625, zero point -128; the simulation at scale 0.00390625, zero point -128" — a
    changed quantization parameter that is the same one. A tensor really stored at another scale is
    still found."""
    rng = np.random.default_rng(0)
    s1 = rng.integers(-128, -60, (2, 4, 6)).astype(np.int32)
    ours = [QTensor("softmax", 1 / 256, -128, s1, qnode="q1"),
            QTensor("reshape", 1 / 256, -128, s1.copy(), qnode="q2", copy_of="q1", moves=np.arange(24).reshape(1, 4, 6))]
    off = s1.copy()
    off.reshape(-1)[::10] += 1
    theirs = [QTensor("SOFTMAX", 1 / 256, -128, s1), QTensor("RESHAPE", 1 / 256 * (1 + 1e-7), -128, off)]
    pairs = match(ours, theirs)
    assert [(q.name, a.name if a else None) for q, a in pairs] == [("softmax", "SOFTMAX"), ("reshape", None)]
    assert rescaled(pairs, theirs) == []
    theirs[1] = QTensor("RESHAPE", 2 / 256, -128, (s1 + 128) // 2 - 128)  # every value at half the resolution
    pairs = match(ours, theirs)
    assert [(q.name, a.name) for q, a in rescaled(pairs, theirs)] == [("reshape", "RESHAPE")]


def test_an_identity_copy_before_a_chain_of_equal_tensors_is_covered_not_paired():
    """timm CaiT at its init: every layer scale is 1e-5, so each residual add's branch is below half
    a step and the add holds its input's integers. The position dropout's identity requantization
    (elided by the file) held the same integers as block 0's first add and took its tensor; each
    later add then took the next add's, and the last, with none left ahead, an earlier tensor at the
    same parameters (litert-torch's transposed patch embedding): fed that in isolation, the norm
    after it was 3 steps off on a file 0 steps off end to end (timm CaiT, two blocks at 32², real
    photos). Several tensors holding its integers, none right after its source's: the copy is
    covered by its source, and the adds pair in order."""
    rng = np.random.default_rng(0)
    patch = rng.integers(-20, 20, (2, 4, 8)).astype(np.int32)
    stream = patch + rng.integers(-1, 2, patch.shape).astype(np.int32)  # + position embedding
    ident = np.arange(32).reshape(1, 4, 8)
    mean1, mean2 = (rng.integers(-5, 5, (2, 4, 1)).astype(np.int32) for _ in range(2))
    ours = [QTensor("patch", 0.03, 5, patch, qnode="q0"),
            QTensor("add", 0.03, 5, stream, qnode="q1"),
            QTensor("pos_drop", 0.03, 5, stream, qnode="q2", copy_of="q1", moves=ident),
            QTensor("mean", 0.001, 9, mean1, qnode="q3"),
            QTensor("add_2", 0.03, 5, stream, qnode="q4"),
            QTensor("mean_2", 0.001, 9, mean2, qnode="q5"),
            QTensor("add_4", 0.03, 5, stream, qnode="q6")]
    theirs = [QTensor("CONV", 0.03, 5, patch), QTensor("TRANSPOSE", 0.03, 5, patch.transpose(0, 2, 1).copy()),
              QTensor("ADD", 0.03, 5, stream), QTensor("MEAN", 0.001, 9, mean1),
              QTensor("ADD_1", 0.03, 5, stream), QTensor("MEAN_1", 0.001, 9, mean2), QTensor("ADD_2", 0.03, 5, stream)]
    pairs = [(q.name, a.name if a else None) for q, a in match(ours, theirs)]
    assert pairs == [("patch", "CONV"), ("add", "ADD"), ("pos_drop", None), ("mean", "MEAN"), ("add_2", "ADD_1"),
                     ("mean_2", "MEAN_1"), ("add_4", "ADD_2")]
    # a tensor holding its integers right after the source's: a copy the file kept, paired with it
    theirs.insert(3, QTensor("QUANTIZE", 0.03, 5, stream.copy()))
    assert [a.name for _, a in match(ours, theirs)] == ["CONV", "ADD", "QUANTIZE", "MEAN", "ADD_1", "MEAN_1", "ADD_2"]


def test_a_layer_scale_of_ones_is_judged_itself_in_tflite(tmp_path):
    """Two `t + gamma * drop(fc2(...))` blocks with gamma at ones through litert-torch: the file
    keeps each MUL and elides the dropout's copy. Each multiply is judged on its own tensor and each
    copy covered by fc2's — before, the copies took the MULs' tensors and the multiplies were
    reported as computed inside the add ("no int8 tensor"), which held only while the add after
    them was paired right (XCiT-nano's blocks.8: unmatched, and the file failed end to end)."""
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:layer_scale_of_ones", "--calib", "random",
                                    "--calib-samples", "32", "--eval-samples", "16", "-t", "tflite-int8",
                                    "-o", str(tmp_path)])
    (art,) = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    layers = art["parity"]["layers"]
    assert res.exit_code == 0, res.output
    assert layers["within"] == [] and layers["excluded"] == [] and layers["unmatched"] == 0, layers
    assert layers["covered"] == 2, layers  # the two dropouts' copies
    assert layers["layers"] >= 30 and layers["worst_steps"] <= 1 and layers["passed"], layers


def test_swinv2_cosine_attention_is_judged_layer_by_layer_in_core_ml(tmp_path):
    """Two SwinV2 blocks (cosine attention, clamped and exponentiated logit scale, the position-bias
    MLP through 16·sigmoid, dropouts after the softmax and the projection) in Core ML's MIL
    evaluator: full-integer, every layer within a step, each block's softmax judged itself and each
    dropout's requantization covered by its source — none left to be judged within another layer
    (before, the first dropout's copy took the second block's softmax)."""
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:cosine_window_attention", "--calib", "random",
                                    "--calib-samples", "32", "--eval-samples", "16", "-t", "coreml-w8a8",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    art = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"][0]
    layers = art["parity"]["layers"]
    assert art["float_ops"]["count"] == 0 and art["parity"]["passed"], art["parity"]
    assert layers["layers"] >= 50 and layers["over"] == [] and layers["excluded"] == [], layers
    assert layers["worst_steps"] <= 1 and layers["passed"], layers
    # only LayerNorm internals Core ML fuses may be judged within another tensor; this net's norms
    # scale by 1 and add 0 (default affine), identities the file drops: copies of their source
    assert all(".norm)" in w for w in layers["within"]), layers["within"]


def test_unknown_artifact_and_float_graph_are_user_errors(demo, tmp_path):
    spec, _, graph, evalset = demo
    with pytest.raises(UserError, match="model.pt is not an artifact edgeconv reads"):
        divergence(graph, tmp_path / "model.pt", evalset.x)
    with pytest.raises(UserError, match="quantize the graph first"):
        divergence(capture(spec.module, spec.example_inputs), tmp_path / "m.onnx", evalset.x)


def test_cli_names_the_layer_and_exits_1(artifacts):
    from click.testing import CliRunner

    from edgeconv.cli import main

    good, bad = artifacts["onnx-int8"]
    res = CliRunner().invoke(main, ["divergence", "--calib-samples", "32", "--samples", "8", str(good), str(bad)])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert "none drifts" in lines[0] and BAD_LAYER in lines[1]


def test_a_zero_dimensional_activation_is_judged_in_every_format(tmp_path):
    """A 0-d int8 tensor (timm GC-ViT has one) stopped the per-layer check in all three formats
    ("zero-dimensional arrays cannot be concatenated"): now each sample gives it one row."""
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:scalar_gate", "--calib", "random",
                                    *[a for t in FORMATS for a in ("-t", t)], "-o", str(tmp_path)])
    arts = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert [a["target"] for a in arts] == FORMATS and res.exit_code == 0, res.output
    for art in arts:
        layers = art["parity"]["layers"]
        assert layers["layers"] >= 6 and layers["over"] == [], (art["target"], layers)
        assert layers["worst_steps"] <= 1 and layers["passed"], (art["target"], layers)


def test_a_tensor_the_file_computes_inside_an_op_is_judged_within_the_tensors_it_feeds():
    """A LayerNorm's centred input (x - mean) has no int8 tensor in a file that fuses the norm:
    covered by the judged tensor every path from it reaches — but never one with a path to the
    output that meets no judged tensor, and never one reached only past the walk's bound."""
    from edgeconv.quant.divergence import WITHIN_MAX_NODES, judged_within

    def norm(x):
        centred = x - x.mean(-1, keepdim=True)
        y = centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + 1e-5)
        return y, centred.abs()  # `abs` reaches the output unjudged

    gm = torch.fx.symbolic_trace(norm)
    names = [n.name for n in gm.graph.nodes]
    v = np.zeros((1, 4), np.int32)
    t = {n: QTensor(n, 0.1, 0, v, layer=f"layer.{n}", qnode=n) for n in names}
    judged = {"mul_1": t["mul_1"]}  # the norm's output
    out = judged_within(gm, [t["mean"], t["sub"], t["add"]], judged)
    got = {q.name: (by, what) for q, by, what in out}
    assert set(got) == {"add"}  # mean and sub also reach `abs` -> output, unjudged
    assert got["add"][0] == ["layer.mul_1"] and got["add"][1].endswith("output")
    judged["abs_1"] = t["abs_1"]
    assert {q.name for q, _, _ in judged_within(gm, [t["mean"], t["sub"], t["add"]], judged)} == {"mean", "sub", "add"}
    assert WITHIN_MAX_NODES >= 16  # a LayerNorm's float arithmetic fits the bound


def _two_means_program():
    """A hand-written int8 program: a = int8(x); m1 = mean(a); b = a + c at its own zero point;
    m2 = mean(b) (m1 and m2 share scale, zero point and size: one value per sample); y = a·1 at
    a's own parameters (an op whose output is its input)."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 — registers quantized_decomposed

    qd = torch.ops.quantized_decomposed
    q, dq = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default

    def qdq(v, scale, zp):
        return dq(q(v, scale, zp, -128, 127, torch.int8), scale, zp, -128, 127, torch.int8)

    def f(x, c):
        a = qdq(x, 0.1, 0)
        m1 = qdq(a.mean(-1, keepdim=True), 0.01, 0)
        b = qdq(a + c, 0.1, 1)
        m2 = qdq(b.mean(-1, keepdim=True), 0.01, 0)
        y = qdq(a * 1.0, 0.1, 0)
        return a - m1, b - m2, y

    return torch.fx.symbolic_trace(f)


def test_isolation_feeds_the_tensor_the_ops_own_inputs_reproduce():
    """Two tensors with the same parameters and near-equal values (PoolFormer's norm means on a
    2×2 map, one value per sample) paired crosswise on the end-to-end values: each was fed the
    other's value and judged 2 steps off. The tensor the op's own inputs reproduce wins — but never
    a tensor the op was fed itself: a defect in an op that keeps its input (y = a·1) stays caught."""
    from edgeconv.quant.divergence import isolated_drifts, torch_tensors

    gm = _two_means_program()
    x = (np.array([[0.3, -0.5, 1.2, 0.4, 0.0, 0.1, -0.2, 0.6, 0.5, -0.7]], np.float32),
         np.array([[0.2] + [0.0] * 9], np.float32))  # b's mean is 2 steps of m's 0.01 above a's
    ours = torch_tensors(None, x, gm)
    assert len(ours) == 5
    a, m1, b, m2, y = ours
    assert (int(m1.values.ravel()[0]), int(m2.values.ravel()[0])) == (17, 19)
    file = [QTensor(f"T{k}", t.scale, t.zero_point, t.values.copy()) for k, t in enumerate(ours)]
    file[4].values.ravel()[2] += 3  # the file's a·1 is wrong by 3 steps on one value
    crossed = [(a, file[0]), (m1, file[3]), (b, file[2]), (m2, file[1]), (y, file[4])]
    drifts, excluded, _ = isolated_drifts(None, crossed, x, gm, file)
    got = {d.tensor: (d.artifact_tensor, d.max_steps) for d in drifts}
    assert excluded == ()
    assert got["mean"] == ("T1", 0.0) and got["mean_1"] == ("T3", 0.0)  # each mean fed its own tensor
    assert got["mul"] == ("T4", 3.0)  # not a's tensor T0, which its input reproduces exactly


def test_a_tensor_the_file_lays_out_otherwise_is_judged_within_the_tensors_it_feeds(tmp_path):
    """Swin's window partition: litert-torch folds the views and permutes into other reshapes, so
    the file holds those tensors' values in a layout the check cannot undo. They were left out as
    unverified, which kept SwinV2-CR's per-layer check from vouching for the whole net: now each is
    judged within the tensors it feeds (computed from the simulation's own copy, so a file whose
    copy were laid out wrongly differs there), and nothing is left out. Since copies are paired by
    the simulation's moves replayed on indices (c8278b3, merged beside this), litert-torch's tensors
    for these views are found and each view is judged itself; any still held otherwise stays
    judged within fc."""
    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:window_partition", "--calib", "random",
                                    "-t", "tflite-int8", "-o", str(tmp_path)])
    (art,) = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    layers = art["parity"]["layers"]
    assert res.exit_code == 0, res.output
    assert layers["excluded"] == [] and layers["passed"] and layers["worst_steps"] <= 1, layers
    # each view/permute copy is accounted for: covered by its source (its integers where the
    # simulation moves them, or no file tensor claims it) or judged within the fc it feeds
    relaid = [w for w in layers["within"] if "in another layout" in w]
    assert all("judged within fc" in w for w in relaid), layers["within"]
    assert layers["covered"] + len(relaid) >= 2 and layers["unmatched"] == 0, layers
    # every int8 tensor of the partition and its reverse is judged, alone or within fc
    assert layers["layers"] + len(relaid) >= 10, layers


def test_isolation_tells_equal_tensors_apart_on_a_later_sample():
    """timm EfficientViT-M0's last stage at 64² pads a 1×1 map to its 4×4 window; on a sample where
    the real token's logits quantize to the padding's, every head's softmax is a uniform 1/16, so
    the softmaxes of all heads and blocks (same fixed 1/256 grid and size) hold the same integers
    there. Isolation decided on that first sample and fed each the first of the equal tensors: on
    the next samples every later softmax was judged against the first block's (255 steps at six
    softmaxes, 40–61 at the `attn @ v` after them, on a file equal to its simulation). Tensors the
    first sample cannot tell apart are told apart by the next one that can — and a defect in the
    tensor they tell apart is still caught."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 — registers quantized_decomposed

    from edgeconv.quant.divergence import isolated_drifts, torch_tensors

    qd = torch.ops.quantized_decomposed
    q, dq = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default

    def qdq(v, scale, zp):
        return dq(q(v, scale, zp, -128, 127, torch.int8), scale, zp, -128, 127, torch.int8)

    def f(x0, x1, x2):
        return tuple(qdq(qdq(x, 0.05, 0).softmax(-1), 1 / 256, -128) for x in (x0, x1, x2))

    rng = np.random.default_rng(0)
    x = tuple(rng.normal(0, 2, (2, 4, 8)).astype(np.float32) for _ in range(3))
    x[0][0], x[1][0] = 0.5, -1.0  # sample 0: constant logits, a uniform softmax in the first two
    gm = torch.fx.symbolic_trace(f)
    ours = torch_tensors(None, x, gm)
    s0, s1, s2 = ours[1], ours[3], ours[5]
    assert np.array_equal(s0.values[0], s1.values[0]) and not np.array_equal(s0.values[1], s1.values[1])
    file = [QTensor(f"T{k}", t.scale, t.zero_point, t.values.copy()) for k, t in enumerate(ours)]
    # the second and third softmax paired crosswise (as a chaotic net's end-to-end values can pair them)
    crossed = [(t, file[{3: 5, 5: 3}.get(k, k)]) for k, t in enumerate(ours)]
    drifts, excluded, _ = isolated_drifts(None, crossed, x, gm, file)
    got = {d.tensor: (d.artifact_tensor, d.max_steps) for d in drifts}
    assert excluded == ()
    assert got[s0.name] == ("T1", 0.0) and got[s1.name] == ("T3", 0.0) and got[s2.name] == ("T5", 0.0), got
    file[3].values[1, 2, 5] += 4  # the file's second softmax wrong by 4 steps on sample 1
    drifts, _, _ = isolated_drifts(None, crossed, x, gm, file)
    got = {d.tensor: (d.artifact_tensor, d.max_steps) for d in drifts}
    assert got[s1.name] == ("T3", 4.0), got


def _halo_windows(x):
    """HaloAttn's kv windows as timm cuts them: two `Tensor.unfold`s of the padded map."""
    return x.unfold(2, 6, 4).unfold(3, 6, 4)


def test_halo_windows_are_copies_of_the_padded_map():
    """`Tensor.unfold` (HaloAttn's overlapping windows) only moves and repeats its input's integers,
    as expand does: each unfold is a copy of its source with the replayed map, so the file's window
    tensor is the one holding the source's integers where the windows put them — not a same-sized
    tensor of the same scale in another order (before: no copy, paired by values alone)."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 — registers quantized_decomposed

    from edgeconv.quant.divergence import torch_tensors

    qd = torch.ops.quantized_decomposed
    q, dq = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default

    def qdq(v):
        return dq(q(v, 0.05, 3, -128, 127, torch.int8), 0.05, 3, -128, 127, torch.int8)

    def f(x):
        a = qdq(x)
        rows = qdq(torch.ops.aten.unfold.default(a, 2, 6, 4))
        return qdq(torch.ops.aten.unfold.default(rows, 3, 6, 4))

    x = (np.random.default_rng(0).normal(0, 2, (2, 3, 10, 10)).astype(np.float32),)
    src, rows, wins = torch_tensors(None, x, torch.fx.symbolic_trace(f))
    assert rows.copy_of == src.qnode and wins.copy_of == rows.qnode
    idx = torch.arange(300).reshape(1, 3, 10, 10)
    assert np.array_equal(rows.moves, idx.unfold(2, 6, 4).numpy())
    assert np.array_equal(wins.moves, torch.arange(360).reshape(1, 3, 2, 10, 6).unfold(3, 6, 4).numpy())  # rows
    # the file: the map, then (a gather's order) each window's elements transposed, then the windows
    t = torch.from_numpy(src.values)
    swapped = _halo_windows(t).transpose(-1, -2).contiguous().numpy()
    file = [QTensor("MAP", 0.05, 3, src.values.copy()), QTensor("ROWS", 0.05, 3, rows.values.copy()),
            QTensor("GATHER", 0.05, 3, swapped), QTensor("WINDOWS", 0.05, 3, wins.values.copy())]
    pairs = [(s.name, a.name if a else None) for s, a in match([src, rows, wins], file)]
    assert pairs == [(src.name, "MAP"), (rows.name, "ROWS"), (wins.name, "WINDOWS")]
    # a file that cut the windows with the wrong stride keeps no copy of them: not paired
    wrong = np.roll(wins.values, 1, axis=-1)  # each window shifted by one element
    file[2:] = [QTensor("WRONG", 0.05, 3, wrong)]
    assert dict((s.name, a.name if a else None) for s, a in match([src, rows, wins], file))[wins.name] is None


def test_layouts_differing_within_a_period_of_the_sampling_stride_do_not_tie():
    """Which of two same-sized tensors holds a tensor's values is decided on a strided subset. A stride
    that is a multiple of the period its layouts differ in (HaloNet-H1's kv windows: 4 samples × 256 ×
    4 × 4 windows of 14 × 14 = 16384 × 196 values, a stride of exactly 196) reads the same element of
    every window in each layout: the file's windows before their transpose tied with those after it
    (143 steps apart in full) and, met first, were paired; isolation then fed the split into k and v a
    misordered map (stages.1.0.self_attn.kv: 91 steps in TFLite, 88 in Core ML)."""
    from edgeconv.quant.divergence import _gap

    rng = np.random.default_rng(0)
    wins = rng.integers(-128, 128, (16384, 14, 14), dtype=np.int8)
    before = np.ascontiguousarray(wins.swapaxes(-1, -2))
    assert _gap(wins, before) > 20
    ours = [QTensor("windows", 0.02, -3, wins, qnode="q1")]
    file = [QTensor("BEFORE", 0.02, -3, before), QTensor("AFTER", 0.02, -3, wins.copy())]
    assert [a.name for _, a in match(ours, file)] == ["AFTER"]
