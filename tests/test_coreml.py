"""CoreML targets on the embedded demo, through the real passes (fold-conv-bn, quantize, cleanup),
the real converter (coremltools 9.0) and the numpy MIL evaluator (the macOS runtime is tested
separately and only on macOS)."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")

from edgeconv import registrations  # noqa: E402
from edgeconv.config import ExportOptions, Granularity, QuantOptions  # noqa: E402
from edgeconv.context import Context  # noqa: E402
from edgeconv.errors import UserError  # noqa: E402
from edgeconv.exporters.coreml import export as coreml_export  # noqa: E402
from edgeconv.exporters.coreml import read as coreml_read  # noqa: E402
from edgeconv.exporters.coreml import runtime as coreml_runtime  # noqa: E402
from edgeconv.exporters.coreml.mil import kernels as mil_kernels  # noqa: E402
from edgeconv.exporters.coreml.mil import program as mil_program  # noqa: E402
from edgeconv.graph import capture  # noqa: E402
from edgeconv.passes.manager import run_passes  # noqa: E402
from edgeconv.registry import TARGETS  # noqa: E402

registrations.load()
COREML_TARGETS = ("coreml", "coreml-fp16", "coreml-int8", "coreml-w8a8")


@pytest.fixture(scope="module")
def demo():
    from edgeconv.demo import demo as factory

    torch.set_num_threads(1)
    spec = factory()
    data = spec.data()
    calib, held = data.take(0, 64), data.take(64, 96)
    ctx = Context(options=ExportOptions(quant=QuantOptions(samples=64)), model=spec, calib=calib)
    root = capture(spec.module, spec.example_inputs)
    return spec, ctx, root, held


@pytest.fixture(scope="module")
def artifacts(demo, tmp_path_factory):
    """Every CoreML target of the demo, exported once: name -> (target, graph, path, info)."""
    spec, ctx, root, _ = demo
    out = tmp_path_factory.mktemp("coreml")
    graphs: dict[tuple[str, ...], object] = {}
    result = {}
    for name in COREML_TARGETS:
        target = TARGETS.get(name)()
        if target.passes not in graphs:
            graphs[target.passes] = run_passes(root, ctx, target.passes)
        graph = graphs[target.passes]
        path = out / f"demo-{name}.mlpackage"
        info = target.export(graph, ctx, path)
        result[name] = (target, graph, path, info)
    return result


def _torch(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([module(torch.from_numpy(x[i:i + 1])) for i in range(len(x))]).numpy()


def test_targets_registered_with_pass_lists():
    for name in COREML_TARGETS:
        t = TARGETS.get(name)
        assert t.suffix == ".mlpackage" and "fold-conv-bn" in t.passes
        assert ("quantize" in t.passes) == t.quantized
    assert TARGETS.get("coreml-w8a8").quantized and not TARGETS.get("coreml-int8").quantized


def test_fp32_evaluator_matches_torch_within_1e4(demo, artifacts):
    spec, _, _, held = demo
    target, _, path, _ = artifacts["coreml"]
    got = target.load(path)(held.x)
    want = _torch(spec.module, held.x)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, rel
    assert (got.argmax(1) == want.argmax(1)).all()


def test_fp16_is_fp16_and_close(demo, artifacts):
    spec, _, _, held = demo
    target, _, path, _ = artifacts["coreml-fp16"]
    assert {w.dtype for w in target.weights(path)} == {"float16"}
    prog = mil_program.load_program(path)
    assert "cast" in prog.op_types  # fp32 input cast to fp16 compute
    got, want = target.load(path)(held.x), _torch(spec.module, held.x)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert 1e-5 < rel < 1e-2, rel  # fp16 rounding is visible, but small
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def test_int8_every_conv_and_linear_weight_is_per_channel_int8(demo, artifacts):
    spec, _, _, held = demo
    target, _, path, info = artifacts["coreml-int8"]
    weights = target.weights(path)
    n_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in spec.module.modules())
    assert len(weights) == n_layers == 8
    for w in weights:
        assert w.dtype == "int8" and w.axis == 0 and w.num_scales == w.shape[0], w
    # the 27-element-per-channel stem (16x3x3x3 = 432 < 2048) and the depthwise kernels included
    assert any(w.shape == (16, 3, 3, 3) for w in weights)
    assert sum(w.shape[1] == 1 for w in weights) == 3
    assert any("8 conv/linear weights quantized" in n for n in info.notes)
    got, want = target.load(path)(held.x), _torch(spec.module, held.x)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def test_int8_weight_scales_are_symmetric_max_over_127(demo, artifacts):
    """coremltools' linear_symmetric per-channel scale equals PT2E's weight observer: max|w| / 127."""
    _, _, path, _ = artifacts["coreml-int8"]
    prog = mil_program.load_program(path)
    for step in prog.steps:
        if step.op_type == "constexpr_affine_dequantize":
            qp = coreml_read.constexpr_quant(prog, step)
            w = mil_kernels.run(prog, {prog.inputs[0]: np.zeros((1, 3, 32, 32), np.float32)}, keep=True)[step.outputs[0]]
            amax = np.abs(w.reshape(len(w), -1)).max(1)
            np.testing.assert_allclose(np.asarray(qp.scale) * 127, amax, rtol=1e-6)


def test_w8a8_carries_every_pt2e_scale_and_zero_point(artifacts):
    from edgeconv.quant.qparams import read_qparams

    target, graph, path, info = artifacts["coreml-w8a8"]
    assert "equal PT2E's" in info.scales_from and "nullify_redundant_quantization_zero_point" in info.scales_from
    ours = read_qparams(graph.module())
    act_ours = {(q.scale, q.zero_point) for q in ours.values() if q.axis is None}
    w_ours = {(q.scale, q.zero_point) for q in ours.values() if q.axis is not None}
    prog = mil_program.load_program(path)
    act = {(p.scale, p.zero_point) for _, p in coreml_read.activation_quant(prog)}
    w = {(q.scale, q.zero_point) for s in prog.steps if (q := coreml_read.constexpr_quant(prog, s))}
    assert act == act_ours  # exact float equality: no fp16 storage, no rescaling
    assert w == w_ours and len(w) == 8
    assert all(dt == "int8" for dt in (p.dtype for _, p in coreml_read.activation_quant(prog)))


def test_w8a8_default_pipeline_would_change_scales(demo, artifacts):
    """Why the two passes are removed: with coremltools' defaults the artifact's scales differ."""
    _, graph, _, _ = artifacts["coreml-w8a8"]
    ct = coreml_export.import_coremltools()
    program = coreml_export.coreml_program(graph)
    with coreml_export._quiet():
        default = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                             compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    with pytest.raises(Exception, match="lost edgeconv's scales"):
        coreml_export.check_scales(default, program)


def test_w8a8_evaluator_matches_torch_quant_sim(demo, artifacts):
    from edgeconv.quant.qparams import OUTPUT_KEY

    _, _, _, held = demo
    target, graph, path, _ = artifacts["coreml-w8a8"]
    got = target.load(path)(held.x)
    want = _torch(graph.module(), held.x)
    step = graph.qparams[OUTPUT_KEY].scale[0]
    steps = np.abs(got - want) / step
    assert steps.max() <= 1.0 + 1e-3, steps.max()  # float accumulation order may flip one rounding
    assert (steps < 1e-3).mean() >= 0.85  # measured 0.93 on the demo (32 samples x 10 logits)


def test_float_nodes_are_honoured_by_coreml_int8(demo, tmp_path):
    spec, ctx, root, _ = demo
    graph = run_passes(root, ctx, coreml_export.FLOAT_PASSES)
    convs = [n.name for n in graph.program.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    keep = (convs[0],)
    path = tmp_path / "keep.mlpackage"
    info = TARGETS.get("coreml-int8")().export(dataclasses.replace(graph, float_nodes=keep), ctx, path)
    weights = [w for w, _ in coreml_read.read_weights(path)]
    assert [w.dtype for w in weights].count("float32") == 1 and weights[0].dtype == "float32"
    assert sum(w.dtype == "int8" for w in weights) == 7
    assert any(keep[0] in n for n in info.notes)


def test_unexpressible_op_names_op_and_format(tmp_path):
    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x)

    graph = capture(Bessel(), (torch.randn(1, 8),))
    with pytest.raises(UserError, match=r"coreml: .*cannot express op special_i0"):
        TARGETS.get("coreml")().export(graph, None, tmp_path / "x.mlpackage")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_op_coremltools_lacks_is_converted_through_torchs_decomposition(tmp_path):
    """addcmul (timm CSATv2) and bicubic resize (timm CrossViT) have no coremltools translation; torch's
    own decompositions of them do (bicubic: gather_nd and arithmetic), and the MIL evaluator runs the
    result to fp32 within 1e-4 of the output range."""
    class Net(torch.nn.Module):
        def forward(self, x):
            up = torch.nn.functional.interpolate(x, size=(12, 12), mode="bicubic", align_corners=False)
            return torch.addcmul(x, x, x, value=0.5) + up[..., :8, :8]

    x = torch.randn(1, 3, 8, 8)
    graph = capture(Net().eval(), (x,))
    path = tmp_path / "x.mlpackage"
    TARGETS.get("coreml")().export(graph, None, path)
    from edgeconv.exporters.coreml.ops import read_ops

    ops = {op.op for op in read_ops(path)}
    assert "gather_nd" in ops
    out = TARGETS.get("coreml")().load(path)(x.numpy())
    ref = Net()(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4 * (ref.max() - ref.min())


def test_package_written_whole_and_weights_readable(artifacts):
    for name, (target, _, path, _) in artifacts.items():
        assert path.is_dir() and (path / "Manifest.json").is_file()
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp left behind"
        assert len(target.weights(path)) == 8


def test_runner_specs_and_batching(demo, artifacts):
    _, _, _, held = demo
    target, _, path, _ = artifacts["coreml"]
    runner = target.load(path)
    assert runner.inputs[0].shape == (1, 3, 32, 32) and runner.outputs[0].shape == (1, 10)
    assert runner.inputs[0].dtype == "float32"
    one = np.concatenate([runner(held.x[i:i + 1]) for i in range(4)])
    np.testing.assert_array_equal(runner(held.x[:4]), one)


def test_coremltools_import_does_not_load_tensorflow():
    import subprocess

    code = ("import sys; from edgeconv.exporters.coreml.coremltools_import import import_coremltools; import_coremltools(); "
            "print('tensorflow' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.skipif(sys.platform != "darwin", reason="needs macOS: MLModel.predict exists only there")
def test_macos_predict_matches_evaluator(demo, artifacts):  # pragma: no cover - macOS only
    _, _, _, held = demo
    for name in ("coreml", "coreml-w8a8"):
        target, _, path, _ = artifacts[name]
        mac = coreml_runtime.PredictRunner(path)
        lin = coreml_runtime.MILRunner(path)
        np.testing.assert_allclose(mac(held.x[:8]), lin(held.x[:8]), rtol=1e-3, atol=1e-3)


def test_per_layer_w8a8_has_one_scale_per_weight(demo, tmp_path):
    spec, ctx, root, _ = demo
    opts = dataclasses.replace(ctx.options, quant=dataclasses.replace(ctx.options.quant, weights=Granularity.PER_TENSOR,
                                                                     samples=16))
    ctx2 = dataclasses.replace(ctx, options=opts)
    graph = run_passes(root, ctx2, coreml_export.INT8_PASSES)
    path = tmp_path / "pl.mlpackage"
    TARGETS.get("coreml-w8a8")().export(graph, ctx2, path)
    weights = [w for w, _ in coreml_read.read_weights(path)]
    assert len(weights) == 8 and all(w.dtype == "int8" and w.num_scales == 1 for w in weights)


def test_parity_check_passes_for_every_coreml_target(demo, artifacts):
    """edgeconv's own parity (as the export pipeline runs it) on the MIL-evaluated artifacts."""
    from edgeconv import parity
    from edgeconv.quant.qparams import OUTPUT_KEY

    spec, _, _, held = demo
    ref = _torch(spec.module, held.x)
    for name, (target, graph, path, _) in artifacts.items():
        sim = _torch(graph.module(), held.x) if graph.quantized else None
        target_ref = ref
        if target.parity_reference == "torch-int8-weights":  # coreml-int8: torch with the file's rounded weights
            from edgeconv.quant.program import weight_int8_simulation

            target_ref = _torch(weight_int8_simulation(graph), held.x)
        report = parity.check(target.load(path)(held.x), target.runtime, held.y, target.tolerance, target_ref, sim,
                              graph.qparams.get(OUTPUT_KEY), target.parity_reference)
        assert report.passed, (name, report.diffs)
        assert report.accuracy is not None and report.accuracy >= report.reference_accuracy - 0.04


