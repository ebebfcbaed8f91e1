"""int8 that is right on real-world nets: full-integer TFLite (no DEQUANTIZE/QUANTIZE island), the
scales TFLite requires shared (PAD, CONCATENATION, pooling, RESHAPE), the simulation within the
tolerance, ECA's expand_as lowered, and a file the runtime cannot load reported in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from examples.mobilenet_v2 import MobileNetV2


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    from examples.zoo.images import batch

    return batch(n, size, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=seed)


def _quantize(model: nn.Module, x: np.ndarray):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeconv.calib.observers import quantizer

    q = quantizer()
    ex = (torch.from_numpy(x[:1]),)
    prepared = prepare_pt2e(torch.export.export(model.eval(), ex, strict=False).module(), q)
    with torch.no_grad():
        for i in range(len(x)):
            prepared(torch.from_numpy(x[i:i + 1]))
    return convert_pt2e(prepared, fold_quantize=False), q, ex


def _tflite(conv, q, ex, path):
    from edgeconv.exporters.tflite.export import convert

    convert(torch.export.export(conv, ex, strict=False).module(), ex, path, quantizer=q, target="tflite-int8")
    return path


def _run(path, x: np.ndarray) -> tuple[np.ndarray, float]:
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    r = TfliteRunner(path)
    return r(x), r.outputs[0].quant.scale[0]


def _ops(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return it._get_ops_details(), tensors  # noqa: SLF001


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV2 (real layout, width 0.5 of the channel table, 64²) with BN statistics from photos."""
    torch.manual_seed(0)
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1))
    model = MobileNetV2(num_classes=10, settings=settings, last=256)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(_images(8, 64, seed=1)))
    x = _images(24, 64, seed=3)
    conv, q, ex = _quantize(model, x[:16])
    path = _tflite(conv, q, ex, tmp_path_factory.mktemp("mnv2") / "m.tflite")
    return conv, path, x[16:]


def test_mobilenet_residual_adds_are_int8(mobilenet):
    from edgeconv.exporters.tflite.read import float_ops

    _, path, _ = mobilenet
    ops, tensors = _ops(path)
    names = [o["op_name"] for o in ops]
    assert names.count("ADD") == 5  # every residual ADD of this layout
    assert "DEQUANTIZE" not in names and "QUANTIZE" not in names, names
    f = float_ops(path)
    assert f.count == 0, f.ops
    for o in ops:
        if o["op_name"] == "ADD":
            assert all(np.dtype(tensors[i]["dtype"]) == np.int8 for i in list(o["inputs"]) + list(o["outputs"]))


def test_mobilenet_matches_simulation(mobilenet):
    conv, path, x = mobilenet
    with torch.no_grad():
        sim = torch.cat([conv(torch.from_numpy(x[i:i + 1])) for i in range(len(x))]).numpy()
    out, scale = _run(path, x)
    assert np.abs(out - sim).max() / scale <= 3.0


class Zoo(nn.Module):
    """The ops whose int8 form must keep one scale (PAD, CONCATENATION, pooling, RESHAPE), a
    standalone BatchNorm after a concat, a hard-sigmoid SE gate, a product of two activations."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(16)
        self.se = nn.Conv2d(16, 16, 1)
        self.c = nn.Conv2d(16, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), self.b(x)], 1)
        y = self.bn(y)
        y = y * F.hardsigmoid(self.se(y.mean((2, 3), keepdim=True)))
        y = y * torch.sigmoid(y)
        y = self.c(F.pad(y, (1, 1, 1, 1)))
        y = F.max_pool2d(y, 2) + F.avg_pool2d(y, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 2), 1))


def test_shared_scales_and_no_float_island(tmp_path):
    from edgeconv.exporters.tflite.read import float_ops

    torch.manual_seed(0)
    model = Zoo()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = _images(12, 16)
    conv, q, ex = _quantize(model, x[:8])
    path = _tflite(conv, q, ex, tmp_path / "zoo.tflite")
    f = float_ops(path)
    assert f.count == 0, f.ops
    ops, tensors = _ops(path)
    seen = set()
    for o in ops:
        if o["op_name"] in ("PAD", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE"):
            seen.add(o["op_name"])
            qs = [tensors[int(i)]["quantization_parameters"] for i in o["inputs"]
                  if np.dtype(tensors[int(i)]["dtype"]) == np.int8] + \
                 [tensors[int(i)]["quantization_parameters"] for i in o["outputs"]]
            scales = {(float(p["scales"][0]), int(p["zero_points"][0])) for p in qs}
            assert len(scales) == 1, (o["op_name"], scales)
    assert {"PAD", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D"} <= seen, seen
    with torch.no_grad():
        sim = torch.cat([conv(torch.from_numpy(x[i:i + 1])) for i in range(8, 12)]).numpy()
    out, scale = _run(path, x[8:])
    assert np.abs(out - sim).max() / scale <= 3.0


class PoolThenRelu(nn.Module):
    """A ReLU / ReLU6 right after a max and an average pool (the converter fuses each into the pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.max_pool2d(self.a(x), 3, 1, 1))
        y = F.relu6(F.avg_pool2d(self.b(y), 3, 1, 1))
        return self.fc(y.mean((2, 3)))


