"""The sparse path on this x86 host: sparsify pass, gradual pruning, the eligibility checker on the
torch graph and on real litert-torch .tflite files, the tflite-sparse targets, and check-sparse.

(XNNPACK runs sparse weights dense on x86 with AVX: here the sparse artifact must equal its dense
twin bit for bit. The engaged sparse path is shown on emulated arm64 in test_sparse_arm64.py.)
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeconv.errors import UserError
from zoo_sparse import INPUT_SHAPE, NoPointwise, dense_tflite, mobilenet_v2ish, pruned_graph

N_POINTWISE = 16  # 1x1 convs in the zoo MobileNetV2-shaped model; plus 1 linear classifier


def _run(path, x: np.ndarray) -> np.ndarray:
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    return TfliteRunner(path)(x)


def _inputs(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, *INPUT_SHAPE[1:])).astype(np.float32)


# --- pruning ----------------------------------------------------------------------------------

def test_block_mask_zeroes_whole_4x1_blocks_and_is_idempotent():
    from edgeconv.passes.sparsify import block_mask

    w = torch.randn(24, 40, 1, 1)
    m = block_mask(w, 0.75, 4)
    blocks = m.reshape(6, 4, 40)
    assert bool((blocks.all(1) | (~blocks).all(1)).all()), "a block is partly pruned"
    assert (~m).float().mean().item() == pytest.approx(0.75, abs=1 / 240)
    pruned = w * m
    kept = blocks.all(1)
    # the blocks kept are the largest by L1 norm
    norms = w.abs().reshape(6, 4, 40).sum(1)
    assert norms[kept].min() >= norms[~kept].max()
    assert torch.equal(block_mask(pruned, 0.75, 4), m)


def test_block_mask_partial_last_block():
    from edgeconv.passes.sparsify import block_mask

    m = block_mask(torch.randn(10, 64), 0.8, 4)  # 10 classes: blocks 4, 4, 2
    assert m.shape == (10, 64)
    assert bool((m[8:10].all(0) | (~m[8:10]).all(0)).all())


def test_sparsify_prunes_only_1x1_and_linear_and_runs_once():
    from edgeconv.graph import capture
    from edgeconv.passes.fx import CONV_OPS, const
    from edgeconv.passes.sparsify import SparseOptions, prune

    graph = capture(mobilenet_v2ish(), (torch.zeros(INPUT_SHAPE),))
    res = prune(graph, SparseOptions(0.9))
    assert res.changed and "17 layers (16 1x1 convs, 1 linear)" in res.notes[0]
    gm = res.graph.module()
    seen = 0
    for n in gm.graph.nodes:
        if n.op == "call_function" and (n.target in CONV_OPS or "linear" in str(n.target)):
            w = const(gm, n.args[1])
            zeros = float((w == 0).float().mean())
            if w.dim() == 2 or tuple(w.shape[2:]) == (1, 1):
                # the 10-class linear has a partial last block (4, 4, 2 rows): not exactly 90 %
                assert zeros == pytest.approx(0.9, abs=0.01 if w.dim() == 4 else 0.03), n.name
                seen += 1
            else:
                assert zeros == 0.0, f"{n.name} (stem or depthwise) was pruned"
    assert seen == N_POINTWISE + 1
    again = prune(res.graph, SparseOptions(0.9))
    assert not again.changed


def test_sparsify_refuses_a_model_without_1x1_convs():
    from edgeconv.graph import capture
    from edgeconv.passes.sparsify import SparseOptions, prune

    graph = capture(NoPointwise(), (torch.zeros(1, 3, 16, 16),))
    with pytest.raises(UserError, match="no 1x1 convs or linear layers"):
        prune(graph, SparseOptions(0.8))


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.2])
def test_sparsity_outside_open_unit_interval_is_refused(bad):
    from edgeconv.passes.sparsify import PolynomialSchedule, SparseOptions

    with pytest.raises(UserError, match=r"outside \(0, 1\)"):
        SparseOptions(bad)
    with pytest.raises(UserError, match=r"outside \(0, 1\)"):
        PolynomialSchedule(final=bad)


def test_polynomial_schedule_is_cubic_from_initial_to_final():
    from edgeconv.passes.sparsify import PolynomialSchedule

    s = PolynomialSchedule(final=0.8, initial=0.1, begin_step=100, end_step=300, frequency=50)
    assert s.sparsity(0) == 0.0 and s.sparsity(100) == pytest.approx(0.1)
    assert s.sparsity(200) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3)
    assert s.sparsity(300) == pytest.approx(0.8) and s.sparsity(10_000) == pytest.approx(0.8)
    vals = [s.sparsity(t) for t in range(100, 301, 10)]
    assert vals == sorted(vals)
    assert [t for t in range(0, 400) if s.due(t)] == [100, 150, 200, 250, 300, 350]


def test_gradual_pruner_reaches_the_target_and_keeps_weights_pruned():
    from edgeconv.passes.sparsify import GradualPruner, PolynomialSchedule

    torch.manual_seed(0)
    model = mobilenet_v2ish(num_classes=4).train()
    pruner = GradualPruner(model, PolynomialSchedule(final=0.8, end_step=6, frequency=2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, *INPUT_SHAPE[1:]), torch.tensor([0, 1, 2, 3])
    seen = []
    for step in range(8):
        seen.append(pruner.step(step))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        pruner.apply()
    assert seen[0] == 0.0 and 0.0 < seen[3] < 0.8 and seen[-1] == pytest.approx(0.8)
    assert pruner.sparsity() == pytest.approx(0.8, abs=0.01)  # still pruned after SGD updates


# --- the checker on the torch graph ------------------------------------------------------------

def test_checker_graph_eligible_after_pruning_with_4x1_blocks():
    from edgeconv.sparse_check import sparse_path_check

    rep = sparse_path_check(pruned_graph(0.9), "mnv2")
    assert rep.eligible, rep.lines()
    assert rep.zeros_1x1 == pytest.approx(0.9, abs=0.005)
    assert len(rep.layers) == N_POINTWISE and {layer.block for layer in rep.layers} == {4}


def test_checker_graph_names_each_failing_condition():
    from edgeconv.graph import capture
    from edgeconv.sparse_check import sparse_path_check

    dense = sparse_path_check(capture(mobilenet_v2ish(), (torch.zeros(INPUT_SHAPE),)))
    assert not dense.eligible and [f.condition for f in dense.findings] == ["sparsity"]
    assert "more than 66.7%" in dense.findings[0].reason

    odd = sparse_path_check(pruned_graph(0.9, with_unsupported_op=True))
    assert not odd.eligible
    bad = [f for f in odd.findings if f.blocking]
    assert [f.condition for f in bad] == ["unsupported-op"] and "3x3 conv (groups 1" in bad[0].reason

    int8 = sparse_path_check(dataclasses.replace(pruned_graph(0.9), quantizer=object()))
    assert not int8.eligible and [f.condition for f in int8.findings] == ["int8"]

    same = sparse_path_check(pruned_graph(0.9, tf_same_padding=True))
    stem = [f for f in same.findings if f.blocking]
    assert not same.eligible and [f.condition for f in stem] == ["stem"]
    assert "(0, 1, 0, 1)" in stem[0].reason and stem[0].node == "conv2d"


# --- real .tflite artifacts --------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The eligible artifact and its controls, each from one real litert-torch conversion."""
    from edgeconv.exporters.tflite.sparse import rewrite

    d = tmp_path_factory.mktemp("sparse")
    dense = dense_tflite(0.9)
    info = {
        "sparse": rewrite(dense, d / "sparse.tflite"),
        "fp16": rewrite(dense, d / "fp16.tflite", fp16=True),
        "twin": rewrite(dense, d / "twin.tflite", encode=False),
        "unsupported": rewrite(dense_tflite(0.9, with_unsupported_op=True), d / "unsupported.tflite"),
        "tf_same": rewrite(dense_tflite(0.9, tf_same_padding=True), d / "tf_same.tflite"),
    }
    return d, info