def test_every_coreml_label_names_the_engine_that_ran(artifacts, monkeypatch):
    """Off macOS the outputs come from edgeconv's own MIL evaluator, and every label says so: the
    runner (what parity and the manifest record), the refusal of an op it cannot compute, and the
    target's platform-independent label in `edgeconv list` / the README."""
    target, _, path, _ = artifacts["coreml"]
    runner = target.load(path)
    assert runner.engine == coreml_runtime.engine_here()
    if sys.platform != "darwin":
        assert isinstance(runner, coreml_runtime.MILRunner)
        assert runner.engine == "coreml: edgeconv MIL evaluator"
    assert coreml_runtime.PredictRunner.engine == "coreml: MLModel.predict"
    assert mil_kernels.UnverifiedOp("gelu").runtime == "coreml: edgeconv MIL evaluator"
    assert target.runtime == "coreml: MLModel.predict (macOS) / edgeconv MIL evaluator (elsewhere)"
    for name in COREML_TARGETS:
        assert TARGETS.get(name).runtime == target.runtime
    monkeypatch.setattr(coreml_runtime, "on_macos", lambda: True)
    assert coreml_runtime.engine_here() == "coreml: MLModel.predict"
    monkeypatch.setattr(coreml_runtime, "on_macos", lambda: False)
    assert coreml_runtime.engine_here() == "coreml: edgeconv MIL evaluator"