def test_relu_after_pool_shares_the_pool_scale(tmp_path):
    """The pools' int8 kernels keep one scale from input to output, fused ReLU included: the converter
    refused the file when the ReLU had its own ("'tfl.max_pool_2d' op quantization parameters violate
    the same scale constraint"). On the pool's grid the clamp is exact, so the simulation matches."""
    torch.manual_seed(0)
    x = _images(12, 16)
    conv, q, ex = _quantize(PoolThenRelu(), x[:8])
    path = _tflite(conv, q, ex, tmp_path / "pool.tflite")
    ops, tensors = _ops(path)
    pools = [o for o in ops if o["op_name"] in ("MAX_POOL_2D", "AVERAGE_POOL_2D")]
    assert len(pools) == 2, [o["op_name"] for o in ops]
    for o in pools:
        (i,), (j,) = o["inputs"], o["outputs"]
        assert tensors[int(i)]["quantization"] == tensors[int(j)]["quantization"], o["op_name"]
    with torch.no_grad():
        sim = torch.cat([conv(torch.from_numpy(x[i:i + 1])) for i in range(8, 12)]).numpy()
    out, scale = _run(path, x[8:])
    assert np.abs(out - sim).max() / scale <= 3.0


class ECA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.att = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.att(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y).expand_as(x)


def eca():
    from edgeconv.models import ModelSpec

    torch.manual_seed(0)
    return ModelSpec(module=ECA().eval(), example_inputs=(torch.zeros(1, 3, 16, 16),), name="eca-tiny")


def test_eca_expand_as_lowers_to_tflite(tmp_path):
    from edgeconv.exporters.tflite.export import convert
    from edgeconv.exporters.tflite.read import float_ops
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    spec = eca()
    x = _images(10, 16)
    program = torch.export.export(spec.module, spec.example_inputs, strict=False).module()
    convert(program, spec.example_inputs, tmp_path / "f.tflite")  # fp32: was "broadcast-compatible" refused
    with torch.no_grad():
        ref = spec.module(torch.from_numpy(x)).numpy()
    out = TfliteRunner(tmp_path / "f.tflite")(x)
    assert np.abs(out - ref).max() <= 1e-4 * (ref.max() - ref.min())
    conv, q, ex = _quantize(spec.module, x[:6])
    path = _tflite(conv, q, ex, tmp_path / "q.tflite")
    names = [o["op_name"] for o in _ops(path)[0]]
    assert "BROADCAST_TO" not in names
    assert float_ops(path).count == 0
    TfliteRunner(path)  # loads (BROADCAST_TO failed to prepare before)


def test_unloadable_artifact_is_a_recorded_failure(tmp_path, monkeypatch):
    """A .tflite ai-edge-litert cannot prepare: one line, exit 1, manifest written, no traceback."""
    from edgeconv.cli import main
    from edgeconv.exporters.tflite import runtime as runtimes

    def refuse(self, path, threads=1, kernels="fast"):  # what ai-edge-litert said of ECA's BROADCAST_TO before drop_expand
        raise RuntimeError("tflite/kernels/broadcast_to.cc Output shape must be broadcastable from input shape."
                           "Node number 23 (BROADCAST_TO) failed to prepare.\n")

    monkeypatch.setattr(runtimes.TfliteRunner, "__init__", refuse)
    np.save(tmp_path / "calib.npy", _images(12, 16))
    res = CliRunner().invoke(main, ["export", "--model", "tests.test_int8_fullint:eca", "-t", "tflite-int8",
                                    "--calib", str(tmp_path / "calib.npy"), "--calib-samples", "6",
                                    "-o", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    manifest = json.loads((tmp_path / "out" / "edgeconv.json").read_text())
    (art,) = manifest["artifacts"]
    assert not art["parity"]["passed"]
    reason = art["parity"]["diffs"][0]["reason"]
    assert "cannot load" in reason and "\n" not in reason


@pytest.mark.parametrize("ref", ["examples.zoo.sr:espcn_small", "examples.zoo.metaformer:caformer_small"])
def test_every_layer_is_judged_in_isolation(tmp_path, ref):
    """ESPCN (sub-pixel convolution: the pixel-shuffled tensors' rows are not samples) and CAFormer
    (attention: stacked q/k/v, k transposed, 5-D reshapes): each layer is matched and judged in
    isolation within a step, in all three int8 formats."""
    import json

    from edgeconv.cli import main

    calib = tmp_path / "calib"
    calib.mkdir()
    from examples.zoo.images import write_folder

    write_folder(calib, 24, side=64)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["export", "--model", ref, "-t", "tflite-int8", "-t",
                                    "onnx-int8", "-t", "coreml-w8a8", "--calib", str(calib), "--calib-samples", "16",
                                    "--eval-samples", "8", "-o", str(out)])
    assert res.exit_code == 0, res.output
    for a in json.loads((out / "edgeconv.json").read_text())["artifacts"]:
        layers = a["parity"]["layers"]
        assert layers["passed"] and layers["layers"] >= 6 and layers["worst_steps"] <= 1, (a["target"], layers)


def test_arithmetic_on_parameters_alone_is_stored_not_run(tmp_path):
    """`weights.softmax(-1)` of a parameter (timm EfficientViM's head) read by multiplies: TFLite's
    converter made it an int8 SOFTMAX at the multiply's scale, a file that does not load ("output
    scale not near 1/256"), and ONNX kept a float Softmax. Folded, every format is full-integer."""
    from edgeconv.cli import main

    targets = ["tflite-int8", "onnx-int8", "coreml-w8a8"]
    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:param_softmax_head", "--calib", "random",
                                    *[a for t in targets for a in ("-t", t)], "-o", str(tmp_path)])
    arts = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert res.exit_code == 0, res.output
    assert {a["target"]: a["float_ops"]["count"] for a in arts} == dict.fromkeys(targets, 0)
    assert all(a["parity"]["passed"] and a["parity"]["layers"]["layers"] >= 5 for a in arts)