def _kinds(path) -> list[str]:
    from edgeconv.exporters.tflite.flatbuffer import builtin, op_names, read_tflite

    m = read_tflite(path)
    names = op_names()
    return [builtin(m, op, names) for op in m.subgraphs[0].operators]


def test_sparse_artifact_eligible_one_densify_per_pruned_layer(artifacts):
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    d, info = artifacts
    rep = check_tflite(d / "sparse.tflite")
    assert rep.eligible, rep.lines()
    kinds = _kinds(d / "sparse.tflite")
    assert kinds.count("DENSIFY") == rep.densify_ops == N_POINTWISE + 1 == len(info["sparse"].encoded)
    assert len(rep.layers) == N_POINTWISE and all(layer.densify and layer.block == 4 for layer in rep.layers)
    assert rep.zeros_1x1 == pytest.approx(0.9, abs=0.005)
    # every stride-1 depthwise conv now reads an explicit PAD (the converter wrote SAME)
    assert info["sparse"].explicit_pads == 5 and not any("[padding]" in line for line in rep.lines())
    assert info["sparse"].sparse_bytes < 0.4 * info["sparse"].dense_bytes


def test_sparse_weights_decode_to_the_dense_twin(artifacts):
    from edgeconv.exporters.tflite.flatbuffer import const_array, read_tflite

    d, _ = artifacts
    sparse, twin = read_tflite(d / "sparse.tflite"), read_tflite(d / "twin.tflite")
    encoded = [t for t in sparse.subgraphs[0].tensors if t.sparsity is not None]
    assert len(encoded) == N_POINTWISE + 1
    by_name = {t.name: t for t in twin.subgraphs[0].tensors}
    for t in encoded:
        dense = const_array(twin, by_name[t.name])
        assert np.array_equal(const_array(sparse, t), dense), t.name