def test_export_manifest_names_the_engine_that_checked_parity(tmp_path):
    """Through the pipeline: the manifest's parity runtime is the runner's engine, not "coreml"."""
    from edgeconv.demo import demo as factory
    from edgeconv.pipeline import export

    m = export(factory(), ExportOptions(targets=("coreml",), out_dir=str(tmp_path), eval_samples=16))
    (a,) = m.artifacts
    assert a.parity is not None and a.parity.passed, a.parity
    assert a.parity.runtime == coreml_runtime.engine_here()
    assert a.parity.runtime != "coreml"


@pytest.mark.parametrize("name", ["coreml", "coreml-w8a8"])
def test_a_package_is_reproducible(artifacts, tmp_path, name):
    """The same program exported again gives the same bytes (coremltools' random item UUIDs, the
    conversion date and the metadata map's order are made deterministic), and the result still loads."""
    import json

    from edgeconv.models import file_sha256

    target, graph, path, _ = artifacts[name]
    again = tmp_path / path.name
    target.export(graph, None, again)
    assert file_sha256(again) == file_sha256(path)
    items = json.loads((again / "Manifest.json").read_text())["itemInfoEntries"]
    assert {i["path"] for i in items.values()} >= {"com.apple.CoreML/model.mlmodel", "com.apple.CoreML/weights"}
    assert target.load(again).outputs  # coremltools still reads the package