def test_a_softmax_over_any_axis_is_int8(tmp_path):
    """Softmax over paths (SKNet/ResNeSt split attention), over tokens (CoaT), over one token, and
    over the last axis of talking-head logits (EfficientFormerV2): TFLite's SOFTMAX takes the last
    axis only, and litert-torch wrote the others (the talking heads' too: its layout pass made them
    NHWC and moved the axis; a softmax over one element: its max and sum folded away) as float
    SUB/EXP/SUM/DIV inside a DEQUANTIZE/QUANTIZE pair. Rewritten (calib.rewrites.
    softmax_to_last_axis), every format is full-integer and every layer passes alone."""
    from edgeconv.cli import main

    targets = ["tflite-int8", "onnx-int8", "coreml-w8a8"]
    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:axis_softmax", "--calib", "random",
                                    "--calib-samples", "16", "--eval-samples", "8",
                                    *[a for t in targets for a in ("-t", t)], "-o", str(tmp_path)])
    arts = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    assert res.exit_code == 0, res.output
    assert {a["target"]: a["float_ops"]["count"] for a in arts} == dict.fromkeys(targets, 0)
    for a in arts:
        layers = a["parity"]["layers"]
        assert a["parity"]["passed"] and layers["passed"] and layers["layers"] >= 6, (a["target"], layers)


def test_unfold_and_fold_export_to_every_format(tmp_path):
    """VOLO's outlook attention (F.unfold, softmax, F.fold with overlaps): TFLite's runtime refused the
    scatter litert-torch wrote for col2im and coremltools refused the op; as one-hot depthwise convs
    all six targets export, the int8 ones full-integer and every layer within the verdict."""
    from edgeconv.cli import main

    targets = ["tflite", "coreml", "tflite-int8", "onnx-int8", "coreml-w8a8"]
    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:outlook", "--calib", "random",
                                    "--calib-samples", "16", "--eval-samples", "8",
                                    *[a for t in targets for a in ("-t", t)], "-o", str(tmp_path)])
    arts = {a["target"]: a for a in json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]}
    assert res.exit_code == 0, res.output
    assert sorted(arts) == sorted(targets) and all(a["parity"]["passed"] for a in arts.values())
    assert {t: arts[t]["float_ops"]["count"] for t in targets[2:]} == dict.fromkeys(targets[2:], 0)


def test_float_ops_error_fails_the_artifact_naming_each_op(tmp_path):
    """`--float-ops error`: an int8 file that still computes in float fails (exit 1, manifest written),
    each float op named; a full-integer file of the same run passes; `warn` (the default) passes both."""
    import json

    from click.testing import CliRunner

    from edgeconv.cli import main

    args = ["export", "--model", "zoo:float_tail", "-t", "tflite-int8", "-t", "onnx-int8", "--calib", "random",
            "--calib-samples", "8", "--eval-samples", "16"]
    res = CliRunner().invoke(main, args + ["--float-ops", "error", "-o", str(tmp_path / "e")])
    assert res.exit_code == 1, res.output
    arts = {a["target"]: a for a in json.loads((tmp_path / "e" / "edgeconv.json").read_text())["artifacts"]}
    full = {a: next(d for d in arts[a]["parity"]["diffs"] if d["reference"] == "full-integer") for a in arts}
    assert arts["tflite-int8"]["float_ops"]["count"] > 0 and not full["tflite-int8"]["passed"]
    assert "CUMSUM" in full["tflite-int8"]["reason"] and "--float-ops error" in full["tflite-int8"]["reason"]
    assert arts["onnx-int8"]["float_ops"]["count"] == 0 and full["onnx-int8"]["passed"]
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("ref", ["upsample_nearest", "upsample_bilinear", "shifted_windows", "selective_kernel",
                                 "global_query", "class_token_head", "channels_last_head",
                                 "pad_excluded_pool", "bicubic_resize", "same_max_pool", "rel_pos_einsum",
                                 "blockify", "transposed_convs", "adaptive_pools", "response_norm_block",
                                 "zigzag_reorder"])
def test_relayouts_resizes_and_concats_are_int8_in_every_format(tmp_path, ref):
    """HRNet's nearest/bilinear upsampling, Swin's torch.roll, SKNet's torch.stack and softmax over its
    branches, GCViT's repeat_interleave, a ViT class token concatenated with the patches and NesT's global
    pool of a channels-last map seen channels-first (ONNX: ReduceMean, Reshape, Gather) and ViTamin's average
    pool that does not count its padding (TFLite: float REDUCE_WINDOW sums, DIV) and CrossViT's bicubic
    resize of its input (no int8 bicubic kernel anywhere; TFLite: float GATHER_ND, MUL, ADD), and the
    -inf padding of timm's MaxPool2dSame (its observer saw -inf: an infinite scale, NaN after), and
    MViTv2's relative-position einsums of the query with tables gathered from parameters (ONNX: float
    Einsum; Core ML: float matmul, reshape, transpose), NesT's qkv picked by select from a rank-6
    permute (Core ML: the reshape after each select read float, 36 in nest_tiny, until 38d4dee), and
    LowFormer's transposed convs (TFLite: float TRANSPOSE_CONV / CONV_2D), and CSATv2's adaptive pools that
    do not divide their input (TFLite: float GATHER/ADD/MUL; ONNX: float Gather/Where/Div), and ConvNeXt-V2's
    / CSATv2's global response norm (its L2 norm: TFLite float ABS/MUL/SUM/SQRT; its division by the norm's
    channel mean + eps: float Div/DIV/real_div; its addcmul: float Mul, Add), and CSATv2's zigzag reorder by a
    constant index list (ONNX: Transpose, GatherND, Transpose on dequantized values): every int8
    artifact is full-integer and passes the verdict, each layer alone within a step. Before: in ONNX
    the rolled Concat/Slice, the stacked Concat and the repeat's Expand/Reshape read float, and Resize's
    stored `scales` counted as float data; TFLite wrote the softmax over dim 1 as float SUB/EXP/SUM/DIV."""
    from edgeconv.cli import main
    from examples.zoo.images import write_folder

    calib = write_folder(tmp_path / "calib", 24, side=32)
    targets = ["onnx-int8", "tflite-int8", "coreml-w8a8"]
    res = CliRunner().invoke(main, ["export", "--model", f"tests.zoo:{ref}", *[a for t in targets for a in ("-t", t)],
                                    "--calib", str(calib), "--calib-samples", "16", "--eval-samples", "8",
                                    "-o", str(tmp_path / "out")])
    arts = json.loads((tmp_path / "out" / "edgeconv.json").read_text())["artifacts"]
    assert res.exit_code == 0, res.output
    assert {a["target"]: a["float_ops"]["ops"] for a in arts} == dict.fromkeys(targets, [])
    for a in arts:
        layers = a["parity"]["layers"]
        assert a["parity"]["passed"] and layers["passed"] and layers["layers"] >= 3, (a["target"], layers)
        assert layers["worst_steps"] <= 1, (a["target"], layers)