def test_x86_sparse_equals_dense_twin_and_torch(artifacts):
    d, _ = artifacts
    x = _inputs()
    sparse, twin = _run(d / "sparse.tflite", x), _run(d / "twin.tflite", x)
    assert np.array_equal(sparse, twin)  # x86 XNNPACK densifies and runs dense
    gm = pruned_graph(0.9).module()
    with torch.no_grad():  # the captured program has a static batch of 1
        ref = np.concatenate([gm(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])
    assert np.abs(sparse - ref).max() < 1e-4


def test_fp16_artifact_eligible_with_densify_then_dequantize(artifacts):
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    d, info = artifacts
    rep = check_tflite(d / "fp16.tflite")
    assert rep.eligible and rep.densify_ops == N_POINTWISE + 1, rep.lines()
    kinds = _kinds(d / "fp16.tflite")
    assert kinds.count("DEQUANTIZE") >= rep.densify_ops
    x = _inputs()
    a, b = _run(d / "fp16.tflite", x), _run(d / "twin.tflite", x)
    cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.9999 and not np.array_equal(a, b)
    assert info["fp16"].sparse_bytes < info["sparse"].sparse_bytes


def test_ineligible_artifacts_say_why(artifacts):
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    d, _ = artifacts
    no_enc = check_tflite(d / "twin.tflite")
    assert not no_enc.eligible and [f.condition for f in no_enc.findings if f.blocking] == ["no-densify"]

    odd = check_tflite(d / "unsupported.tflite")
    bad = [f for f in odd.findings if f.blocking]
    assert not odd.eligible and [f.condition for f in bad] == ["unsupported-op"]
    assert bad[0].node.startswith("CONV_2D #") and "3x3 CONV_2D inside the region" in bad[0].reason

    same = check_tflite(d / "tf_same.tflite")
    bad = [f for f in same.findings if f.blocking]
    assert not same.eligible and [f.condition for f in bad] == ["stem"]
    # its stride-2 depthwise convs were converted to TF SAME: noted, not blocking on this runtime
    assert any(f.condition == "padding" and not f.blocking for f in same.findings)


# --- targets ---------------------------------------------------------------------------------

def test_sparse_targets_registered_with_their_pass_lists():
    from edgeconv import registrations
    from edgeconv.registry import PASSES, TARGETS

    registrations.load()
    assert "sparsify" in PASSES
    for name in ("tflite-sparse", "tflite-sparse-fp16"):
        t = TARGETS.get(name)
        assert t.passes == ("reparam-merge", "fold-conv-bn", "sparsify", "cleanup") and not t.quantized


def test_sparse_target_export_writes_eligible_file_with_sizes(tmp_path):
    from edgeconv.exporters.tflite.sparse import TfliteSparse

    graph = pruned_graph(0.9)
    info = TfliteSparse().export(graph, None, tmp_path / "m.tflite")  # type: ignore[arg-type]
    text = "\n".join(info.notes)
    assert "size: dense" in text and "ELIGIBLE" in text and "NOT ELIGIBLE" not in text
    runner = TfliteSparse().load(tmp_path / "m.tflite")
    assert runner.outputs[0].shape == (1, 10)


def test_pipeline_exports_both_sparse_targets_with_parity_and_report(tmp_path):
    from edgeconv.config import CalibSpec, ExportOptions
    from edgeconv.pipeline import export
    from zoo_sparse import pruned_spec

    m = export(pruned_spec(), ExportOptions(targets=("tflite-sparse", "tflite-sparse-fp16"), out_dir=str(tmp_path),
                                            calib=CalibSpec(source="random"), eval_samples=8))
    assert [a.target for a in m.artifacts] == ["tflite-sparse", "tflite-sparse-fp16"]
    for a in m.artifacts:
        assert a.parity.passed, (a.target, a.parity.diffs)
        notes = "\n".join(n for s in a.stages if s.stage == f"export:{a.target}" for n in s.notes)
        assert "size: dense" in notes and "ELIGIBLE" in notes and "NOT ELIGIBLE" not in notes, notes
        sparsify = next(s for s in a.stages if s.stage == "sparsify")
        assert not sparsify.changed  # already pruned to 90 %: the default 80 % removes nothing more
    assert m.artifacts[1].size_bytes < m.artifacts[0].size_bytes


def test_sparse_target_refuses_int8():
    from edgeconv.exporters.tflite.sparse import TfliteSparse

    quantized = dataclasses.replace(pruned_graph(0.9), quantizer=object())
    with pytest.raises(UserError, match="float-only"):
        TfliteSparse().export(quantized, None, "unused.tflite")  # type: ignore[arg-type]


# --- CLI --------------------------------------------------------------------------------------

def _cli(*args):
    from edgeconv.cli import main

    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def test_check_sparse_cli_exit_codes(artifacts, tmp_path):
    d, _ = artifacts
    code, out = _cli("check-sparse", str(d / "sparse.tflite"))
    assert code == 0 and "ELIGIBLE" in out and "4x1 blocks" in out
    code, out = _cli("check-sparse", str(d / "twin.tflite"))
    assert code == 1 and "[no-densify]" in out
    code, out = _cli("check-sparse", "zoo_sparse:mobilenet_v2ish", "--sparsity", "0.9", "--input-shape", "1,3,64,64")
    assert code == 0 and "ELIGIBLE (graph)" in out.replace(" for XNNPACK sparse inference", "")


@pytest.mark.parametrize("args, needle", [
    (("zoo_sparse:mobilenet_v2ish", "--sparsity", "1.0"), "outside (0, 1)"),
    (("zoo_sparse:mobilenet_v2ish", "--sparsity", "0"), "outside (0, 1)"),
    (("zoo_sparse:NoPointwise", "--sparsity", "0.8", "--input-shape", "1,3,16,16"), "no 1x1 convs"),
])
def test_check_sparse_cli_bad_input_exit_2(args, needle):
    code, out = _cli("check-sparse", *args)
    assert code == 2 and needle in out and "Traceback" not in out


def test_check_sparse_cli_non_model_files_exit_2(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 64)
    for path, needle in ((text, "is not a model"), (fake, "not a TFLite flatbuffer")):
        code, out = _cli("check-sparse", str(path))
        assert code == 2 and needle in out


def test_sparse_verdict_fails_when_pruning_drops_the_source_models_accuracy(tmp_path):
    """Parity against the pruned program alone passed a demo pruned to chance (10.5 %); the verdict
    also bounds the drop from the user's dense model (default 0.02, --max-drop overrides)."""
    code, out = _cli("export", "-t", "tflite-sparse", "--sparsity", "0.8", "--eval-samples", "64",
                     "-o", str(tmp_path / "a"))
    m = json.loads((tmp_path / "a" / "edgeconv.json").read_text())
    drop = next(d for d in m["artifacts"][0]["parity"]["diffs"] if d["reference"] == "source-model")
    assert code == 1 and not drop["passed"] and "--max-drop 0.02" in drop["reason"], out
    assert m["artifacts"][0]["parity"]["accuracy"] < m["reference_accuracy"] - 0.5
    code, out = _cli("export", "-t", "tflite-sparse", "--sparsity", "0.8", "--eval-samples", "64",
                     "--max-drop", "1.0", "-o", str(tmp_path / "b"))
    assert code == 0, out