def test_rank6_blocks_convert_at_rank_5(tmp_path):
    """timm NesT's blockify (a rank-6 reshape, transpose, reshape) and its qkv (rank-6 reshape,
    permute, unbind): coremltools refused them ("Core ML only supports tensors with rank <= 5").
    Dims that stay adjacent through the permutation move as one: both targets export and match."""
    import json

    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "zoo:blockify", "--calib", "random", "-t", "coreml",
                                    "-t", "coreml-w8a8", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    arts = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert [a["target"] for a in arts] == ["coreml", "coreml-w8a8"]
    assert all(a["parity"]["passed"] for a in arts)


def test_rank6_regions_of_three_timm_families_convert(tmp_path):
    """zoo:high_rank — Twins' window partition fed to the qkv linear, MViTv2's rank-6 relative
    position sum, Hiera's qkv split, mask-unit max-pool and unroll (six dims, none staying together).
    coremltools refused each ("Core ML only supports tensors with rank <= 5"); now both targets
    convert, match torch, and the int8 file reads int8 data only (the max-pool's reshape back
    requantized at the max's own scale: coremltools folds dq → reshape → q into an int8 reshape
    whatever the quantize's scale)."""
    import json

    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "zoo:high_rank", "--calib", "random", "--calib-samples", "16",
                                    "--eval-samples", "8", "-t", "coreml", "-t", "coreml-w8a8", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    fp32, w8a8 = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert (fp32["target"], w8a8["target"]) == ("coreml", "coreml-w8a8")
    assert fp32["parity"]["passed"] and fp32["parity"]["diffs"][0]["cosine"] > 0.99999, fp32["parity"]
    assert w8a8["float_ops"]["count"] == 0, w8a8["float_ops"]["ops"]
    (sim,) = [d for d in w8a8["parity"]["diffs"] if d["reference"] == "torch-quant-sim"]
    assert w8a8["parity"]["passed"] and sim["max_steps"] <= 1.0, w8a8["parity"]
    for art in (fp32, w8a8):
        prog = mil_program.load_program(tmp_path / art["path"])
        assert "reduce_max" in [s.op_type for s in prog.steps]  # the max-pool is there, at rank <= 5