def test_roll_stack_and_repeat_become_relayouts_and_concats_with_the_same_values():
    """The rewrites before annotation: no roll, stack or repeat_interleave is left, and the program
    computes what the model does (slices, concats and expands copy values exactly; a reduction over
    the concat instead of the stack may sum in another order — AVX2 and AVX-512 differ — so within
    4 ulp of the output's largest value)."""
    from edgeconv.calib.rewrites import transform
    from tests.zoo import global_query, selective_kernel, shifted_windows

    x = torch.from_numpy(_images(2, 32, seed=5))
    for spec in (shifted_windows(), selective_kernel(), global_query()):
        gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module())
        targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
        assert not {t for t in targets if any(k in t for k in ("roll", "stack", "repeat_interleave"))}, targets
        assert {"aten.cat.default", "aten.expand.default"} & targets
        with torch.no_grad():
            got, want = gm(x[:1]), spec.module(x[:1])
        ulp = torch.finfo(torch.float32).eps * float(want.abs().max())
        assert float((got - want).abs().max()) <= 4 * ulp, spec.name


def test_einsums_become_matmuls_and_gathered_tables_constants_with_the_same_values():
    """MViTv2's relative position: the table gathered by an index built with an in-place `+=` is one
    stored constant (the in-place update used to stop constant folding: ONNX kept a GatherND), laid out
    once for the matmul; each einsum is relayouts around one matmul, and the program computes what
    the model does."""
    from edgeconv.calib.rewrites import transform

    from tests.zoo import rel_pos_einsum

    spec = rel_pos_einsum()
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module(), frozen=True)
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if any(k in t for k in ("einsum", "index", "gather", "add_", "arange"))], targets
    assert targets.count("aten.matmul.default") == 4  # the two einsums of q with a table, the logits, softmax @ v
    tables = [n for n in gm.graph.nodes if n.op == "get_attr" and "einsum_operand" in n.target]
    assert sorted(tuple(getattr(gm, n.target).shape) for n in tables) == [(4, 8, 2), (4, 8, 2)]  # [h, c, k]
    x = torch.from_numpy(_images(2, 16, seed=5))
    with torch.no_grad():
        for i in range(len(x)):
            assert torch.allclose(gm(x[i:i + 1]), spec.module(x[i:i + 1]), atol=1e-5)


class _Einsums(nn.Module):
    """timm's other einsum spellings (MobileNetV4's MultiQueryAttention2d: a projection by a parameter,
    a contraction over two indices, no batch index) and a pair of activations with a batch index."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.query_proj = nn.Parameter(torch.randn(2, 3, 4))  # [h, k, d]
        self.out_proj = nn.Parameter(torch.randn(5, 2, 3))  # [d, h, v]
        self.mix = nn.Parameter(torch.randn(6, 3))  # [n, m]

    def forward(self, x):  # [b, n, d] = [2, 6, 4]
        q = torch.einsum("bnd,hkd->bnhk", x, self.query_proj)  # [b, n, h, k]
        a = torch.einsum("bnhk,bmhk->bhnm", q, q)  # activations on both sides, batch b and h
        o = torch.einsum("bhnm,bmhk->bnhk", a.softmax(-1), q)
        y = torch.einsum("bnhv,dhv->bdn", o, self.out_proj)  # two contracted indices
        return torch.einsum("bdn,nm->bmd", y, self.mix)  # no batch index, output permuted


def test_two_operand_einsums_become_one_matmul_each_with_the_same_values():
    from edgeconv.calib.rewrites import transform

    m = _Einsums().eval()
    x = torch.randn(2, 6, 4)
    gm = transform(torch.export.export(m, (x,), strict=False).module(), frozen=True)
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert "aten.einsum.default" not in targets and targets.count("aten.matmul.default") == 5, targets
    with torch.no_grad():
        assert torch.allclose(gm(x), m(x), atol=1e-5)


def test_a_pool_that_does_not_count_its_padding_becomes_pad_pool_and_mul_with_the_same_values():
    from edgeconv.calib.rewrites import transform
    from tests.zoo import pad_excluded_pool

    spec = pad_excluded_pool()
    x = torch.from_numpy(_images(2, 16, seed=5))
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module())
    pools = [n for n in gm.graph.nodes if n.target == torch.ops.aten.avg_pool2d.default]
    assert len(pools) == 2 and all(list(n.args[3]) == [0, 0] and n.args[5] is True for n in pools)
    counts = [getattr(gm, n.args[1].target) for n in gm.graph.nodes
              if n.target == torch.ops.aten.mul.Tensor and n.args[0] in pools]
    # 8² map: the corner window holds 4 valid pixels of 9, the other top-row windows 6; on the 3² map
    # every window holds 2 × 2
    assert [tuple(c.shape) for c in counts] == [(1, 1, 4, 4), (1, 1, 2, 2)]
    assert torch.allclose(counts[0][0, 0, 0], torch.tensor([9 / 4, 9 / 6, 9 / 6, 9 / 6]))
    assert torch.allclose(counts[1], torch.full((1, 1, 2, 2), 9 / 4))
    with torch.no_grad():
        for i in range(len(x)):
            assert torch.allclose(gm(x[i:i + 1]), spec.module(x[i:i + 1]), rtol=1e-5, atol=1e-6)


def test_a_group_norm_of_several_groups_becomes_the_layer_norm_pieces_on_a_grouped_view():
    """BiT's and ViT-hybrid's GroupNorm(32) was a float InstanceNormalization (ONNX) / batch_norm (Core ML)
    island: now the same MEAN/SUB/MUL/RSQRT pieces as a LayerNorm, on [B, G, C/G, H, W]."""
    from edgeconv.calib.rewrites import transform

    gn = nn.GroupNorm(4, 16).eval()
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.normal_()
    x = torch.from_numpy(_images(1, 16, seed=3)).repeat(1, 6, 1, 1)[:, :16] * 3 + 1
    gm = transform(torch.export.export(gn, (x,), strict=False).module())
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.group_norm.default not in targets and targets.count(torch.ops.aten.rsqrt.default) == 1
    views = [n.args[1] for n in gm.graph.nodes if n.target == torch.ops.aten.view.default]
    assert [1, 4, 4, 16, 16] in views and [1, 16, 16, 16] in views, views
    with torch.no_grad():
        assert torch.allclose(gm(x), gn(x), rtol=1e-5, atol=1e-5)


def test_a_bicubic_resize_becomes_one_linear_map_per_axis_with_the_same_values():
    from edgeconv.calib.rewrites import transform
    from tests.zoo import bicubic_resize

    spec = bicubic_resize()
    x = torch.from_numpy(_images(2, 20, seed=4))
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module())
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "bicubic" in t] and targets.count("aten.linear.default") == 3, targets
    maps = sorted(tuple(getattr(gm, n.args[1].target).shape) for n in gm.graph.nodes
                  if n.target == torch.ops.aten.linear.default and n.args[1].op == "get_attr"
                  and n.args[1].target.startswith("_edgeconv_bicubic"))
    assert maps == [(12, 20), (16, 20)]
    with torch.no_grad():
        for i in range(len(x)):
            assert torch.allclose(gm(x[i:i + 1]), spec.module(x[i:i + 1]), rtol=1e-4, atol=1e-5)


def test_a_transposed_conv_becomes_a_conv_with_the_same_values():
    """Sub-pixel form (a conv whose channels are the stride's phases, a pixel shuffle) where the
    dilation is 1; a conv of the zero-spread input for the dilated grouped one."""
    from edgeconv.calib.rewrites import transform
    from tests.zoo import transposed_convs

    spec = transposed_convs()
    x = torch.from_numpy(_images(2, 16, seed=5))
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module(), frozen=True)
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "transpose" in t] and targets.count("aten.conv2d.default") == 5, targets
    assert targets.count("aten.pixel_shuffle.default") == 2, targets  # the two of stride 2, dilation 1
    with torch.no_grad():
        for i in range(len(x)):
            assert torch.allclose(gm(x[i:i + 1]), spec.module(x[i:i + 1]), rtol=1e-4, atol=1e-5)
    # not frozen (QAT trains the weight): left as it is
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module())
    assert sum("conv_transpose2d" in str(n.target) for n in gm.graph.nodes) == 4


def test_an_adaptive_pool_not_dividing_its_input_becomes_one_linear_map_per_axis_with_the_same_values():
    from edgeconv.calib.rewrites import transform
    from tests.zoo import adaptive_pools

    spec = adaptive_pools()
    x = torch.from_numpy(_images(2, 16, seed=6))
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module())
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.adaptive_avg_pool2d.default") == 1, targets  # the 8×8 → 4×4 one
    maps = sorted(tuple(getattr(gm, n.args[1].target).shape) for n in gm.graph.nodes
                  if n.target == torch.ops.aten.linear.default and n.args[1].op == "get_attr"
                  and n.args[1].target.startswith("_edgeconv_adaptive_pool"))
    assert maps == [(3, 8), (5, 8), (7, 4), (7, 4), (7, 8), (7, 8)], maps
    with torch.no_grad():
        for i in range(len(x)):
            assert torch.allclose(gm(x[i:i + 1]), spec.module(x[i:i + 1]), rtol=1e-4, atol=1e-5)


class UniformBiases(nn.Module):
    """Conv and Linear biases with every element equal (timm's ViT-style init sets each Linear bias
    to 0.02), next to one that is not, on per-channel int8 weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 1)
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 8)
        with torch.no_grad():
            self.conv.bias.fill_(0.05)
            self.fc1.bias.fill_(0.02)
            self.fc2.bias.copy_(torch.linspace(-0.1, 0.1, 8))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.conv(x).mean((2, 3)))))


def test_a_uniform_bias_keeps_each_channels_scale(tmp_path):
    """litert-torch writes a uniform bias as a splat constant, which the converter quantized to one
    int32 value with the first channel's scale s_in·s_w[0] for every channel (Hiera: attn.proj 15
    steps off the simulation). Each channel's int32 bias must dequantize to the model's bias."""
    x = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
    model = UniformBiases().eval()
    conv, q, ex = _quantize(model, x)
    path = _tflite(conv, q, ex, tmp_path / "m.tflite")
    ops, tensors = _ops(path)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    got = []
    for o in ops:
        if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            b = int(o["inputs"][2])
            scales = np.asarray(tensors[b]["quantization_parameters"]["scales"])
            got.append((it.get_tensor(b) * scales, scales))
    want = [model.conv.bias, model.fc1.bias, model.fc2.bias]
    assert len(got) == 3
    for (g, scales), w in zip(got, want, strict=True):  # within half a step of each channel's own scale
        assert np.all(np.abs(g - w.detach().numpy()) <= 0.5 * scales * (1 + 1e-5)), (g, w)
    with torch.no_grad():
        sim = torch.cat([conv(torch.from_numpy(x[i:i + 1])) for i in range(len(x))]).numpy()
    out, scale = _run(path, x)
    assert np.round(np.abs(out - sim) / scale).max() <= 1