def test_permutations_of_six_dims_split_into_two_of_five_runs():
    """Every permutation of six dims is done as at most two reshape → permute steps of rank <= 5,
    with the same result (Hiera's unroll: (0, 2, 4, 1, 3, 5) keeps no two dims together)."""
    import itertools
    import math

    from edgeconv.exporters.coreml.export import _permute_steps, _runs

    x = torch.arange(2 * 3 * 2 * 5 * 2 * 3).reshape(2, 3, 2, 5, 2, 3)
    for perm in itertools.permutations(range(6)):
        steps = _permute_steps(list(perm))
        assert steps is not None and len(steps) <= 2, perm
        y, sizes = x, list(x.shape)
        for order in steps:
            runs = _runs(order)
            by_input = sorted(runs)
            y = y.reshape([math.prod(sizes[r[0]:r[-1] + 1]) for r in by_input]).permute([by_input.index(r) for r in runs])
            assert y.dim() <= 5, (perm, steps)
            sizes = [sizes[d] for d in order]
        assert torch.equal(y.reshape(x.permute(perm).shape), x.permute(perm)), perm


def test_w8a8_relayouts_and_hard_swish_read_int8(tmp_path):
    """zoo:swin_hardswish — hard-swish, a two-dim roll, rank-6 window partitions and a hard-sigmoid
    gate. coremltools wrote hard-swish as thresholded_relu → sigmoid_hard → mul, the roll as two
    gathers, and the lowered partitions as reshape → transpose → reshape with nothing requantized
    between them: 7 MIL ops read a float tensor. Now every one reads int8 data (a dequantize, or an
    int8 reshape), and the artifact still matches the torch int8 simulation, end to end and per layer."""
    import json

    from click.testing import CliRunner

    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", "zoo:swin_hardswish", "--calib", "random", "--calib-samples",
                                    "16", "--eval-samples", "8", "-t", "coreml-w8a8", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (art,) = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert art["float_ops"]["count"] == 0, art["float_ops"]["ops"]
    assert art["parity"]["passed"], art["parity"]
    (sim,) = [d for d in art["parity"]["diffs"] if d["reference"] == "torch-quant-sim"]
    assert sim["passed"] and sim["max_steps"] <= 1.0, sim
    layers = art["parity"]["layers"]
    assert layers["passed"] and layers["unmatched"] == 0 and layers["worst_steps"] <= 1.0, layers
    prog = mil_program.load_program(tmp_path / art["path"])
    ops = [s.op_type for s in prog.steps]
    assert "thresholded_relu" not in ops and ops.count("sigmoid_hard") == 1, ops  # hard-swish as x · gate
    # the roll: slices and a concat per dim (calib.rewrites.roll_to_slices); NHWC, 2 windows, 2 grids
    assert ops.count("gather") == 0 and ops.count("concat") >= 2 and ops.count("transpose") == 5, ops


def test_float_ops_counts_a_gate_of_a_float_tensor():
    """The hard-swish reading is narrow: x · sigmoid_hard(x) counts as int8 only when x is a
    dequantize; the same product of a float x (a float op's output) is two float ops."""
    def step(op, name, **inputs):
        return mil_program.Step(op, name, inputs, (name,), ("fp32",), ((1, 4),))

    def program(x_from):
        steps = (step("quantize", "q", input="x"), step(x_from, "a", x="q" if x_from == "dequantize" else "x"),
                 step("sigmoid_hard", "g", x="a"), step("mul", "m", x="a", y="g"))
        return mil_program.MILProgram(("x",), ("fp32",), ("m",), {}, steps)

    assert coreml_read.float_ops(program("dequantize")).count == 0
    assert coreml_read.float_ops(program("sin")).ops == ("sin a", "sigmoid_hard g", "mul m")