def _full_integer_in_every_int8_format(tmp_path, ref: str) -> None:
    """Export `ref` to the three int8 targets: every one exits 0, passes parity, has 0 float ops."""
    from edgeconv.cli import main

    targets = ["tflite-int8", "onnx-int8", "coreml-w8a8"]
    res = CliRunner().invoke(main, ["export", "--model", ref, "--calib", "random", "--calib-samples", "16",
                                    "--eval-samples", "8", *[a for t in targets for a in ("-t", t)],
                                    "-o", str(tmp_path)])
    arts = {a["target"]: a for a in json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]}
    assert res.exit_code == 0, res.output
    assert sorted(arts) == sorted(targets) and all(a["parity"]["passed"] for a in arts.values())
    assert {t: arts[t]["float_ops"]["count"] for t in targets} == dict.fromkeys(targets, 0)


def test_rotary_embedding_with_a_prefix_token_is_int8_in_every_format(tmp_path):
    """EVA's RoPE: sin/cos from a meshgrid fold to constants (a list-valued op's pieces fold too: 15
    float ops in TFLite, a float Split in ONNX), and a no-op `.type_as` before the concatenation is
    dropped (litert-torch refused the file: "violate the same scale constraint")."""
    _full_integer_in_every_int8_format(tmp_path, "tests.zoo:rope_prefix")


def test_in_place_arithmetic_on_constants_is_int8_in_every_format_layer_by_layer(tmp_path):
    """timm CSATv2's `x.mul(std).add_(mean)`, numbers multiplied and subtracted in place, and an
    in-place add onto a tensor read before it: the annotator named only functional spellings for a
    constant or number operand, so ONNX kept each in-place op float (4 float ops: Add, Mul, Sub, Add;
    TFLite and Core ML quantized the constants themselves). As functional ops, and the one add that
    stays in place with its constant operand quantized, every int8 file is full-integer and equal to
    the simulation within a step layer by layer."""
    _full_integer_in_every_int8_format(tmp_path, "tests.zoo:in_place_constants")
    for a in json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]:
        layers = a["parity"]["layers"]
        assert layers["passed"] and layers["layers"] >= 10 and layers["worst_steps"] <= 1, (a["target"], layers)


def test_only_in_place_ops_on_new_tensors_become_functional_and_every_write_is_kept():
    """An in-place op on a new tensor nothing else reads becomes its functional op; one whose input
    is a view or another in-place op's result (a running statistic, `s.mul_(m).add_(v)`; a write
    through `y.view(-1)`) writes that tensor's base and stays: made functional, QAT's BatchNorm
    statistics stopped moving. The program computes what the model does, state included, twice."""
    from edgeconv.calib.rewrites import in_place_to_functional

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("s", torch.ones(3))

        def forward(self, x):
            self.s.mul_(0.5).add_(x.mean())
            y = x.mul(2)
            y.view(-1).add_(1)
            return x.mul(3).add_(self.s.view(1, -1, 1, 1)) + y

    x = torch.randn(1, 3, 2, 2)
    gm = torch.export.export(Net(), (x,), strict=False).module()
    assert in_place_to_functional(gm) == ["add__2"]
    gm.recompile()
    ref = Net()
    for _ in range(2):
        assert torch.allclose(gm(x), ref(x))
    assert torch.allclose(gm.s, ref.s)


def test_a_linear_attention_is_int8_in_every_format_and_matches_its_simulation(tmp_path):
    """EfficientViT's LiteMLA: its attention under `autocast(enabled=False)` (a region the converters
    inlined and every format kept float: MatMul, Pad, Slice, Add, Div) is inlined before annotation,
    and its division by `out[..., -1:] + eps` (positive: ReLU kernels, a padded column of ones) is
    `(a · rsqrt(b)) · rsqrt(b)`. Every int8 file: 0 float ops, the artifact equal to the int8
    simulation within a step layer by layer. (Not asserted: the simulation's own accuracy against
    fp32 on this random-init toy — an int8 divisor spanning ~1000x loses its smallest values; the
    catalog bench measures it on the timm net.)"""
    from edgeconv.cli import main
    from examples.zoo.images import write_folder

    calib = write_folder(tmp_path / "calib", 24, side=32)
    targets = ["onnx-int8", "tflite-int8", "coreml-w8a8"]
    flags = [a for t in targets for a in ("-t", t)]
    CliRunner().invoke(main, ["export", "--model", "tests.zoo:linear_attention", *flags,
                              "--calib", str(calib), "--calib-samples", "16", "--eval-samples", "8",
                              "-o", str(tmp_path / "out")])
    arts = json.loads((tmp_path / "out" / "edgeconv.json").read_text())["artifacts"]
    assert {a["target"]: a["float_ops"]["ops"] for a in arts} == {t: [] for t in targets}
    for a in arts:
        layers = a["parity"]["layers"]
        sim = next(d for d in a["parity"]["diffs"] if d["reference"] == "torch-quant-sim")
        assert sim["passed"] and layers["passed"] and layers["layers"] >= 3, (a["target"], sim, layers)
        assert layers["worst_steps"] <= 1, (a["target"], layers)


def test_divisions_by_proven_positive_values_become_rsqrt_and_mul_with_the_same_values():
    """LiteMLA's and GRN's divisions (and GRN's norm) leave no div, norm or autocast region, and the
    rewritten program computes what the model does (float32: within 1e-5 relative)."""
    from edgeconv.calib.rewrites import transform

    from tests.zoo import linear_attention, response_norm_block

    x = torch.from_numpy(_images(3, 16, seed=7))
    for spec in (linear_attention(), response_norm_block()):
        gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module(), frozen=True)
        targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        assert not [t for t in targets if any(k in t for k in ("div", "norm.", "autocast", "addcmul"))], targets
        assert targets.count("aten.rsqrt.default") >= 1, targets
        with torch.no_grad():
            for i in range(len(x)):
                want = spec.module(x[i:i + 1])
                assert float((gm(x[i:i + 1]) - want).norm() / want.norm()) <= 1e-5


def test_a_division_by_a_value_of_unproven_sign_stays_a_division():
    """A conv output, relu(x) - 1, a slice reaching into v's columns, a column padded with -1: no
    proof of sign, so no rsqrt (it would be NaN for a negative divisor). The one proven division
    beside them is rewritten; values unchanged."""
    from edgeconv.calib.rewrites import transform
    from edgeconv.calib.signs import Signs

    from tests.zoo import unproven_divisors

    spec = unproven_divisors()
    gm = transform(torch.export.export(spec.module, spec.example_inputs, strict=False).module())
    divs = [n for n in gm.graph.nodes if n.target == torch.ops.aten.div.Tensor]
    assert len(divs) == 4, [n.name for n in divs]
    signs = Signs(gm)
    assert not any(signs.nonnegative(n.args[1]) for n in divs)
    assert sum(n.target == torch.ops.aten.rsqrt.default for n in gm.graph.nodes) == 1
    x = torch.from_numpy(_images(1, 4, seed=3))
    with torch.no_grad():
        for got, want in zip(gm(x), spec.module(x), strict=True):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_linear_on_one_row_runs_on_its_2d_view_with_the_same_values():
    """A pointwise linear on a 1×1 channels-last map (CSATv2's last stage at 64²): computed on
    [1, C] and reshaped back (litert-torch wrote FULLY_CONNECTED keep_num_dims=False with a 4-D
    output shape; the runtime made it 2-D and the GRN's MEAN over axis 3 after it was refused)."""
    from edgeconv.calib.rewrites import transform

    from tests.zoo import ResponseNormBlock

    model = ResponseNormBlock().eval()
    x = torch.from_numpy(_images(1, 4, seed=2))  # the 4×4 stem makes a 1×1 map
    gm = transform(torch.export.export(model, (x,), strict=False).module(), frozen=True)
    shapes = [tuple(n.args[0].meta["val"].shape) for n in gm.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert shapes == [(1, 16), (1, 64), (1, 16)], shapes
    with torch.no_grad():
        want = model(x)
        assert float((gm(x) - want).norm() / want.norm()) <= 1e-5


def test_an_rsqrt_of_an_exact_zero_computes_the_same_in_every_format(tmp_path):
    """Each int8 RSQRT edgeconv emits (LayerNorm's, F.normalize's, GRN's L2 norm and its division)
    fed an exact 0 (a zero token, a dead channel): level 0 of its input is 0.0, where torch gives
    inf, TFLite 127, Core ML 1/√epsilon and the float calibration rsqrt(eps²) = 1e12 (the output's
    range). Each input is floored at one step and each output range capped at rsqrt(one step), so
    every file equals the simulation within a step layer by layer and end to end, with 0 float ops
    (main: Core ML's rsqrt 255 steps off in isolation, TFLite's MULs after it 212 and 255, its
    output 111 steps off the simulation)."""
    from edgeconv.cli import main
    from examples.zoo.images import write_folder

    calib = write_folder(tmp_path / "calib", 24, side=32)
    targets = ["tflite-int8", "onnx-int8", "coreml-w8a8"]
    flags = [a for t in targets for a in ("-t", t)]
    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:dead_norms", *flags, "--calib", str(calib),
                                    "--calib-samples", "16", "--eval-samples", "8", "-o", str(tmp_path / "out")])
    arts = {a["target"]: a for a in json.loads((tmp_path / "out" / "edgeconv.json").read_text())["artifacts"]}
    assert {t: arts[t]["float_ops"]["count"] for t in targets} == dict.fromkeys(targets, 0)
    for t, a in arts.items():
        layers = a["parity"]["layers"]
        sim = next(d for d in a["parity"]["diffs"] if d["reference"] == "torch-quant-sim")
        assert layers["passed"] and layers["layers"] >= 30 and layers["worst_steps"] <= 1, (t, layers)
        assert sim["max_steps"] <= 1, (t, sim)
    assert res.exit_code == 0, res.output


def test_every_int8_rsqrt_output_range_is_capped_at_rsqrt_of_one_input_step():
    """The quantized program: no int8 rsqrt's output range reaches past rsqrt(one step of its input),
    the most it computes from a nonzero level, though calibration saw rsqrt(eps²) = 1e12 at the dead
    token; so level 0 of the input (exactly 0.0) saturates to the top level in every format. Three of
    the toy's four rsqrts read level 0 on a real input (the dead token's and dead channel's)."""
    from edgeconv import registrations
    from edgeconv.calib.data import DataSet
    from edgeconv.config import ExportOptions, QuantOptions
    from edgeconv.context import Context
    from edgeconv.graph import capture
    from edgeconv.passes.manager import run_passes

    from tests.zoo import dead_norms

    registrations.load()
    spec = dead_norms()
    ctx = Context(options=ExportOptions(quant=QuantOptions(samples=8)), model=spec,
                  calib=DataSet(_images(8, 32, seed=5), None, source="photos", real=True))
    graph = run_passes(capture(spec.module, spec.example_inputs), ctx, ("fold-conv-bn", "quantize", "cleanup"))
    capped = [n for r in graph.history for n in r.notes if "RSQRT output range(s) capped" in n]
    assert len(capped) == 1 and int(capped[0].split()[0]) >= 3, capped  # the three that calibration saw at 0
    gm = graph.module()
    qd = torch.ops.quantized_decomposed
    rsqrts = [n for n in gm.graph.nodes if n.target == torch.ops.aten.rsqrt.default]
    assert len(rsqrts) == 4
    inputs = {}
    for r in rsqrts:
        dq_in, (q_out,) = r.args[0], r.users
        assert dq_in.target == qd.dequantize_per_tensor.default and q_out.target == qd.quantize_per_tensor.default
        step, (scale, zp, _, qmax) = dq_in.args[1], q_out.args[1:5]
        assert (qmax - zp) * scale <= float(torch.rsqrt(torch.tensor(step))) * (1 + 1e-5), r.name
        inputs[dq_in] = step

    seen = {}

    class Record(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in inputs:
                seen[n] = float(out.min())
            return out

    with torch.no_grad():
        Record(gm).run(torch.from_numpy(_images(1, 32, seed=9)))
    assert sorted(v == 0.0 for v in seen.values()) == [False, True, True, True], seen


@pytest.mark.parametrize("layers,bidirectional,batch_first,bias,state", [
    (1, True, True, True, False), (1, False, False, True, True), (2, True, False, False, False),
    (3, False, True, True, True), (2, True, True, True, True)])
def test_an_lstm_becomes_its_unrolled_recurrence_with_the_same_values(layers, bidirectional, batch_first, bias, state):
    """`aten.lstm` (one op no annotator enters) → one input projection per direction on the whole
    sequence, then per step one recurrent linear, the gates activated whole and sliced: same outputs
    (y, h_n, c_n) as torch's LSTM, with or without an initial state, in both layouts."""
    from calib.rewrites import lstm_to_primitives

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 5, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)

        def forward(self, x, h0=None, c0=None):
            y, (h, c) = self.lstm(x, (h0, c0)) if state else self.lstm(x)
            return y, h, c

    torch.manual_seed(layers)
    net, dirs = Net().eval(), 2 if bidirectional else 1
    x = torch.randn(3, 7, 6)
    args = (x, torch.randn(layers * dirs, 3 if batch_first else 7, 5),
            torch.randn(layers * dirs, 3 if batch_first else 7, 5)) if state else (x,)
    gm = torch.export.export(net, args).module()
    assert lstm_to_primitives(gm)
    gm.recompile()
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.lstm.input not in targets
    steps = 7 if batch_first else 3
    linears = [n for n in gm.graph.nodes if n.target == torch.ops.aten.linear.default]
    # one projection per direction and layer, one recurrent product per step after the first (h0 = 0)
    assert len(linears) == layers * dirs * (1 + steps - (0 if state else 1))
    for want, got in zip(net(*args), gm(*args), strict=True):
        assert torch.allclose(want, got, atol=1e-6, rtol=0), (want - got).abs().max()


@pytest.mark.parametrize("lengths,unrolled", [((64,), True), ((64, 64), True), ((129,), False), ((70, 70), False)])
def test_lstms_unroll_only_within_the_step_budget_of_the_whole_program(lengths, unrolled):
    """The budget counts every LSTM of the program (layers × directions × steps): all of them unroll
    or none does — a program over it keeps its LSTMs whole (float ops the manifest names), never a
    mix, so the int8 export's cost stays bounded (Sequencer2D-S at 64² is several hundred steps)."""
    from calib.rewrites import LSTM_MAX_STEPS, lstm_to_primitives

    assert LSTM_MAX_STEPS == 128

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstms = nn.ModuleList(nn.LSTM(4, 3, batch_first=True) for _ in lengths)

        def forward(self, *xs):
            return tuple(m(x)[0] for m, x in zip(self.lstms, xs, strict=True))

    args = tuple(torch.randn(1, t, 4) for t in lengths)
    gm = torch.export.export(Net().eval(), args).module()
    assert bool(lstm_to_primitives(gm)) is unrolled
    left = sum(n.target == torch.ops.aten.lstm.input for n in gm.graph.nodes)
    assert left == (0 if unrolled else len(lengths))


def test_a_sequencer_lstm_block_is_int8_in_every_format_layer_by_layer(tmp_path):
    """Sequencer's LSTM2d (bidirectional batch_first LSTMs along rows and columns): the LSTMs were
    one float op each in ONNX and the converters' own float expansion in TFLite and Core ML
    (Sequencer2D-S at 64²: 1080 / 6040 / 5036 float ops). Unrolled before annotation, every int8
    file has 0 float ops and every layer is within a step of the simulation in isolation."""
    from edgeconv.cli import main
    from examples.zoo.images import write_folder

    calib = write_folder(tmp_path / "calib", 24, side=32)
    targets = ["onnx-int8", "tflite-int8", "coreml-w8a8"]
    CliRunner().invoke(main, ["export", "--model", "tests.zoo:lstm2d", *[a for t in targets for a in ("-t", t)],
                              "--calib", str(calib), "--calib-samples", "16", "--eval-samples", "8",
                              "-o", str(tmp_path / "out")])
    arts = json.loads((tmp_path / "out" / "edgeconv.json").read_text())["artifacts"]
    assert {a["target"]: a["float_ops"]["count"] for a in arts} == dict.fromkeys(targets, 0)
    for a in arts:
        layers = a["parity"]["layers"]
        sim = next(d for d in a["parity"]["diffs"] if d["reference"] == "torch-quant-sim")
        assert sim["passed"] and layers["passed"] and layers["layers"] >= 100, (a["target"], sim, layers)
        assert layers["worst_steps"] <= 1 and layers["unmatched"] == 0, (a["target"], layers)
